import { describe, expect, it } from "vitest";
import type { Generation } from "../src/generate/generate.js";
import {
  emptyGateStats,
  GATE_HISTOGRAM_BINS,
  GateCollector,
  mergeGateStats,
  summariseGates,
} from "../src/eval/gates.js";

/** Outputs of one model run: gates [batch, width] per layer, from row-major rows. */
function run(alpha: number[][][], beta: number[][][]) {
  const outputs: Record<string, { data: Float32Array; dims: number[] }> = {};
  alpha.forEach((rows, layer) => {
    const dims = [rows.length, rows[0].length];
    outputs[`gate.alpha.${layer}`] = { data: Float32Array.from(rows.flat()), dims };
    outputs[`gate.beta.${layer}`] = { data: Float32Array.from(beta[layer].flat()), dims };
  });
  return outputs;
}

describe("gate collector", () => {
  // Two rows, one layer. Prefill has width 3 (only its last column counts), then two decode
  // steps of width 1. Row 0 stops with EOS at step 1, row 1 runs to the length limit of 3.
  const collector = new GateCollector(1);
  collector.onOutputs(
    run(
      [
        [
          [0.9, 0.9, 0.125],
          [0.9, 0.9, 0.625],
        ],
      ],
      [
        [
          [0, 0, 0.5],
          [0, 0, 0.5],
        ],
      ],
    ),
  );
  collector.onOutputs(run([[[0.375], [0.875]]], [[[0.25], [0.75]]]));
  collector.onOutputs(run([[[0.99], [0.0625]]], [[[0.99], [0.25]]]));
  const generations: Generation[] = [
    { tokens: [7], finishReason: "eos" },
    { tokens: [7, 8, 9], finishReason: "length" },
  ];
  const stats = collector.finish(generations);

  it("counts one gate per generated token and the EOS", () => {
    expect(stats.tokens).toBe(2 + 3);
  });

  it("sums only the positions that chose a token", () => {
    // Row 0 counts steps 0 and 1, row 1 steps 0, 1 and 2. The prompt columns and row 0's step 2
    // are left out.
    expect(stats.alphaSum[0]).toBeCloseTo(0.125 + 0.375 + 0.625 + 0.875 + 0.0625, 6);
    expect(stats.betaSum[0]).toBeCloseTo(0.5 + 0.25 + 0.5 + 0.75 + 0.25, 6);
  });

  it("bins values into equal bins over [0, 1]", () => {
    const alpha = stats.alphaHistogram[0];
    expect(alpha.reduce((a, b) => a + b, 0)).toBe(5);
    expect(alpha[Math.floor(0.125 * GATE_HISTOGRAM_BINS)]).toBe(1);
    expect(alpha[Math.floor(0.0625 * GATE_HISTOGRAM_BINS)]).toBe(1);
    expect(stats.betaHistogram[0][Math.floor(0.5 * GATE_HISTOGRAM_BINS)]).toBe(2);
    expect(stats.betaHistogram[0][Math.floor(0.25 * GATE_HISTOGRAM_BINS)]).toBe(2);
  });

  it("summarises means and merged histograms", () => {
    const total = emptyGateStats(1);
    mergeGateStats(total, stats);
    mergeGateStats(total, stats);
    const summary = summariseGates(total);
    expect(summary.tokens).toBe(10);
    expect(summary.meanAlpha[0]).toBeCloseTo(2.0625 / 5, 6);
    expect(summary.meanBeta[0]).toBeCloseTo(2.25 / 5, 6);
    expect(summary.binEdges).toHaveLength(GATE_HISTOGRAM_BINS);
    expect(summary.alphaHistogram.reduce((a, b) => a + b, 0)).toBe(10);
  });

  it("puts a gate of exactly 1 in the last bin", () => {
    const edge = new GateCollector(1);
    edge.onOutputs(run([[[1]]], [[[0]]]));
    const one = edge.finish([{ tokens: [3], finishReason: "length" }]);
    expect(one.alphaHistogram[0][GATE_HISTOGRAM_BINS - 1]).toBe(1);
    expect(one.betaHistogram[0][0]).toBe(1);
  });

  it("fails when the model exposes no gates", () => {
    const plain = new GateCollector(1);
    expect(() => plain.onOutputs({ logits: { data: new Float32Array(2), dims: [1, 2] } })).toThrow(
      /no gate.alpha.0/,
    );
  });
});
