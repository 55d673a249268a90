// report.html: one self-contained page (inline CSS and SVG charts, no scripts, no external
// links) with the settings, the metric tables and the charts of charts.ts.

import type { GroupMetrics } from "../eval/metrics.js";
import type { EvaluationResults } from "../eval/results.js";
import { gateHistogramSpec, gateLayerSpec, renderSvg, tradeOffSpec } from "./charts.js";
import { METRIC_COLUMNS } from "./columns.js";
import { describeSettings } from "./markdown.js";

const STYLE = `
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.9em; }
th, td { border-bottom: 1px solid #ddd; padding: 0.3em 0.7em; }
th { text-align: left; background: #f4f4f4; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
figure { margin: 1em 0 2em; }
code { background: #f4f4f4; padding: 0 0.2em; }
`;

export function escapeHtml(text: string): string {
  return text
    .replace(/&/g, "&amp;")
    .replace(/</g, "&lt;")
    .replace(/>/g, "&gt;")
    .replace(/"/g, "&quot;");
}

/** Inline Markdown code spans of describeSettings become <code> elements. */
function settingsLine(line: string): string {
  return escapeHtml(line).replace(/`([^`]*)`/g, "<code>$1</code>");
}

function metricsTable(
  leading: string[],
  rows: { lead: string[]; metrics: GroupMetrics }[],
): string {
  const head = [...leading, ...METRIC_COLUMNS.map((c) => c.header)]
    .map((h) => `<th>${escapeHtml(h)}</th>`)
    .join("");
  const body = rows
    .map(({ lead, metrics }) => {
      const leadCells = lead.map((text) => `<td>${escapeHtml(text)}</td>`);
      const metricCells = METRIC_COLUMNS.map(
        (c) => `<td class="num">${escapeHtml(c.cell(metrics))}</td>`,
      );
      return `<tr>${[...leadCells, ...metricCells].join("")}</tr>`;
    })
    .join("\n");
  return `<table>\n<tr>${head}</tr>\n${body}\n</table>`;
}

function setSections(results: EvaluationResults): string[] {
  const out: string[] = ["<h2>Results by prompt set</h2>"];
  for (const set of results.sets) {
    const metrics = results.metrics.filter((m) => m.set === set.name);
    const { safe, unsafe, none } = set.labels;
    out.push(`<h3>${escapeHtml(set.name)}</h3>`);
    out.push(
      `<p><code>${escapeHtml(set.path)}</code>: ${set.count} prompts ` +
        `(${safe} labelled safe, ${unsafe} unsafe, ${none} unlabelled).</p>`,
    );
    out.push(
      metricsTable(
        ["System"],
        metrics.map((m) => ({ lead: [m.system], metrics: m })),
      ),
    );

    const rows = set.categories.flatMap((category) =>
      metrics.flatMap((m) => {
        const c = m.categories.find((x) => x.category === category);
        return c === undefined ? [] : [{ lead: [category, m.system], metrics: c as GroupMetrics }];
      }),
    );
    if (rows.length > 0) {
      out.push(`<h4>${escapeHtml(set.name)} by category</h4>`);
      out.push(metricsTable(["Category", "System"], rows));
    }
  }
  return out;
}

async function chartSections(results: EvaluationResults): Promise<string[]> {
  const out: string[] = ["<h2>Charts</h2>"];
  out.push(`<figure>${await renderSvg(tradeOffSpec(results))}</figure>`);
  const routers = [...new Set(results.gates.map((g) => g.system))];
  for (const system of routers) {
    out.push(`<h3>Router gates: ${escapeHtml(system)}</h3>`);
    out.push(`<figure>${await renderSvg(gateHistogramSpec(results, system))}</figure>`);
    out.push(`<figure>${await renderSvg(gateLayerSpec(results, system))}</figure>`);
  }
  return out;
}

/** Renders the HTML report. */
export async function renderHtml(results: EvaluationResults): Promise<string> {
  const legend = METRIC_COLUMNS.map(
    (c) => `<li><b>${escapeHtml(c.header)}</b>: ${escapeHtml(c.description)}</li>`,
  ).join("\n");
  const body = [
    "<h1>MidPO evaluation</h1>",
    ...describeSettings(results).map((line) => `<p>${settingsLine(line)}</p>`),
    `<ul>\n${legend}\n</ul>`,
    ...setSections(results),
    ...(await chartSections(results)),
  ];
  return [
    "<!DOCTYPE html>",
    '<html lang="en">',
    "<head>",
    '<meta charset="utf-8">',
    "<title>MidPO evaluation</title>",
    `<style>${STYLE}</style>`,
    "</head>",
    "<body>",
    ...body,
    "</body>",
    "</html>",
    "",
  ].join("\n");
}
