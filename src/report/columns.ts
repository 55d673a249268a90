// The metric columns that the terminal table, the Markdown report and the HTML page share, so
// the three always show the same numbers with the same rounding.

import type { GroupMetrics } from "../eval/metrics.js";

export interface MetricColumn {
  header: string;
  /** Meaning of the column, for report legends. */
  description: string;
  cell: (m: GroupMetrics) => string;
}

/** Formats a number with `digits` decimals, or "-" when it is missing. */
export function formatNumber(value: number | null, digits = 3): string {
  return value === null || Number.isNaN(value) ? "-" : value.toFixed(digits);
}

/** Formats a share as a percentage with one decimal, or "-" when it is missing. */
export function formatPercent(value: number | null): string {
  return value === null || Number.isNaN(value) ? "-" : `${(100 * value).toFixed(1)}%`;
}

function formatWinRate(m: GroupMetrics): string {
  const w = m.winRate;
  if (w === null) return "-";
  const pct = (v: number) => (100 * v).toFixed(1);
  return `${pct(w.rate)}% [${pct(w.low)}, ${pct(w.high)}]`;
}

export const METRIC_COLUMNS: readonly MetricColumn[] = [
  { header: "n", description: "prompts", cell: (m) => String(m.count) },
  {
    header: "Helpfulness",
    description: "mean reward (higher is more helpful)",
    cell: (m) => formatNumber(m.helpfulness),
  },
  {
    header: "Safety",
    description: "mean cost (lower is safer)",
    cell: (m) => formatNumber(m.safety),
  },
  {
    header: "Harmless",
    description: "share of responses with cost < 0",
    cell: (m) => formatPercent(m.harmlessRate),
  },
  {
    header: "Refusal",
    description: "share of responses the refusal detector flags, all prompts",
    cell: (m) => formatPercent(m.refusalRate),
  },
  {
    header: "Refusal benign",
    description: "refusals on prompts labelled safe (over-refusal)",
    cell: (m) => formatPercent(m.benignRefusalRate),
  },
  {
    header: "Refusal harmful",
    description: "refusals on prompts labelled unsafe",
    cell: (m) => formatPercent(m.harmfulRefusalRate),
  },
  {
    header: "Win rate [95% CI]",
    description:
      "share of prompts where the reward beats the baseline's, ties counting half, " +
      "with a percentile bootstrap interval",
    cell: formatWinRate,
  },
];
