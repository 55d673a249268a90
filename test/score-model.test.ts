// End scores of score models in both checkpoint layouts against float64 PyTorch references
// (scripts/reference/score_reference.py).

import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { loadScoreModel, ScoreModel } from "../src/model/score-model.js";

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

describe("score model loading", () => {
  it("rejects a causal LM directory", () => {
    expect(() =>
      ScoreModel.load(join(import.meta.dirname, "fixtures", "tiny", "llama-gqa")),
    ).toThrow(/not a score model/);
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
      writeFileSync(
        data,
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
      const scores = run.stdout
        .trim()
        .split("\n")
        .map((line) => (JSON.parse(line) as { score: number }).score);
      expect(scores.length).toBe(expected.sequences.length);
      expected.sequences.forEach((s, i) =>
        expect(Math.abs(scores[i] - s.end_score)).toBeLessThanOrEqual(1e-4),
      );
    } finally {
      rmSync(work, { recursive: true, force: true });
    }
  });
});
