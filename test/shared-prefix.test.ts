// Grouping of sequences that share a prefix, on hand-built token lists.

import { describe, expect, it } from "vitest";
import { groupSharedPrefixes } from "../src/model/shared-prefix.js";

const range = (from: number, count: number) => Array.from({ length: count }, (_, i) => from + i);

describe("groupSharedPrefixes", () => {
  it("groups two responses to one prompt", () => {
    const prompt = range(100, 20);
    const seqs = [[...prompt, 1, 2, 3], [...range(500, 30)], [...prompt, 7]];
    const { groups, singles } = groupSharedPrefixes(seqs, 16);
    expect(groups).toEqual([{ prefixLength: 20, members: [0, 2] }]);
    expect(singles).toEqual([1]);
  });

  it("leaves prefixes shorter than the minimum alone", () => {
    const seqs = [
      [...range(1, 15), 40],
      [...range(1, 15), 50],
    ];
    expect(groupSharedPrefixes(seqs, 16)).toEqual({ groups: [], singles: [0, 1] });
    expect(groupSharedPrefixes(seqs, 15).groups).toEqual([{ prefixLength: 15, members: [0, 1] }]);
  });

  it("keeps one token after the prefix of every member", () => {
    const base = range(1, 20);
    // The first sequence is a prefix of the second, and the third repeats the first.
    const seqs = [base, [...base, 99], base];
    const { groups, singles } = groupSharedPrefixes(seqs, 4);
    expect(groups).toEqual([{ prefixLength: 19, members: [0, 2, 1] }]);
    expect(singles).toEqual([]);
  });

  it("stops a group where joining saves fewer tokens", () => {
    const a = range(1, 40);
    // Two sequences share 40 tokens, and a third shares only the first 10 with them.
    const seqs = [
      [...a, 1000],
      [...a, 2000],
      [...range(1, 10), 3000, 3001],
    ];
    const { groups, singles } = groupSharedPrefixes(seqs, 4);
    // Joining the third would save 3 * 10 = 30 tokens instead of 40.
    expect(groups).toEqual([{ prefixLength: 40, members: [0, 1] }]);
    expect(singles).toEqual([2]);
  });

  it("shortens a group's prefix when that saves more", () => {
    const seqs = [
      [...range(1, 30), 500],
      [...range(1, 30), 600],
      [...range(1, 20), 700, 701],
      [...range(1, 20), 800, 801],
    ];
    // Sorted: 0, 1 (common 30), then 2 and 3 (common 20 with the rest).
    // 2 members at 30 save 30, 3 at 20 save 40, and 4 at 20 save 60.
    const { groups, singles } = groupSharedPrefixes(seqs, 4);
    expect(groups).toEqual([{ prefixLength: 20, members: [0, 1, 2, 3] }]);
    expect(singles).toEqual([]);
  });

  it("keeps prompts apart behind a common header", () => {
    // Three prompts of 40 tokens that begin with the same 20-token header, two responses
    // each, and one sequence that shares only the header.
    const header = range(1, 20);
    const prompt = (k: number) => [...header, ...range(100 * (k + 1), 20)];
    const seqs = [0, 1, 2].flatMap((k) => [
      [...prompt(k), 5000 + k],
      [...prompt(k), 6000 + k],
    ]);
    // The single sorts before, between and after the prompts.
    for (const token of [50, 150, 9000]) {
      const { groups, singles } = groupSharedPrefixes([...seqs, [...header, token, 1]], 16);
      expect(groups.map((g) => g.prefixLength)).toEqual([40, 40, 40]);
      expect(singles).toEqual([6]);
    }
  });

  it("shares at least one token", () => {
    const seqs = [[], [5], [5], [6, 7], [6, 8]];
    const { groups, singles } = groupSharedPrefixes(seqs, 0);
    expect(groups).toEqual([{ prefixLength: 1, members: [3, 4] }]);
    expect(singles).toEqual([0, 1, 2]);
  });
});
