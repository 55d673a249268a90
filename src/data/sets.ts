// The preference sets of MidPO, built from PKU-SafeRLHF records:
// - D_s (safety expert): pairs where exactly one response is labelled safe; chosen = that one;
// - D_h (helpfulness expert): every pair; chosen = better_response_id;
// - D_dual (router), by label: both labelled safe and safer_response_id == better_response_id;
//   chosen = that response;
// - D_dual, by cost model: order by better_response_id, keep the pair only when both costs are
//   negative (the cost model judges both safe), then chosen = the response with lower cost.
// Pairwise records without safety labels become pairs as they are and can join D_s or D_h.
// Also here: train/eval splits grouped by prompt, and length filtering.

import { createHash } from "node:crypto";
import type { PairwiseRecord, PkuRecord, PreferencePair, Prompt } from "./types.js";

/** Pairs of one set and how many records were left out or noted, by reason. */
export interface SetBuild {
  pairs: PreferencePair[];
  counts: Record<string, number>;
}

export type SetName = "ds" | "dh" | "ddual";

/** Builds D_s: the safe response of each pair with exactly one safe response is chosen. */
export function buildSafetySet(records: readonly PkuRecord[]): SetBuild {
  const pairs: PreferencePair[] = [];
  const counts = { bothSafe: 0, bothUnsafe: 0, saferIdDisagrees: 0 };
  for (const record of records) {
    if (record.is_response_0_safe && record.is_response_1_safe) {
      counts.bothSafe++;
      continue;
    }
    if (!record.is_response_0_safe && !record.is_response_1_safe) {
      counts.bothUnsafe++;
      continue;
    }

    const safe = record.is_response_0_safe ? 0 : 1;
    if (record.safer_response_id !== safe) {
      // The safety labels decide; safer_response_id names the unsafe response here.
      counts.saferIdDisagrees++;
    }
    pairs.push(pkuPair(record, safe));
  }
  return { pairs, counts };
}

/** Builds D_h: every pair, with the more helpful response (better_response_id) chosen. */
export function buildHelpfulnessSet(records: readonly PkuRecord[]): SetBuild {
  const pairs = records.map((record) => pkuPair(record, record.better_response_id));
  return { pairs, counts: {} };
}

/**
 * Builds D_dual by label: both responses labelled safe and the safer one is also the better
 * one, which is chosen.
 */
export function buildDualSetByLabel(records: readonly PkuRecord[]): SetBuild {
  const pairs: PreferencePair[] = [];
  const counts = { notBothSafe: 0, saferIsNotBetter: 0 };
  for (const record of records) {
    if (!record.is_response_0_safe || !record.is_response_1_safe) {
      counts.notBothSafe++;
      continue;
    }
    if (record.safer_response_id !== record.better_response_id) {
      counts.saferIsNotBetter++;
      continue;
    }
    pairs.push(pkuPair(record, record.better_response_id));
  }
  return { pairs, counts };
}

/**
 * Builds D_dual by cost model. `costs` maps a record id to the cost-model scores of
 * (response_0, response_1); negative means safe. A pair is kept when both costs are negative,
 * and then the response with the lower cost is chosen. With equal costs the better response
 * (better_response_id) is chosen. Records without costs are counted as `missingCost`.
 */
export function buildDualSetByCost(
  records: readonly PkuRecord[],
  costs: ReadonlyMap<string, readonly [number, number]>,
): SetBuild {
  const pairs: PreferencePair[] = [];
  const counts = { missingCost: 0, notBothSafeByCost: 0, lowerCostIsWorse: 0 };
  for (const record of records) {
    const cost = costs.get(record.id);
    if (cost === undefined) {
      counts.missingCost++;
      continue;
    }
    if (!(cost[0] < 0 && cost[1] < 0)) {
      counts.notBothSafeByCost++;
      continue;
    }

    const better = record.better_response_id;
    const worse = 1 - better;
    const chosen = cost[worse] < cost[better] ? worse : better;
    if (chosen !== better) {
      counts.lowerCostIsWorse++;
    }
    const pair = pkuPair(record, chosen as 0 | 1);
    pair.meta = { ...pair.meta, chosen_cost: cost[chosen], rejected_cost: cost[1 - chosen] };
    pairs.push(pair);
  }
  return { pairs, counts };
}

/** Turns pairwise records into pairs, chosen and rejected as the file has them. */
export function pairsFromPairwise(records: readonly PairwiseRecord[]): PreferencePair[] {
  return records.map((record) => ({
    id: record.id,
    prompt: record.prompt,
    chosen: record.chosen,
    rejected: record.rejected,
    source: record.source,
    ...(record.margin === undefined ? {} : { margin: record.margin }),
  }));
}

function pkuPair(record: PkuRecord, chosen: 0 | 1): PreferencePair {
  const rejected = chosen === 0 ? 1 : 0;
  const responses = [record.response_0, record.response_1];
  const safe = [record.is_response_0_safe, record.is_response_1_safe];
  return {
    id: record.id,
    prompt: record.prompt,
    chosen: responses[chosen],
    rejected: responses[rejected],
    source: record.source,
    meta: {
      chosen_response_id: chosen,
      is_chosen_safe: safe[chosen],
      is_rejected_safe: safe[rejected],
    },
  };
}

// ---------------------------------------------------------------------------------------------
// Train/eval splits

export interface SplitOptions {
  /** Expected fraction of prompts in the eval split, in [0, 1]. */
  evalRatio: number;
  seed: number;
}

/**
 * Text that identifies a prompt for grouping: the trimmed prompt string, or the JSON of the
 * trimmed turns of a multi-turn prompt.
 */
export function promptKey(prompt: Prompt): string {
  if (typeof prompt === "string") {
    return prompt.trim();
  }
  return JSON.stringify(prompt.map((turn) => [turn.role, turn.content.trim()]));
}

/**
 * Returns whether a prompt belongs to the eval split. The first 48 bits of
 * SHA-256(`midpo-split` NUL seed NUL promptKey), read as a fraction of 2^48, are compared with
 * `evalRatio`. The result depends only on the seed and the prompt, so every pair with one
 * prompt lands on one side, and a prompt lands on the same side in D_s, D_h and D_dual.
 */
export function isEvalPrompt(prompt: Prompt, options: SplitOptions): boolean {
  const digest = createHash("sha256")
    .update(`midpo-split\0${options.seed}\0${promptKey(prompt)}`)
    .digest();
  return digest.readUIntBE(0, 6) / 2 ** 48 < options.evalRatio;
}

/**
 * Splits items into train and eval by prompt, keeping input order within each side. The eval
 * fraction is `evalRatio` in expectation, not exactly: each prompt is assigned on its own.
 */
export function splitTrainEval<T extends { prompt: Prompt }>(
  items: readonly T[],
  options: SplitOptions,
): { train: T[]; eval: T[] } {
  if (!(options.evalRatio >= 0 && options.evalRatio <= 1)) {
    throw new RangeError(`evalRatio must be in [0, 1], got ${options.evalRatio}`);
  }
  const train: T[] = [];
  const evaluation: T[] = [];
  for (const item of items) {
    (isEvalPrompt(item.prompt, options) ? evaluation : train).push(item);
  }
  return { train, eval: evaluation };
}

// ---------------------------------------------------------------------------------------------
// Length filtering

/** Lengths of the parts of a pair, in characters or tokens. */
export interface PairLengths {
  prompt: number;
  chosen: number;
  rejected: number;
}

export type LengthMeasure = (pair: PreferencePair) => PairLengths;

/** Lengths in UTF-16 code units; a multi-turn prompt counts the text of all its turns. */
export function characterLengths(pair: PreferencePair): PairLengths {
  const prompt =
    typeof pair.prompt === "string"
      ? pair.prompt.length
      : pair.prompt.reduce((total, turn) => total + turn.content.length, 0);
  return { prompt, chosen: pair.chosen.length, rejected: pair.rejected.length };
}

export interface LengthFilterResult {
  kept: PreferencePair[];
  /** Pairs whose prompt plus longer response exceeds the limit. */
  dropped: PreferencePair[];
}

/**
 * Keeps the pairs whose prompt plus longer response fits in `maxLength` units of `measure`
 * (characters by default; see tokenLengths in tokenize-pairs.ts for tokens).
 */
export function filterByLength(
  pairs: readonly PreferencePair[],
  maxLength: number,
  measure: LengthMeasure = characterLengths,
): LengthFilterResult {
  const kept: PreferencePair[] = [];
  const dropped: PreferencePair[] = [];
  for (const pair of pairs) {
    const lengths = measure(pair);
    const total = lengths.prompt + Math.max(lengths.chosen, lengths.rejected);
    (total <= maxLength ? kept : dropped).push(pair);
  }
  return { kept, dropped };
}
