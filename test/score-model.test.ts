// End scores of score models in both checkpoint layouts against float64 PyTorch references
// (scripts/reference/score_reference.py).

import { spawnSync } from "node:child_process";
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it, vi } from "vitest";
import { loadScoreModel, ScoreModel } from "../src/model/score-model.js";
import { groupSharedPrefixes } from "../src/model/shared-prefix.js";
import { buildLlamaGraph } from "../src/model/llama.js";
import { int64Tensor, Session, tensor, weightFeeds, type Feeds } from "../src/runtime/session.js";
import { writeWordTokenizer } from "./helpers/word-tokenizer.js";

const DIR = join(import.meta.dirname, "fixtures", "score");

describe.each(["llama-seqcls", "pku-score-bf16"])("%s", (name) => {
  const expected = JSON.parse(readFileSync(join(DIR, `${name}.expected.json`), "utf8")) as {
    sequences: { input_ids: number[]; end_score: number }[];
  };

  it.each([false, true])("end scores match PyTorch, mapWeights %s", async (mapWeights) => {
    const model = new ScoreModel(loadScoreModel(join(DIR, name), { mapWeights }));
    // Only the F32 checkpoint maps its weights; the BF16 one is widened in memory.
    const mapsWeights = mapWeights && name === "llama-seqcls";
    expect(model.files.mapped.size > 0).toBe(mapsWeights);
    const scores = await model.endScores(expected.sequences.map((s) => s.input_ids));
    expected.sequences.forEach((s, i) =>
      expect(Math.abs(scores[i] - s.end_score)).toBeLessThanOrEqual(1e-4),
    );
    await model.release();
  });
});

describe.each(["llama-seqcls", "pku-score-bf16"])("%s, shared prefixes", (name) => {
  const expected = JSON.parse(readFileSync(join(DIR, `${name}.expected.json`), "utf8")) as {
    shared_prefix_sequences: { input_ids: number[]; end_score: number }[];
  };
  const seqs = expected.shared_prefix_sequences.map((s) => s.input_ids);

  it("fixture groups share their prompts", () => {
    const { groups, singles } = groupSharedPrefixes(seqs);
    expect(groups.map((g) => g.prefixLength).sort()).toEqual([18, 24]);
    expect(singles).toEqual([]);
  });

  it.each([
    { runs: "default runs", options: {} },
    { runs: "one row per run", options: { maxBatchTokens: 1 } },
    { runs: "runs of 20 tokens", options: { maxBatchTokens: 20 } },
    { runs: "sharing off", options: { minSharedPrefix: Infinity } },
  ])("end scores match PyTorch, $runs", async ({ options }) => {
    const model = ScoreModel.load(join(DIR, name));
    const run = vi.spyOn(Session.prototype, "run");
    try {
      const scores = await model.endScores(seqs, options);
      expected.shared_prefix_sequences.forEach((s, i) =>
        expect(Math.abs(scores[i] - s.end_score)).toBeLessThanOrEqual(1e-4),
      );
      // Runs on a prefix's cache feed a past of nonzero length; sharing off feeds none.
      const pastLengths = run.mock.calls.map(([feeds]) => feeds["past_key.0"]?.dims[0] ?? 0);
      const sharing = options.minSharedPrefix === undefined;
      expect(pastLengths.some((n) => n > 0)).toBe(sharing);
    } finally {
      run.mockRestore();
      await model.release();
    }
  });
});

describe("end-hidden graph output", () => {
  it("matches hidden states at marked positions", async () => {
    const files = loadScoreModel(join(DIR, "llama-seqcls"));
    const hiddenSize = files.config.hiddenSize;
    const [rows, width] = [2, 6];
    const ids = [3, 17, 42, 9, 88, 5, 61, 2, 140, 33, 0, 0];
    const feeds = {
      input_ids: int64Tensor(BigInt64Array.from(ids.map(BigInt)), [rows, width]),
      attention_mask: int64Tensor(
        BigInt64Array.from([1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0].map(BigInt)),
        [rows, width],
      ),
      position_ids: int64Tensor(
        BigInt64Array.from([0, 1, 2, 3, 4, 5, 0, 1, 2, 3, 4, 5].map(BigInt)),
        [rows, width],
      ),
    };
    // Row 0 ends at position 2 of 6 real tokens, so that causal masking matters. Row 1 ends
    // at its last real token, 3.
    const ends = [2, 3];
    const lastMask = new Float32Array(rows * width);
    ends.forEach((t, r) => (lastMask[r * width + t] = 1));
    const run = async (output: "hidden" | "end-hidden") => {
      const graph = buildLlamaGraph(files.config, { output });
      const session = await Session.create(graph, { bound: weightFeeds(graph, files.weights) });
      const extra: Feeds =
        output === "end-hidden"
          ? { last_token_mask: tensor("float32", lastMask, [rows, width]) }
          : {};
      const result = await session.run({ ...feeds, ...extra }, ["hidden"]);
      await session.release();
      return result.hidden.data as Float32Array;
    };
    const full = await run("hidden"); // [rows, width, H]
    const end = await run("end-hidden"); // [rows, H]
    let largest = 0;
    ends.forEach((t, r) => {
      for (let h = 0; h < hiddenSize; h++) {
        const want = full[(r * width + t) * hiddenSize + h];
        largest = Math.max(largest, Math.abs(end[r * hiddenSize + h] - want));
      }
    });
    expect(end.length).toBe(rows * hiddenSize);
    expect(largest).toBeLessThanOrEqual(1e-5);
  });
});

describe("endScores input checks", () => {
  const model = ScoreModel.load(join(DIR, "llama-seqcls"));
  afterAll(() => model.release());

  it.each([
    { input: "an empty sequence", seqs: [[1, 2], []], message: /sequence 1: it is empty/ },
    { input: "a negative id", seqs: [[1, -1]], message: /position 1: token id -1 is not/ },
    { input: "an id past the vocabulary", seqs: [[1, 160]], message: /in \[0, 160\)/ },
    { input: "a fractional id", seqs: [[1, 2.5]], message: /token id 2\.5 is not/ },
  ])("rejects $input", async ({ seqs, message }) => {
    await expect(model.endScores(seqs)).rejects.toThrow(message);
  });

  it("rejects maxBatchTokens NaN", async () => {
    await expect(model.endScores([[1, 2]], { maxBatchTokens: NaN })).rejects.toThrow(
      /maxBatchTokens must be at least 1, got NaN/,
    );
  });
});

describe("score model loading", () => {
  it("rejects a causal LM directory", () => {
    expect(() =>
      ScoreModel.load(join(import.meta.dirname, "fixtures", "tiny", "llama-gqa")),
    ).toThrow(/not a score model/);
  });

  it("names a config.json that is not JSON", () => {
    const dir = mkdtempSync(join(tmpdir(), "midpo-score-config-"));
    try {
      writeFileSync(join(dir, "config.json"), '{"architectures": ["LlamaFor\n');
      expect(() => ScoreModel.load(dir)).toThrow(/config\.json is not valid JSON/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe("midpo score", () => {
  it.each([
    { runs: "default runs", flags: [] },
    { runs: "one sequence per run", flags: ["--batch-tokens", "1"] },
  ])("scores input_ids without a tokenizer, $runs", ({ flags }) => {
    const work = mkdtempSync(join(tmpdir(), "midpo-score-cli-"));
    try {
      const expected = JSON.parse(
        readFileSync(join(DIR, "llama-seqcls.expected.json"), "utf8"),
      ) as { sequences: { input_ids: number[]; end_score: number }[] };
      const data = join(work, "data.jsonl");
      // A byte-order mark and a blank first line: output lines give the input line numbers.
      writeFileSync(
        data,
        "\uFEFF\n" +
          expected.sequences.map((s) => JSON.stringify({ input_ids: s.input_ids })).join("\n"),
      );
      const bin = join(import.meta.dirname, "..", "bin", "midpo.js");
      const args = ["score", "--model", join(DIR, "llama-seqcls"), "--data", data];
      const run = spawnSync(
        process.execPath,
        [bin, ...args, ...flags, "--cache-dir", join(work, "c")],
        { encoding: "utf8" },
      );
      expect(run.stderr).not.toMatch(/tokenizer/);
      expect(run.status).toBe(0);
      const records = run.stdout
        .trim()
        .split("\n")
        .map((line) => JSON.parse(line) as { line: number; score: number });
      expect(records.map((r) => r.line)).toEqual(expected.sequences.map((_, i) => i + 2));
      const scores = records.map((r) => r.score);
      expect(scores.length).toBe(expected.sequences.length);
      expected.sequences.forEach((s, i) =>
        expect(Math.abs(scores[i] - s.end_score)).toBeLessThanOrEqual(1e-4),
      );
    } finally {
      rmSync(work, { recursive: true, force: true });
    }
  });
});

/** Words of the tokenizer written next to the score fixture (160-token vocabulary). */
const WORDS = [
  ...["<unk>", "<s>", "</s>", "BEGINNING", "OF", "CONVERSATION", ":", "USER", "ASSISTANT"],
  ...["how", "do", "I", "bake", "bread", "steal", "a", "car", "mix", "flour", "and", "water"],
  ...["cannot", "help", "with", "that", "?", ".", "first", "heat", "oven"],
];

describe("midpo score record shapes", () => {
  it("PKU-SafeRLHF and pairwise lines: one score per response", () => {
    const work = mkdtempSync(join(tmpdir(), "midpo-score-shapes-"));
    try {
      const model = join(work, "model");
      mkdirSync(model);
      for (const file of ["config.json", "model.safetensors"]) {
        copyFileSync(join(DIR, "llama-seqcls", file), join(model, file));
      }
      writeWordTokenizer(model, WORDS);
      const prompt = "how do I bake bread ?";
      const good = "first heat a oven and mix flour and water .";
      const bad = "I cannot help with that .";
      const lines = [
        { prompt, response_0: good, response_1: bad, is_response_0_safe: true },
        { prompt, chosen: bad, rejected: good },
        { prompt, response: good },
        { prompt, response: bad },
      ];
      const data = join(work, "data.jsonl");
      writeFileSync(data, lines.map((l) => JSON.stringify(l)).join("\n"));
      const bin = join(import.meta.dirname, "..", "bin", "midpo.js");
      const args = ["score", "--model", model, "--data", data, "--cache-dir", join(work, "c")];
      const run = spawnSync(process.execPath, [bin, ...args], { encoding: "utf8" });
      expect(run.status, run.stderr).toBe(0);
      const out = run.stdout
        .trim()
        .split("\n")
        .map((line) => JSON.parse(line) as Record<string, number>);
      expect(out.map((r) => Object.keys(r).sort())).toEqual([
        ["line", "score_0", "score_1"],
        ["line", "score_chosen", "score_rejected"],
        ["line", "score"],
        ["line", "score"],
      ]);
      expect(out.map((r) => r.line)).toEqual([1, 2, 3, 4]);
      const [goodAlone, badAlone] = [out[2].score, out[3].score];
      expect(Math.abs(goodAlone - badAlone)).toBeGreaterThan(1e-3);
      for (const [value, expected] of [
        [out[0].score_0, goodAlone],
        [out[0].score_1, badAlone],
        [out[1].score_chosen, badAlone],
        [out[1].score_rejected, goodAlone],
      ]) {
        expect(Math.abs(value - expected)).toBeLessThanOrEqual(1e-4);
      }
    } finally {
      rmSync(work, { recursive: true, force: true });
    }
  });
});

describe("midpo score input errors", () => {
  const model = join(DIR, "llama-seqcls");
  const long = JSON.stringify({ input_ids: new Array<number>(129).fill(5) });
  it.each([
    { what: "a null line", text: '{"input_ids":[1,2]}\nnull', error: /:2: expected an object/ },
    {
      what: "a fractional id",
      text: '{"input_ids":[1,2.5]}',
      error: /:1: input_ids\[1\] is 2.5, not/,
    },
    {
      what: "an id past the vocabulary",
      text: '\n{"input_ids":[160]}',
      error: /:2: input_ids\[0\] is 160, outside the model's vocabulary 0..159/,
    },
    { what: "empty input_ids", text: '{"input_ids":[]}', error: /:1: input_ids is empty/ },
    {
      what: "129 tokens",
      text: long,
      error: /:1 has 129 tokens, more than max_position_embeddings 128/,
    },
  ])("rejects $what with its line", ({ text, error }) => {
    const work = mkdtempSync(join(tmpdir(), "midpo-score-bad-"));
    try {
      const data = join(work, "data.jsonl");
      writeFileSync(data, text);
      const bin = join(import.meta.dirname, "..", "bin", "midpo.js");
      const args = ["score", "--model", model, "--data", data, "--cache-dir", join(work, "c")];
      const run = spawnSync(process.execPath, [bin, ...args], { encoding: "utf8" });
      expect(run.status).toBe(1);
      expect(run.stderr).toMatch(error);
      expect(run.stderr).not.toMatch(/internal error/);
      expect(run.stdout).toBe("");
    } finally {
      rmSync(work, { recursive: true, force: true });
    }
  });
});
