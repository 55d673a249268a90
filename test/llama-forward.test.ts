// The forward pass and greedy generation against float64 PyTorch references written by
// scripts/reference/make_fixtures.py (small random checkpoints in Hugging Face layout).

import { readFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { generate } from "../src/generate/generate.js";
import type { CausalLM } from "../src/model/causal-lm.js";
import { loadCausalLM } from "../src/model/load.js";

const FIXTURES = join(import.meta.dirname, "fixtures", "tiny");
const CASES = [
  "llama-gqa",
  "llama-tied-linear-rope",
  "llama3-rope-bf16",
  "qwen2-bias-f16",
  "mistral-sharded",
  "llama-attn-bias",
];

interface Expected {
  sequences: { input_ids: number[]; logprobs: number[]; sum: number }[];
  padded_batch: { input_ids: number[][]; attention_mask: number[][]; logprobs: number[][] };
  greedy: { prompt: number[]; new_tokens: number[]; max_new_tokens: number };
}

function maxAbsDiff(a: readonly number[], b: readonly number[]): number {
  expect(a.length).toBe(b.length);
  return a.reduce((m, v, i) => Math.max(m, Math.abs(v - b[i])), 0);
}

describe.each(CASES)("%s", (name) => {
  const expected = JSON.parse(
    readFileSync(join(FIXTURES, `${name}.expected.json`), "utf8"),
  ) as Expected;
  let model: CausalLM;

  afterAll(async () => {
    await model?.release();
  });

  it("token logprobs match PyTorch within 1e-4", async () => {
    model = loadCausalLM(join(FIXTURES, name));
    const seqs = expected.sequences.map((s) => s.input_ids);
    const got = await model.tokenLogprobs(seqs);
    expected.sequences.forEach((s, i) => {
      expect(maxAbsDiff(got[i], s.logprobs)).toBeLessThanOrEqual(1e-4);
    });
  });

  it("logprobs of one batch equal those of separate runs", async () => {
    const seqs = expected.padded_batch.input_ids.map((ids, r) =>
      ids.filter((_, t) => expected.padded_batch.attention_mask[r][t] === 1),
    );
    const batched = await model.tokenLogprobs(seqs);
    for (let i = 0; i < seqs.length; i++) {
      const alone = await model.tokenLogprobs([seqs[i]]);
      expect(maxAbsDiff(batched[i], expected.padded_batch.logprobs[i])).toBeLessThanOrEqual(1e-4);
      expect(maxAbsDiff(batched[i], alone[0])).toBeLessThanOrEqual(1e-5);
    }
  });

  it("greedy continuation equals PyTorch's", async () => {
    const { prompt, new_tokens, max_new_tokens } = expected.greedy;
    const [out] = await generate(model, [prompt], {
      maxNewTokens: max_new_tokens,
      seed: 0,
      eosTokenIds: [],
      temperature: 0,
      topK: 0,
      topP: 1,
      repetitionPenalty: 1,
    });
    expect(out.tokens).toEqual(new_tokens);
  });
});
