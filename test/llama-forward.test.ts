// The forward pass and greedy generation against float64 PyTorch references written by
// scripts/reference/make_fixtures.py (small random checkpoints in Hugging Face layout).

import { readFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { generate } from "../src/generate/generate.js";
import { DEFAULT_SAMPLING } from "../src/generate/sampling.js";
import type { CausalLM } from "../src/model/causal-lm.js";
import { loadCausalLM } from "../src/model/load.js";
import { int64Tensor } from "../src/runtime/session.js";

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

/** Greedy sampling settings for `maxNewTokens` tokens. */
function greedy(maxNewTokens: number) {
  return { ...DEFAULT_SAMPLING, maxNewTokens, seed: 0, eosTokenIds: [] };
}

/** Model inputs for the fixture's right-padded batch, positions counted from 0. */
function paddedBatchFeeds(batch: Expected["padded_batch"]) {
  const rows = batch.input_ids.length;
  const width = batch.input_ids[0].length;
  return {
    input_ids: int64Tensor(batch.input_ids.flat(), [rows, width]),
    attention_mask: int64Tensor(batch.attention_mask.flat(), [rows, width]),
    position_ids: int64Tensor(
      batch.input_ids.flatMap((ids) => ids.map((_, t) => t)),
      [rows, width],
    ),
  };
}

// Each case runs twice: weights read into memory and bound as inputs, and float32 weights
// left in the checkpoint file for ORT to map as external-data initializers.
const LOADS = CASES.flatMap((name) => [
  { name, mapWeights: false },
  { name, mapWeights: true },
]);

describe.each(LOADS)("$name, mapWeights $mapWeights", ({ name, mapWeights }) => {
  const expected = JSON.parse(
    readFileSync(join(FIXTURES, `${name}.expected.json`), "utf8"),
  ) as Expected;
  let model: CausalLM;

  afterAll(async () => {
    await model?.release();
  });

  it("token logprobs match PyTorch within 1e-4", async () => {
    model = loadCausalLM(join(FIXTURES, name), { mapWeights });
    // The BF16 and F16 fixtures are widened in memory either way.
    const mapsWeights = mapWeights && !/f16/.test(name);
    expect(model.hasMappedWeights).toBe(mapsWeights);
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
    // The same log-probs with the vocabulary's logsumexp taken over slices of 7 rows.
    const session = await model.llamaSession({ output: "token-logprobs", vocabSliceRows: 7 });
    const width = expected.padded_batch.input_ids[0].length;
    const sliced = await session.run(paddedBatchFeeds(expected.padded_batch));
    const slicedData = sliced.token_logprobs.data as Float32Array;
    for (let i = 0; i < seqs.length; i++) {
      const n = expected.padded_batch.logprobs[i].length;
      const row = Array.from(slicedData.subarray(i * (width - 1), i * (width - 1) + n));
      expect(maxAbsDiff(row, expected.padded_batch.logprobs[i])).toBeLessThanOrEqual(1e-4);
      const alone = await model.tokenLogprobs([seqs[i]]);
      expect(maxAbsDiff(batched[i], expected.padded_batch.logprobs[i])).toBeLessThanOrEqual(1e-4);
      expect(maxAbsDiff(batched[i], alone[0])).toBeLessThanOrEqual(1e-5);
    }
  });

  it("greedy tokens after cache reuse", async () => {
    const { prompt, new_tokens, max_new_tokens } = expected.greedy;
    const options = greedy(max_new_tokens);
    // A larger call first, with different tokens, leaves its buffer to the next call.
    const other = prompt.map((id) => (id + 1) % model.config.vocabSize);
    await generate(model, [other, other, other], { ...options, maxNewTokens: max_new_tokens + 3 });
    const [out] = await generate(model, [prompt], options);
    expect(out.tokens).toEqual(new_tokens);
  });

  it("greedy tokens with chunked prompt", async () => {
    const { prompt, new_tokens, max_new_tokens } = expected.greedy;
    expect(prompt.length).toBeGreaterThan(2);
    const sampled: boolean[] = [];
    const [out] = await generate(model, [prompt], {
      ...greedy(max_new_tokens),
      prefillChunkTokens: 2,
      onOutputs: (_out, mask, isSampled) => {
        expect(mask[0].length).toBeLessThanOrEqual(2);
        sampled.push(isSampled);
      },
    });
    expect(out.tokens).toEqual(new_tokens);
    const promptRuns = Math.ceil(prompt.length / 2);
    expect(sampled).toEqual([
      ...new Array<boolean>(promptRuns - 1).fill(false),
      ...new Array<boolean>(max_new_tokens).fill(true),
    ]);
  });

  it("position log-probs match PyTorch", async () => {
    // Each row of the right-padded fixture batch requests positions out of order, with a
    // repeat. Rows too short to predict anything request position 0 of a padding target.
    const { input_ids, logprobs } = expected.padded_batch;
    const rows = input_ids.length;
    const requested = logprobs.map((lp) =>
      lp.length === 0 ? [0, 0, 0] : [lp.length - 1, 0, Math.floor(lp.length / 2), 0],
    );
    const picked = Math.max(...requested.map((w) => w.length));
    const positions = requested.map((w) => [...w, ...new Array<number>(picked - w.length).fill(0)]);

    const session = await model.llamaSession({ output: "position-logprobs" });
    const out = await session.run({
      ...paddedBatchFeeds(expected.padded_batch),
      logit_positions: int64Tensor(positions.flat(), [rows, picked]),
    });

    expect(out.token_logprobs.dims).toEqual([rows, picked]);
    const got = out.token_logprobs.data as Float32Array;
    requested.forEach((w, r) => {
      if (logprobs[r].length === 0) return;
      w.forEach((t, j) => {
        expect(
          Math.abs(got[r * picked + j] - logprobs[r][t]),
          `row ${r} position ${t}`,
        ).toBeLessThanOrEqual(1e-4);
      });
    });
  });

  it("greedy continuation equals PyTorch's", async () => {
    const { prompt, new_tokens, max_new_tokens } = expected.greedy;
    const [out] = await generate(model, [prompt], greedy(max_new_tokens));
    expect(out.tokens).toEqual(new_tokens);
  });
});
