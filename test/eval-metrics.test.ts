import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { MidpoError } from "../src/errors.js";
import {
  bootstrapMeanInterval,
  categoryMetrics,
  DEFAULT_BOOTSTRAP,
  groupMetrics,
  harmlessRate,
  mean,
  quantile,
  winOutcomes,
  winRate,
  type ScoredResponses,
} from "../src/eval/metrics.js";
import type { EvalPrompt } from "../src/eval/prompt-sets.js";
import { readRefusalPhrases, RefusalDetector } from "../src/eval/refusal.js";

const work = mkdtempSync(join(tmpdir(), "midpo-eval-metrics-"));

afterAll(() => {
  rmSync(work, { recursive: true, force: true });
});

describe("refusal detector", () => {
  const detector = new RefusalDetector();

  it.each([
    ["I'm sorry, but I can't help with that.", true],
    ["I\u2019m sorry, I cannot do that.", true],
    ["AS AN AI language model, I must say no.", true],
    ["Sure. However, I will not give instructions for that.", true],
    ["Here is a recipe: mix flour, water and yeast.", false],
    ["Sorry to hear that! Try resting more.", false],
    ["", false],
  ])("flags %j as %s", (text, expected) => {
    expect(detector.isRefusal(text)).toBe(expected);
  });

  it("uses a custom phrase list in place of the default", () => {
    const custom = new RefusalDetector(["no way"]);
    expect(custom.isRefusal("No WAY am I doing that")).toBe(true);
    expect(custom.isRefusal("I cannot do that")).toBe(false);
  });

  it("rejects an empty phrase list", () => {
    expect(() => new RefusalDetector([])).toThrow(MidpoError);
  });

  it("reads a phrase file without comments and blank lines", () => {
    const path = join(work, "phrases.txt");
    writeFileSync(path, "# refusals\nI refuse\n\n  not possible  \r\n# end\n");
    expect(readRefusalPhrases(path)).toEqual(["I refuse", "not possible"]);
  });

  it("rejects a phrase file with no phrases", () => {
    const path = join(work, "empty.txt");
    writeFileSync(path, "# only a comment\n\n");
    expect(() => readRefusalPhrases(path)).toThrow(/contains no refusal phrases/);
  });
});

describe("score metrics", () => {
  it("counts cost exactly 0 as not harmless", () => {
    expect(harmlessRate([-1, 0, 2, -0.5])).toBe(0.5);
  });

  it("averages rewards", () => {
    expect(mean([1, 2, 6])).toBe(3);
  });

  it("counts ties as half a win", () => {
    const reward = [1, 2, 3, 4, 5];
    const baseline = [0, 2, 5, 4, 5];
    expect(winOutcomes(reward, baseline)).toEqual([1, 0.5, 0, 0.5, 0.5]);
    const result = winRate(reward, baseline, DEFAULT_BOOTSTRAP);
    expect(result.wins).toBe(1);
    expect(result.ties).toBe(3);
    expect(result.losses).toBe(1);
    expect(result.rate).toBe(0.5);
  });

  it("rejects rewards and baseline of different lengths", () => {
    expect(() => winOutcomes([1, 2], [1])).toThrow(/2 rewards but 1 baseline/);
  });
});

describe("bootstrap interval", () => {
  // 200 outcomes with mean 0.6: the standard error is sqrt(0.6 * 0.4 / 200) = 0.0346, so a
  // 95 % interval is about 2 * 1.96 * 0.0346 = 0.136 wide.
  const outcomes = Array.from({ length: 200 }, (_, i) => (i % 5 < 3 ? 1 : 0));

  it("contains the point estimate", () => {
    const { low, high } = bootstrapMeanInterval(outcomes, DEFAULT_BOOTSTRAP);
    expect(low).toBeLessThan(0.6);
    expect(high).toBeGreaterThan(0.6);
  });

  it("has the width of a normal interval", () => {
    const { low, high } = bootstrapMeanInterval(outcomes, DEFAULT_BOOTSTRAP);
    expect(high - low).toBeGreaterThan(0.11);
    expect(high - low).toBeLessThan(0.16);
  });

  it("is the same for the same seed", () => {
    const a = bootstrapMeanInterval(outcomes, { ...DEFAULT_BOOTSTRAP, seed: 7 });
    const b = bootstrapMeanInterval(outcomes, { ...DEFAULT_BOOTSTRAP, seed: 7 });
    expect(a).toEqual(b);
  });

  it("changes with the seed", () => {
    const intervals = [1, 2, 3, 4].map((seed) =>
      JSON.stringify(bootstrapMeanInterval(outcomes, { ...DEFAULT_BOOTSTRAP, seed })),
    );
    expect(new Set(intervals).size).toBeGreaterThan(1);
  });

  it("collapses on constant values", () => {
    expect(bootstrapMeanInterval([0.5, 0.5, 0.5], DEFAULT_BOOTSTRAP)).toEqual({
      low: 0.5,
      high: 0.5,
    });
  });

  it("interpolates quantiles between order statistics", () => {
    expect(quantile([0, 10], 0.25)).toBe(2.5);
    expect(quantile([1, 2, 3, 4, 5], 0.5)).toBe(3);
    expect(quantile([1, 2, 3, 4, 5], 1)).toBe(5);
  });
});

describe("group metrics", () => {
  const prompts: EvalPrompt[] = [
    { index: 0, text: "a", label: "unsafe", category: "weapons" },
    { index: 1, text: "b", label: "unsafe", category: "theft" },
    { index: 2, text: "c", label: "safe", category: "theft" },
    { index: 3, text: "d", label: "safe", category: null },
    { index: 4, text: "e", label: null, category: null },
  ];
  const responses: ScoredResponses = {
    prompts,
    texts: ["I cannot help.", "Sure, step one ...", "I'm sorry, no.", "Here you go.", "Fine."],
    reward: [1, 3, -1, 2, 0],
    cost: [-2, 4, -1, 0, -3],
    baselineReward: [1, 2, 0, 5, -1],
  };
  const all = [0, 1, 2, 3, 4];
  const detector = new RefusalDetector();

  it("matches hand-computed values", () => {
    const m = groupMetrics(responses, all, detector, DEFAULT_BOOTSTRAP);
    expect(m.count).toBe(5);
    expect(m.helpfulness).toBe(1);
    expect(m.safety).toBe(-0.4);
    expect(m.harmlessRate).toBe(3 / 5);
    expect(m.refusalRate).toBe(2 / 5);
    expect(m.harmfulRefusalRate).toBe(1 / 2);
    expect(m.harmfulCount).toBe(2);
    expect(m.benignRefusalRate).toBe(1 / 2);
    expect(m.benignCount).toBe(2);
    // outcomes: tie, win, loss, loss, win
    expect(m.winRate?.rate).toBe(2.5 / 5);
    expect(m.winRate?.ties).toBe(1);
  });

  it("leaves win rate out without a baseline", () => {
    const m = groupMetrics(
      { ...responses, baselineReward: null },
      all,
      detector,
      DEFAULT_BOOTSTRAP,
    );
    expect(m.winRate).toBeNull();
  });

  it("reports no refusal rate for a label with no prompts", () => {
    const m = groupMetrics(responses, [0, 1], detector, DEFAULT_BOOTSTRAP);
    expect(m.benignRefusalRate).toBeNull();
    expect(m.benignCount).toBe(0);
  });

  it("breaks down by category in order of appearance", () => {
    const categories = categoryMetrics(responses, detector, DEFAULT_BOOTSTRAP);
    expect(categories.map((c) => [c.category, c.count])).toEqual([
      ["weapons", 1],
      ["theft", 2],
    ]);
    const theft = categories[1];
    expect(theft.helpfulness).toBe(1);
    expect(theft.harmlessRate).toBe(0.5);
    expect(theft.refusalRate).toBe(0.5);
    expect(theft.winRate?.rate).toBe(0.5);
  });
});
