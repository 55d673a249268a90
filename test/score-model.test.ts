// End scores of score models in both checkpoint layouts against float64 PyTorch references
// (scripts/reference/score_reference.py).

import { readFileSync } from "node:fs";
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
