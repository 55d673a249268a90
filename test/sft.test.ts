// Supervised fine-tuning: full fine-tuning learns a fixed continuation, and a LoRA run merged
// into full weights scores like base + adapter.

import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { Rng } from "../src/generate/sampling.js";
import { loadCausalLM } from "../src/model/load.js";
import { saveCausalLM } from "../src/model/save.js";
import { withAdapter } from "../src/train/lora-graph.js";
import { createLoraConfig } from "../src/train/lora.js";
import { trainSft, type SftExample } from "../src/train/sft.js";
import { TINY_MODEL, trainerOptions } from "./helpers/synthetic-dpo.js";

const work = mkdtempSync(join(tmpdir(), "midpo-sft-"));
afterAll(() => rmSync(work, { recursive: true, force: true }));
const rawConfig = JSON.parse(readFileSync(join(TINY_MODEL, "config.json"), "utf8"));

/** Every response is 7 8 9 EOS, whatever the prompt. */
function examples(n: number, seed: number): SftExample[] {
  const rng = new Rng(seed);
  return Array.from({ length: n }, () => ({
    promptIds: [1, ...Array.from({ length: 3 }, () => 20 + Math.floor(rng.next() * 200))],
    responseIds: [7, 8, 9, 2],
  }));
}

describe("SFT", () => {
  it("full fine-tuning learns the response", async () => {
    const model = loadCausalLM(TINY_MODEL);
    const out = join(work, "full");
    const { summary, weights } = await trainSft(model, examples(64, 1), examples(16, 2), {
      lora: null,
      trainer: trainerOptions(out, { maxSteps: 30, lr: 1e-2, runKey: "sft-full" }),
      saveFull: (dir, w) => saveCausalLM(dir, model.config, rawConfig, w),
    });
    expect(summary.eval!.loss).toBeLessThan(0.2);
    // The model was not changed in place, and the saved copy reloads with the new weights.
    expect(weights.get("model.embed_tokens.weight")).not.toBe(
      model.weights.get("model.embed_tokens.weight"),
    );
    const reloaded = loadCausalLM(out);
    const [lp] = await reloaded.tokenLogprobs([[1, 50, 60, 70, 7, 8, 9, 2]]);
    expect(Math.exp(lp.slice(3).reduce((a, b) => a + b, 0))).toBeGreaterThan(0.5);
  });

  it("LoRA run merges into weights equal to base + adapter", async () => {
    const model = loadCausalLM(TINY_MODEL);
    const out = join(work, "lora");
    const { adapter, weights } = await trainSft(model, examples(32, 3), [], {
      lora: createLoraConfig({ r: 4, loraAlpha: 8, targetModules: ["down_proj", "q_proj"] }),
      trainer: trainerOptions(out, { maxSteps: 10, lr: 1e-2, runKey: "sft-lora" }),
      saveFull: (dir, w) => saveCausalLM(dir, model.config, rawConfig, w),
    });
    const seqs = [[1, 40, 41, 42, 7, 8, 9, 2]];
    const [viaAdapter] = await withAdapter(model, adapter!).tokenLogprobs(seqs);
    const [merged] = await loadCausalLM(out).tokenLogprobs(seqs);
    const [base] = await model.tokenLogprobs(seqs);
    viaAdapter.forEach((v, i) => expect(Math.abs(v - merged[i])).toBeLessThan(1e-5));
    expect(Math.max(...viaAdapter.map((v, i) => Math.abs(v - base[i])))).toBeGreaterThan(1e-3);
    expect(weights.size).toBe(model.weights.size);
  });
});
