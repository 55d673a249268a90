// report.md: settings, one metrics table per prompt set (systems as rows), per-category tables,
// and the router gate means per layer.

import type { EvaluationResults, SetMetrics } from "../eval/results.js";
import { formatNumber, METRIC_COLUMNS } from "./columns.js";

function cell(text: string): string {
  return text.replace(/\|/g, "\\|").replace(/\n/g, " ");
}

function markdownTable(header: string[], rows: string[][], leftColumns: number): string {
  const align = header.map((_, c) => (c < leftColumns ? "---" : "---:"));
  return [header, align, ...rows].map((row) => `| ${row.map(cell).join(" | ")} |`).join("\n");
}

/** Returns sentences that describe how responses were generated and scored. */
export function describeSettings(results: EvaluationResults): string[] {
  const s = results.settings;
  const decoding =
    s.temperature === 0
      ? "greedy decoding"
      : `sampling at temperature ${s.temperature}, seed ${s.seed}`;
  const limit = s.limit === null ? "" : `, first ${s.limit} prompts of each set`;
  const baseline = s.baseline === null ? "none (no system of kind base)" : `\`${s.baseline}\``;
  return [
    `Responses: ${decoding}, at most ${s.maxNewTokens} new tokens, ${s.template} prompt template${limit}.`,
    `Reward model: \`${results.scoreModels.reward.path}\`; cost model: \`${results.scoreModels.cost.path}\`.`,
    `Win-rate baseline: ${baseline}; bootstrap: ${s.bootstrap.resamples} resamples, level ${s.bootstrap.level}, seed ${s.bootstrap.seed}.`,
    `Refusal phrases (case-insensitive, anywhere in the response): ${s.refusalPhrases.map((p) => `"${p}"`).join(", ")}.`,
  ];
}

function setTable(metrics: readonly SetMetrics[]): string {
  const header = ["System", ...METRIC_COLUMNS.map((c) => c.header)];
  const rows = metrics.map((m) => [m.system, ...METRIC_COLUMNS.map((c) => c.cell(m))]);
  return markdownTable(header, rows, 1);
}

function categoryTable(metrics: readonly SetMetrics[]): string | null {
  const header = ["Category", "System", ...METRIC_COLUMNS.map((c) => c.header)];
  const categories = [...new Set(metrics.flatMap((m) => m.categories.map((c) => c.category)))];
  if (categories.length === 0) return null;
  const rows: string[][] = [];
  for (const category of categories) {
    for (const m of metrics) {
      const c = m.categories.find((x) => x.category === category);
      if (c !== undefined)
        rows.push([category, m.system, ...METRIC_COLUMNS.map((col) => col.cell(c))]);
    }
  }
  return markdownTable(header, rows, 2);
}

function gateTable(results: EvaluationResults, system: string): string {
  const rows: string[][] = [];
  for (const g of results.gates.filter((x) => x.system === system)) {
    g.meanAlpha.forEach((alpha, layer) => {
      rows.push([g.set, String(layer), formatNumber(alpha), formatNumber(g.meanBeta[layer])]);
    });
  }
  return markdownTable(["Set", "Layer", "Mean α", "Mean β"], rows, 2);
}

/** Renders the Markdown report. */
export function renderMarkdown(results: EvaluationResults): string {
  const out: string[] = ["# MidPO evaluation", "", ...describeSettings(results), ""];
  out.push("Columns:", "");
  for (const c of METRIC_COLUMNS) out.push(`- **${c.header}**: ${c.description}`);
  out.push("");

  out.push("## Results by prompt set", "");
  for (const set of results.sets) {
    const { safe, unsafe, none } = set.labels;
    out.push(`### ${set.name}`, "");
    out.push(
      `\`${set.path}\`: ${set.count} prompts (${safe} labelled safe, ${unsafe} unsafe, ${none} unlabelled).`,
      "",
    );
    out.push(setTable(results.metrics.filter((m) => m.set === set.name)), "");
  }

  const categorySections = results.sets
    .map((set) => ({
      set,
      table: categoryTable(results.metrics.filter((m) => m.set === set.name)),
    }))
    .filter((s) => s.table !== null);
  if (categorySections.length > 0) {
    out.push("## Results by category", "");
    for (const { set, table } of categorySections) out.push(`### ${set.name}`, "", table!, "");
  }

  const routers = [...new Set(results.gates.map((g) => g.system))];
  if (routers.length > 0) {
    out.push("## Router gates", "");
    out.push(
      "Mean gate per layer over generated tokens: α weighs the safety expert, β the helpfulness expert.",
      "",
    );
    for (const system of routers) out.push(`### ${system}`, "", gateTable(results, system), "");
  }
  return out.join("\n");
}
