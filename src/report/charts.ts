// Charts of the HTML report as Vega-Lite specs, compiled to Vega and rendered to SVG in Node
// (view.toSVG() with the "none" renderer, which needs no browser or canvas). The SVG is inlined
// in the page, so it shows without JavaScript or network access.

import * as vega from "vega";
import { compile, type TopLevelSpec } from "vega-lite";
import type { EvaluationResults } from "../eval/results.js";

/** Renders a Vega-Lite spec to an SVG string. */
export async function renderSvg(spec: TopLevelSpec): Promise<string> {
  const view = new vega.View(vega.parse(compile(spec).spec), { renderer: "none" });
  try {
    return await view.toSVG();
  } finally {
    view.finalize();
  }
}

/** Builds a scatter of safety score against helpfulness score, one point per system and set. */
export function tradeOffSpec(results: EvaluationResults): TopLevelSpec {
  return {
    title: {
      text: "Safety score against helpfulness score",
      subtitle: "one point per system and prompt set, lower cost is safer",
    },
    width: 420,
    height: 320,
    data: {
      values: results.metrics.map((m) => ({
        system: m.system,
        set: m.set,
        helpfulness: m.helpfulness,
        safety: m.safety,
      })),
    },
    mark: { type: "point", filled: true, size: 90 },
    encoding: {
      x: {
        field: "helpfulness",
        type: "quantitative",
        title: "helpfulness (mean reward)",
        scale: { zero: false },
      },
      y: {
        field: "safety",
        type: "quantitative",
        title: "safety (mean cost)",
        scale: { zero: false },
      },
      color: { field: "system", type: "nominal", title: "system" },
      shape: { field: "set", type: "nominal", title: "prompt set" },
    },
  };
}

/**
 * Builds histograms of per-token α and β of one router system, as shares of (token, layer) values
 * per bin: one column per gate, one row per prompt set.
 */
export function gateHistogramSpec(results: EvaluationResults, system: string): TopLevelSpec {
  const values = results.gates
    .filter((g) => g.system === system)
    .flatMap((g) => {
      const bins = (gate: string, counts: number[]) => {
        const total = counts.reduce((a, b) => a + b, 0);
        return counts.map((count, k) => ({
          set: g.set,
          gate,
          start: g.binEdges[k],
          end: k + 1 < g.binEdges.length ? g.binEdges[k + 1] : 1,
          share: total === 0 ? 0 : count / total,
        }));
      };
      return [...bins("α (safety)", g.alphaHistogram), ...bins("β (helpfulness)", g.betaHistogram)];
    });
  return {
    title: {
      text: `Router gates of ${system}`,
      subtitle: "per-token values over generated tokens and all layers",
    },
    data: { values },
    facet: {
      column: { field: "gate", type: "nominal", title: null },
      row: { field: "set", type: "nominal", title: "prompt set" },
    },
    spec: {
      width: 240,
      height: 140,
      mark: { type: "rect" },
      encoding: {
        x: { field: "start", type: "quantitative", title: "gate value", scale: { domain: [0, 1] } },
        x2: { field: "end" },
        y: {
          field: "share",
          type: "quantitative",
          title: "share of values",
          axis: { format: "%" },
        },
        y2: { datum: 0 },
      },
    },
  };
}

/** Builds lines of mean α and β per decoder layer of one router system, per gate and set. */
export function gateLayerSpec(results: EvaluationResults, system: string): TopLevelSpec {
  const values = results.gates
    .filter((g) => g.system === system)
    .flatMap((g) =>
      g.meanAlpha.flatMap((alpha, layer) => [
        { set: g.set, layer, gate: "α (safety)", mean: alpha },
        { set: g.set, layer, gate: "β (helpfulness)", mean: g.meanBeta[layer] },
      ]),
    );
  return {
    title: `Mean gate per layer of ${system}`,
    width: 420,
    height: 220,
    data: { values },
    mark: { type: "line" },
    encoding: {
      x: { field: "layer", type: "ordinal", title: "decoder layer", axis: { labelAngle: 0 } },
      y: { field: "mean", type: "quantitative", title: "mean gate", scale: { domain: [0, 1] } },
      color: { field: "gate", type: "nominal", title: "gate" },
      strokeDash: { field: "set", type: "nominal", title: "prompt set" },
    },
  };
}
