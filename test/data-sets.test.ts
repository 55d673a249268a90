// D_s, D_h and D_dual on the real PKU-SafeRLHF rows are checked against the set rules applied
// here to the raw JSON lines. D_dual by cost uses hand-made costs. Also tested: prompt-grouped
// splits and length filtering.

import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { loadDataset } from "../src/data/load.js";
import {
  buildDualSetByCost,
  buildDualSetByLabel,
  buildHelpfulnessSet,
  buildSafetySet,
  characterLengths,
  filterByLength,
  isEvalPrompt,
  promptKey,
  splitTrainEval,
} from "../src/data/sets.js";
import type { PkuRecord, PreferencePair } from "../src/data/types.js";

const PKU = join(
  import.meta.dirname,
  "..",
  "..",
  "shared",
  "data",
  "pku-saferlhf",
  "pku_saferlhf_alpaca7b_test.jsonl",
);
const hasPku = existsSync(PKU);
if (!hasPku) {
  console.warn(`skipping the real PKU-SafeRLHF tests: ${PKU} not found`);
}

interface RawPku {
  prompt: string;
  response_0: string;
  response_1: string;
  is_response_0_safe: boolean;
  is_response_1_safe: boolean;
  better_response_id: number;
  safer_response_id: number;
}

function readRaw(): RawPku[] {
  return readFileSync(PKU, "utf8")
    .split("\n")
    .filter((line) => line.trim() !== "")
    .map((line) => JSON.parse(line) as RawPku);
}

/** Maps each pair to [line, chosen, rejected] for comparison with raw rows. */
function byLine(pairs: readonly PreferencePair[]): [number, string, string][] {
  return pairs.map((pair) => [pair.source.line as number, pair.chosen, pair.rejected]);
}

function response(row: RawPku, id: number): string {
  return id === 0 ? row.response_0 : row.response_1;
}

describe.skipIf(!hasPku)("sets from the real PKU-SafeRLHF rows", () => {
  it("matches the rules applied to the raw rows", async () => {
    const raw = readRaw();
    const { pku } = await loadDataset(PKU);
    expect(raw.length).toBe(432);
    expect(pku.length).toBe(raw.length);

    const expectedDs: [number, string, string][] = [];
    const expectedDh: [number, string, string][] = [];
    const expectedDual: [number, string, string][] = [];
    raw.forEach((row, i) => {
      const line = i + 1;
      const better = row.better_response_id;
      expectedDh.push([line, response(row, better), response(row, 1 - better)]);
      if (row.is_response_0_safe !== row.is_response_1_safe) {
        const safe = row.is_response_0_safe ? 0 : 1;
        expectedDs.push([line, response(row, safe), response(row, 1 - safe)]);
      }
      if (row.is_response_0_safe && row.is_response_1_safe && row.safer_response_id === better) {
        expectedDual.push([line, response(row, better), response(row, 1 - better)]);
      }
    });

    const ds = buildSafetySet(pku);
    const dh = buildHelpfulnessSet(pku);
    const dual = buildDualSetByLabel(pku);
    expect(byLine(ds.pairs)).toEqual(expectedDs);
    expect(byLine(dh.pairs)).toEqual(expectedDh);
    expect(byLine(dual.pairs)).toEqual(expectedDual);
    expect(ds.pairs.length).toBe(63);
    expect(ds.counts).toEqual({ bothSafe: 193, bothUnsafe: 176, saferIdDisagrees: 0 });
    expect(dual.counts.notBothSafe).toBe(176 + 63);
    expect(dual.pairs.length + dual.counts.notBothSafe + dual.counts.saferIsNotBetter).toBe(432);
  });

  it("splits by prompt with no prompt on both sides", async () => {
    const { pku } = await loadDataset(PKU);
    const pairs = buildHelpfulnessSet(pku).pairs;
    const prompts = new Set(pairs.map((pair) => promptKey(pair.prompt)));
    expect(prompts.size).toBeLessThan(pairs.length);

    for (const seed of [0, 1, 2]) {
      const split = splitTrainEval(pairs, { evalRatio: 0.2, seed });
      const trainPrompts = new Set(split.train.map((pair) => promptKey(pair.prompt)));
      const shared = split.eval.filter((pair) => trainPrompts.has(promptKey(pair.prompt)));
      expect(shared).toEqual([]);
      expect(split.train.length + split.eval.length).toBe(pairs.length);
      expect(split.eval.length).toBeGreaterThan(0);
    }
  });

  it("puts a prompt on the same side in every set", async () => {
    const { pku } = await loadDataset(PKU);
    const options = { evalRatio: 0.3, seed: 7 };
    const dhEval = new Set(
      splitTrainEval(buildHelpfulnessSet(pku).pairs, options).eval.map((pair) => pair.id),
    );
    for (const set of [buildSafetySet(pku), buildDualSetByLabel(pku)]) {
      const split = splitTrainEval(set.pairs, options);
      expect(split.eval.every((pair) => dhEval.has(pair.id))).toBe(true);
      expect(split.train.some((pair) => dhEval.has(pair.id))).toBe(false);
    }
  });
});

function record(i: number, overrides: Partial<PkuRecord> = {}): PkuRecord {
  return {
    kind: "pku",
    id: `r${i}`,
    prompt: `prompt ${i}`,
    response_0: `zero ${i}`,
    response_1: `one ${i}`,
    is_response_0_safe: true,
    is_response_1_safe: true,
    better_response_id: 0,
    safer_response_id: 0,
    extras: {},
    source: { file: "mem.jsonl", line: i + 1 },
    ...overrides,
  };
}

describe("buildDualSetByCost", () => {
  it("keeps pairs with two negative costs and chooses the lower", () => {
    const records = [
      record(0), // costs favour the better response
      record(1, { better_response_id: 1 }), // lower cost on the worse response
      record(2), // one cost positive
      record(3), // equal costs: the better response stays chosen
      record(4), // no costs
      record(5, { is_response_0_safe: false }), // labels are ignored by this rule
    ];
    const costs = new Map<string, [number, number]>([
      ["r0", [-2, -1]],
      ["r1", [-3, -1]],
      ["r2", [-1, 0.5]],
      ["r3", [-1, -1]],
      ["r5", [-0.5, -0.1]],
    ]);
    const built = buildDualSetByCost(records, costs);

    expect(built.pairs.map((pair) => [pair.id, pair.chosen])).toEqual([
      ["r0", "zero 0"],
      ["r1", "zero 1"],
      ["r3", "zero 3"],
      ["r5", "zero 5"],
    ]);
    expect(built.counts).toEqual({ missingCost: 1, notBothSafeByCost: 1, lowerCostIsWorse: 1 });
    expect(built.pairs[1].meta).toMatchObject({ chosen_cost: -3, rejected_cost: -1 });
  });
});

describe("splitTrainEval", () => {
  const pairs: PreferencePair[] = Array.from({ length: 4000 }, (_, i) => ({
    id: `p${i}`,
    prompt: `prompt ${i % 2000}`,
    chosen: "a",
    rejected: "b",
    source: { file: "mem.jsonl", line: i + 1 },
  }));

  it("is deterministic for a seed", () => {
    const first = splitTrainEval(pairs, { evalRatio: 0.1, seed: 3 });
    const second = splitTrainEval(pairs, { evalRatio: 0.1, seed: 3 });
    const other = splitTrainEval(pairs, { evalRatio: 0.1, seed: 4 });
    expect(second.eval.map((pair) => pair.id)).toEqual(first.eval.map((pair) => pair.id));
    expect(other.eval.map((pair) => pair.id)).not.toEqual(first.eval.map((pair) => pair.id));
  });

  it("keeps both pairs of a prompt together", () => {
    const split = splitTrainEval(pairs, { evalRatio: 0.1, seed: 0 });
    const evalIds = new Set(split.eval.map((pair) => Number(pair.id.slice(1)) % 2000));
    for (const pair of split.train) {
      expect(evalIds.has(Number(pair.id.slice(1)) % 2000)).toBe(false);
    }
    expect(split.eval.length % 2).toBe(0);
  });

  it("reaches the ratio in expectation", () => {
    const split = splitTrainEval(pairs, { evalRatio: 0.1, seed: 0 });
    // 2000 prompts at p = 0.1: the standard deviation of the eval fraction is about 0.0067.
    expect(split.eval.length / pairs.length).toBeGreaterThan(0.08);
    expect(split.eval.length / pairs.length).toBeLessThan(0.12);
  });

  it("handles ratios 0 and 1 and rejects others", () => {
    expect(splitTrainEval(pairs, { evalRatio: 0, seed: 0 }).eval).toHaveLength(0);
    expect(splitTrainEval(pairs, { evalRatio: 1, seed: 0 }).train).toHaveLength(0);
    expect(() => splitTrainEval(pairs, { evalRatio: 1.5, seed: 0 })).toThrow(/evalRatio/);
  });

  it("groups prompts that differ only in surrounding whitespace", () => {
    const options = { evalRatio: 0.5, seed: 0 };
    for (let i = 0; i < 50; i++) {
      expect(isEvalPrompt(`  q${i}\n`, options)).toBe(isEvalPrompt(`q${i}`, options));
    }
  });
});

describe("filterByLength", () => {
  it("counts characters of the prompt and the longer response", () => {
    const pair = (
      id: string,
      prompt: string,
      chosen: string,
      rejected: string,
    ): PreferencePair => ({
      id,
      prompt,
      chosen,
      rejected,
      source: { file: "mem.jsonl", line: 1 },
    });
    const pairs = [
      pair("fits", "12345", "123", "12345"),
      pair("long", "12345", "123456", "1"),
      pair("turns", "", "1", "1"),
    ];
    pairs[2].prompt = [
      { role: "user", content: "1234" },
      { role: "assistant", content: "12" },
      { role: "user", content: "1234" },
    ];
    expect(characterLengths(pairs[2])).toEqual({ prompt: 10, chosen: 1, rejected: 1 });

    const result = filterByLength(pairs, 10);
    expect(result.kept.map((p) => p.id)).toEqual(["fits"]);
    expect(result.dropped.map((p) => p.id)).toEqual(["long", "turns"]);
  });
});
