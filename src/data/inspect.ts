// Statistics of a loaded dataset for `midpo data inspect`: the safety-label mix, the sizes of
// D_s, D_h and D_dual, how often the better response is also the safer one, and length
// percentiles in characters and, with a tokenizer, in tokens.

import type { Tokenizer } from "../tokenize/tokenizer.js";
import type { LoadedDataset, LoadSummary } from "./load.js";
import {
  buildDualSetByLabel,
  buildHelpfulnessSet,
  buildSafetySet,
  characterLengths,
  pairsFromPairwise,
  type LengthMeasure,
} from "./sets.js";
import { tokenLengths, type PromptTemplate } from "./tokenize-pairs.js";
import { formatLocation, type PreferencePair } from "./types.js";

/** Nearest-rank percentiles: pN is the smallest value with at least N % of values at or below. */
export interface Percentiles {
  count: number;
  p50: number;
  p90: number;
  p99: number;
  max: number;
}

export interface LengthReport {
  /** Prompt text; a multi-turn prompt counts all its turns. */
  prompt: Percentiles;
  /** Each response on its own, both responses of every pair. */
  response: Percentiles;
}

export interface PkuReport {
  records: number;
  bothSafe: number;
  bothUnsafe: number;
  exactlyOneSafe: number;
  /** Records where better_response_id equals safer_response_id. */
  betterIsSafer: number;
  sets: { ds: number; dh: number; ddual: number };
}

export interface InspectReport {
  load: LoadSummary;
  pku: PkuReport;
  /** Pairwise and hh-rlhf records, which have no safety labels. */
  pairwiseRecords: number;
  characters: LengthReport;
  /** Present when a tokenizer was given; counted as tokenize-pairs.ts encodes them. */
  tokens?: LengthReport & { template: PromptTemplate };
}

export interface InspectOptions {
  tokenizer?: Tokenizer;
  template?: PromptTemplate;
}

export function inspectDataset(
  dataset: LoadedDataset,
  options: InspectOptions = {},
): InspectReport {
  const pku = dataset.pku;
  const safeCounts = pku.map(
    (record) => Number(record.is_response_0_safe) + Number(record.is_response_1_safe),
  );
  const dh = buildHelpfulnessSet(pku).pairs;
  const pairs = [...dh, ...pairsFromPairwise(dataset.pairwise)];

  const report: InspectReport = {
    load: dataset.summary,
    pku: {
      records: pku.length,
      bothSafe: safeCounts.filter((count) => count === 2).length,
      bothUnsafe: safeCounts.filter((count) => count === 0).length,
      exactlyOneSafe: safeCounts.filter((count) => count === 1).length,
      betterIsSafer: pku.filter((r) => r.better_response_id === r.safer_response_id).length,
      sets: {
        ds: buildSafetySet(pku).pairs.length,
        dh: dh.length,
        ddual: buildDualSetByLabel(pku).pairs.length,
      },
    },
    pairwiseRecords: dataset.pairwise.length,
    characters: lengthReport(pairs, characterLengths),
  };

  if (options.tokenizer !== undefined) {
    const template = options.template ?? "safe-rlhf";
    report.tokens = {
      template,
      ...lengthReport(pairs, tokenLengths(options.tokenizer, { template })),
    };
  }
  return report;
}

function lengthReport(pairs: readonly PreferencePair[], measure: LengthMeasure): LengthReport {
  const prompts: number[] = [];
  const responses: number[] = [];
  for (const pair of pairs) {
    const lengths = measure(pair);
    prompts.push(lengths.prompt);
    responses.push(lengths.chosen, lengths.rejected);
  }
  return { prompt: percentiles(prompts), response: percentiles(responses) };
}

export function percentiles(values: readonly number[]): Percentiles {
  const sorted = [...values].sort((a, b) => a - b);
  const rank = (p: number) => (sorted.length === 0 ? 0 : sorted[Math.ceil(p * sorted.length) - 1]);
  return {
    count: sorted.length,
    p50: rank(0.5),
    p90: rank(0.9),
    p99: rank(0.99),
    max: sorted.length === 0 ? 0 : sorted[sorted.length - 1],
  };
}

/** Formats a report as aligned text for a terminal. */
export function formatInspectReport(report: InspectReport): string {
  const lines: string[] = [];
  const { load, pku } = report;
  lines.push(`files:            ${load.files.map((file) => file.file).join(", ")}`);
  lines.push(`records read:     ${load.recordsRead}`);
  lines.push(`records kept:     ${load.recordsKept}`);
  lines.push(`records dropped:  ${load.recordsDropped}`);

  if (pku.records > 0) {
    lines.push("", "PKU-SafeRLHF records");
    lines.push(`  both safe:        ${pku.bothSafe}`);
    lines.push(`  both unsafe:      ${pku.bothUnsafe}`);
    lines.push(`  exactly one safe: ${pku.exactlyOneSafe}`);
    lines.push(
      `  better == safer:  ${pku.betterIsSafer} (${percent(pku.betterIsSafer, pku.records)})`,
    );
    lines.push(`  D_s pairs:        ${pku.sets.ds}`);
    lines.push(`  D_h pairs:        ${pku.sets.dh}`);
    lines.push(`  D_dual pairs:     ${pku.sets.ddual} (by label)`);
  }
  if (report.pairwiseRecords > 0) {
    lines.push("", `pairwise records (no safety labels): ${report.pairwiseRecords}`);
  }

  lines.push("", `${"lengths".padEnd(22)}${LENGTH_COLUMNS.map((c) => c.padStart(8)).join("")}`);
  lines.push(...lengthLines("characters", report.characters));
  if (report.tokens !== undefined) {
    lines.push(...lengthLines(`tokens (${report.tokens.template})`, report.tokens));
  }

  const counts = Object.entries(load.problems.counts);
  lines.push("", counts.length === 0 ? "problems: none" : "problems");
  for (const [reason, count] of counts) {
    lines.push(`  ${reason}: ${count}`);
  }
  // The text shows a few locations per reason. The --json report and data build's
  // summary.json list every location the load kept.
  for (const [reason, count] of counts) {
    const examples = load.problems.examples.filter((e) => e.reason === reason);
    for (const example of examples.slice(0, TEXT_EXAMPLES)) {
      lines.push(`  e.g. ${formatLocation(example.source)}: ${reason}: ${example.detail}`);
    }
    if (count > TEXT_EXAMPLES) {
      const listed = examples.length < count ? ` (the first ${examples.length})` : "";
      lines.push(`  ... ${count - TEXT_EXAMPLES} more ${reason}; --json lists them${listed}`);
    }
  }
  return lines.join("\n");
}

/** Locations of each problem reason in the text report. */
const TEXT_EXAMPLES = 3;

const LENGTH_COLUMNS = ["count", "p50", "p90", "p99", "max"];

function lengthLines(unit: string, report: LengthReport): string[] {
  const row = (name: string, p: Percentiles) =>
    `  ${name.padEnd(20)}` +
    [p.count, p.p50, p.p90, p.p99, p.max].map((value) => String(value).padStart(8)).join("");
  return [`  ${unit}`, row("  prompt", report.prompt), row("  response", report.response)];
}

function percent(part: number, whole: number): string {
  return whole === 0 ? "n/a" : `${((100 * part) / whole).toFixed(1)} %`;
}
