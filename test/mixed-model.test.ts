// The MidPO mixed model with fixed gates reduces to base + one expert.

import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { Rng } from "../src/generate/sampling.js";
import { mixedModel } from "../src/midpo/mixed-model.js";
import { checkExperts } from "../src/midpo/mixed.js";
import { initRouterParams } from "../src/midpo/router.js";
import { loadCausalLM } from "../src/model/load.js";
import { withAdapter } from "../src/train/lora-graph.js";
import {
  createLoraConfig,
  decoderLinearModules,
  initLoraAdapter,
  loadLoraAdapter,
  targetModulesOf,
  type LoraAdapter,
} from "../src/train/lora.js";

const ROOT = join(import.meta.dirname, "..");
const base = loadCausalLM(join(ROOT, "test/fixtures/tiny/llama-gqa"));
const modules = decoderLinearModules(base.config);
const safety = loadLoraAdapter(join(ROOT, "test/fixtures/dpo/lora-down-proj"), modules);

/** A helpfulness adapter with nonzero B, so it changes the model. */
function randomAdapter(seed: number): LoraAdapter {
  const rng = new Rng(seed);
  const adapter = initLoraAdapter(
    createLoraConfig({ r: 2, loraAlpha: 4 }),
    targetModulesOf(modules, ["down_proj"]),
    rng,
  );
  for (const m of adapter.modules.values())
    for (let i = 0; i < m.B.length; i++) m.B[i] = (rng.next() - 0.5) * 0.4;
  return adapter;
}
const helpfulness = randomAdapter(5);
const seqs = [
  [1, 17, 99, 4, 250, 31, 2],
  [1, 8, 8, 120],
];

function maxAbsDiff(a: number[][], b: number[][]): number {
  let m = 0;
  a.forEach((row, i) => row.forEach((v, j) => (m = Math.max(m, Math.abs(v - b[i][j])))));
  return m;
}

describe("mixed model", () => {
  it("with alpha 0 and beta 1 equals base + helpfulness adapter", async () => {
    const mixed = mixedModel(
      base,
      { safety, helpfulness },
      { kind: "fixed", alpha: 0, beta: 1 },
      null,
    );
    const expert = withAdapter(base, helpfulness);
    const [a, b] = await Promise.all([mixed.tokenLogprobs(seqs), expert.tokenLogprobs(seqs)]);
    expect(maxAbsDiff(a, b)).toBeLessThanOrEqual(1e-5);
    const plain = await base.tokenLogprobs(seqs);
    expect(maxAbsDiff(a, plain)).toBeGreaterThan(1e-3);
  });

  it("with alpha 1 and beta 0 equals base + safety adapter", async () => {
    const mixed = mixedModel(
      base,
      { safety, helpfulness },
      { kind: "fixed", alpha: 1, beta: 0 },
      null,
    );
    const expert = withAdapter(base, safety);
    expect(
      maxAbsDiff(await mixed.tokenLogprobs(seqs), await expert.tokenLogprobs(seqs)),
    ).toBeLessThanOrEqual(1e-5);
  });

  it("with a router yields gates in (0, 1) and runs generation", async () => {
    const shape = {
      kind: "compact" as const,
      intermediateSize: base.config.intermediateSize,
      hidden: 8,
      layers: base.config.numHiddenLayers,
    };
    const router = initRouterParams(shape, new Rng(1));
    const mixed = mixedModel(
      base,
      { safety, helpfulness },
      { kind: "router", shape },
      router,
      true,
    );
    const lp = await mixed.tokenLogprobs(seqs);
    expect(lp[0].length).toBe(6);
    expect(lp.flat().every(Number.isFinite)).toBe(true);
  });

  it("rejects experts on modules other than down_proj", () => {
    const other = initLoraAdapter(
      createLoraConfig({ targetModules: ["q_proj"] }),
      targetModulesOf(modules, ["q_proj"]),
      new Rng(1),
    );
    expect(() => checkExperts({ safety: other, helpfulness })).toThrow(/only at mlp.down_proj/);
  });
});
