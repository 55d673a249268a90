// Reports rendered from a hand-written results object, so every expected cell is known.

import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import type { GroupMetrics } from "../src/eval/metrics.js";
import type { EvaluationResults } from "../src/eval/results.js";
import { tradeOffSpec } from "../src/report/charts.js";
import { renderHtml } from "../src/report/html.js";
import { renderMarkdown } from "../src/report/markdown.js";
import { formatComparisonTable } from "../src/report/table.js";
import { writeReports } from "../src/report/write.js";

const work = mkdtempSync(join(tmpdir(), "midpo-report-"));

afterAll(() => {
  rmSync(work, { recursive: true, force: true });
});

function metrics(overrides: Partial<GroupMetrics>): GroupMetrics {
  return {
    count: 4,
    helpfulness: 1.5,
    safety: -0.25,
    harmlessRate: 0.75,
    refusalRate: 0.25,
    benignRefusalRate: null,
    benignCount: 0,
    harmfulRefusalRate: 0.25,
    harmfulCount: 4,
    winRate: null,
    ...overrides,
  };
}

const win = { rate: 0.625, wins: 2, ties: 1, losses: 1, low: 0.25, high: 1, level: 0.95 };

const results: EvaluationResults = {
  format: "midpo-eval-results/v1",
  settings: {
    maxNewTokens: 64,
    temperature: 0.7,
    seed: 3,
    batchSize: 8,
    template: "safe-rlhf",
    limit: null,
    refusalPhrases: ["I cannot"],
    bootstrap: { resamples: 1000, seed: 3, level: 0.95 },
    baseline: "base",
  },
  scoreModels: {
    reward: { path: "/models/reward", sha256: "r".repeat(64) },
    cost: { path: "/models/cost", sha256: "c".repeat(64) },
  },
  systems: [
    { name: "base", kind: "base", base: "/models/base", sha256: "a".repeat(64) },
    {
      name: "midpo",
      kind: "router",
      base: "/models/base",
      safety: "/s",
      helpfulness: "/h",
      router: "/r",
      sha256: "b".repeat(64),
    },
  ],
  sets: [
    {
      name: "harmful",
      path: "/data/harmful.csv",
      sha256: "d".repeat(64),
      count: 4,
      labels: { safe: 0, unsafe: 4, none: 0 },
      categories: ["<script>|weapons"],
    },
  ],
  metrics: [
    {
      system: "base",
      set: "harmful",
      ...metrics({}),
      categories: [{ category: "<script>|weapons", ...metrics({ count: 4 }) }],
    },
    {
      system: "midpo",
      set: "harmful",
      ...metrics({ helpfulness: 2, safety: -1.125, harmlessRate: 1, winRate: win }),
      categories: [{ category: "<script>|weapons", ...metrics({ winRate: win }) }],
    },
  ],
  gates: [
    {
      system: "midpo",
      set: "harmful",
      tokens: 10,
      meanAlpha: [0.25, 0.5],
      meanBeta: [0.75, 0.625],
      binEdges: [0, 0.5],
      alphaHistogram: [15, 5],
      betaHistogram: [4, 16],
    },
  ],
  work: { generated: [], scored: [] },
};

describe("comparison table", () => {
  const table = formatComparisonTable(results);
  const lines = table.split("\n");

  it("has a header, a rule and one row per system", () => {
    expect(lines[0]).toMatch(/^Set\s+System\s+n\s+Helpfulness\s+Safety\s+Harmless/);
    expect(lines[1]).toMatch(/^-+\s+-+/);
    expect(lines[2]).toMatch(/^harmful\s+base\s+4\s+1\.500\s+-0\.250\s+75\.0%/);
    expect(lines[3]).toMatch(/^harmful\s+midpo\s+4\s+2\.000\s+-1\.125\s+100\.0%/);
  });

  it("shows the win rate with its interval, and - where there is none", () => {
    expect(lines[3]).toContain("62.5% [25.0, 100.0]");
    expect(lines[2].trimEnd().endsWith("-")).toBe(true);
  });

  it("names the baseline", () => {
    expect(table).toContain('win rates against "base"');
  });

  it("right-aligns numbers under their header", () => {
    const end = lines[0].indexOf("Helpfulness") + "Helpfulness".length;
    expect(lines[2].slice(end - 5, end)).toBe("1.500");
    expect(lines[3].slice(end - 5, end)).toBe("2.000");
  });
});

describe("markdown report", () => {
  const markdown = renderMarkdown(results);

  it("has a metrics row per system", () => {
    expect(markdown).toContain(
      "| midpo | 4 | 2.000 | -1.125 | 100.0% | 25.0% | - | 25.0% | 62.5% [25.0, 100.0] |",
    );
  });

  it("escapes pipes in category names", () => {
    expect(markdown).toContain("| <script>\\|weapons | midpo |");
  });

  it("lists gate means per layer", () => {
    expect(markdown).toContain("| harmful | 1 | 0.500 | 0.625 |");
  });

  it("states how responses were generated", () => {
    expect(markdown).toContain("sampling at temperature 0.7, seed 3, at most 64 new tokens");
  });
});

describe("html report", () => {
  it("inlines three SVG charts and no scripts or links", async () => {
    const html = await renderHtml(results);
    expect(html.match(/<svg/g)).toHaveLength(3);
    expect(html).not.toMatch(/<script/i);
    expect(html).not.toMatch(/<link/i);
    expect(html).not.toMatch(/(src|href)="https?:/i);
  });

  it("escapes names", async () => {
    const html = await renderHtml(results);
    expect(html).toContain("&lt;script&gt;|weapons");
  });

  it("draws no gate charts without a router", async () => {
    const html = await renderHtml({ ...results, gates: [] });
    expect(html.match(/<svg/g)).toHaveLength(1);
  });

  it("plots one point per system and set", () => {
    const spec = tradeOffSpec(results) as { data: { values: unknown[] } };
    expect(spec.data.values).toEqual([
      { system: "base", set: "harmful", helpfulness: 1.5, safety: -0.25 },
      { system: "midpo", set: "harmful", helpfulness: 2, safety: -1.125 },
    ]);
  });
});

describe("report files", () => {
  it("writes the three files and no temporary ones", async () => {
    const out = join(work, "out");
    await writeReports(out, results);
    expect(readdirSync(out).sort()).toEqual(["report.html", "report.md", "results.json"]);
    expect(JSON.parse(readFileSync(join(out, "results.json"), "utf8"))).toEqual(results);
    expect(existsSync(join(out, "report.md"))).toBe(true);
  });
});
