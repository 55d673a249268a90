// End scores of score models in both checkpoint layouts against float64 PyTorch references
// (scripts/reference/score_reference.py).

import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { ScoreModel } from "../src/model/score-model.js";

const DIR = join(import.meta.dirname, "fixtures", "score");

describe.each(["llama-seqcls", "pku-score-bf16"])("%s", (name) => {
  const expected = JSON.parse(readFileSync(join(DIR, `${name}.expected.json`), "utf8")) as {
    sequences: { input_ids: number[]; end_score: number }[];
  };

  it("end scores match PyTorch within 1e-4", async () => {
    const model = ScoreModel.load(join(DIR, name));
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
