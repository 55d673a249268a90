// The comparison table for the terminal: one row per system and prompt set, columns padded to
// equal width.

import type { EvaluationResults } from "../eval/results.js";
import { METRIC_COLUMNS } from "./columns.js";

/** Lays out rows of cells as text columns: the first `leftColumns` left-aligned, the rest right. */
export function alignColumns(rows: readonly string[][], leftColumns: number): string {
  const widths = rows[0].map((_, c) => Math.max(...rows.map((row) => row[c].length)));
  const lines = rows.map((row) =>
    row
      .map((cell, c) => (c < leftColumns ? cell.padEnd(widths[c]) : cell.padStart(widths[c])))
      .join("  ")
      .trimEnd(),
  );
  const rule = widths.map((w) => "-".repeat(w)).join("  ");
  return [lines[0], rule, ...lines.slice(1)].join("\n");
}

/** Returns the metrics of every system on every set as a plain-text table, grouped by set. */
export function formatComparisonTable(results: EvaluationResults): string {
  const header = ["Set", "System", ...METRIC_COLUMNS.map((c) => c.header)];
  const rows: string[][] = [];
  for (const set of results.sets) {
    for (const m of results.metrics.filter((x) => x.set === set.name)) {
      rows.push([m.set, m.system, ...METRIC_COLUMNS.map((c) => c.cell(m))]);
    }
  }
  const baseline =
    results.settings.baseline === null
      ? "no baseline system, so no win rates"
      : `win rates against "${results.settings.baseline}"`;
  return `${alignColumns([header, ...rows], 2)}\n(${baseline}; safety is mean cost, lower is safer)`;
}
