// Router gate statistics over generated tokens: per layer, the mean of α (safety expert) and
// β (helpfulness expert), and histograms of the per-token values.
//
// Each generated token counts once, with the gates at the position whose logits chose it: the
// last prompt token for the first generated token, then each fed-back token for the next one.
// A final EOS counts too, since the router chose it like any other token. Prompt tokens before
// the last are not counted, because their gates do not decide any generated token.

import type { Generation } from "../generate/generate.js";

/** Equal-width bins over [0, 1]. Gates are sigmoid outputs, so every value falls in one. */
export const GATE_HISTOGRAM_BINS = 20;

type Outputs = Record<string, { data: unknown; dims: readonly number[] }>;

export interface GateStats {
  /** Generated tokens counted (the same for every layer). */
  tokens: number;
  /** Per layer: sums of α and β over the counted tokens. */
  alphaSum: number[];
  betaSum: number[];
  /** Per layer: token counts in GATE_HISTOGRAM_BINS equal bins over [0, 1]. */
  alphaHistogram: number[][];
  betaHistogram: number[][];
}

export function emptyGateStats(layers: number): GateStats {
  const zeros = () => new Array<number>(layers).fill(0);
  const bins = () =>
    Array.from({ length: layers }, () => new Array<number>(GATE_HISTOGRAM_BINS).fill(0));
  return {
    tokens: 0,
    alphaSum: zeros(),
    betaSum: zeros(),
    alphaHistogram: bins(),
    betaHistogram: bins(),
  };
}

/** Adds `b` into `a` (both over the same number of layers). */
export function mergeGateStats(a: GateStats, b: GateStats): void {
  a.tokens += b.tokens;
  for (let l = 0; l < a.alphaSum.length; l++) {
    a.alphaSum[l] += b.alphaSum[l];
    a.betaSum[l] += b.betaSum[l];
    for (let k = 0; k < GATE_HISTOGRAM_BINS; k++) {
      a.alphaHistogram[l][k] += b.alphaHistogram[l][k];
      a.betaHistogram[l][k] += b.betaHistogram[l][k];
    }
  }
}

function binOf(value: number): number {
  return Math.min(GATE_HISTOGRAM_BINS - 1, Math.max(0, Math.floor(value * GATE_HISTOGRAM_BINS)));
}

/**
 * Collects gates during one `generate` call: pass `onOutputs` to generate, then `finish` with
 * its result. Until then the gates of every row and step are kept, [step][layer][row], because
 * whether a row was still generating at a step is known only from the result.
 */
export class GateCollector {
  private readonly alpha: Float32Array[][] = [];
  private readonly beta: Float32Array[][] = [];

  constructor(readonly layers: number) {}

  readonly onOutputs = (outputs: Outputs, _mask?: number[][], sampled = true): void => {
    if (!sampled) return; // an earlier part of a long prompt
    const alphas: Float32Array[] = [];
    const betas: Float32Array[] = [];
    for (let l = 0; l < this.layers; l++) {
      alphas.push(lastColumn(outputs, `gate.alpha.${l}`));
      betas.push(lastColumn(outputs, `gate.beta.${l}`));
    }
    this.alpha.push(alphas);
    this.beta.push(betas);
  };

  /**
   * Returns the statistics of the tokens that were generated. Row r was generating at steps
   * 0 .. n_r - 1, with n_r its token count plus one when it ended with EOS.
   */
  finish(generations: readonly Generation[]): GateStats {
    const stats = emptyGateStats(this.layers);
    generations.forEach((g, row) => {
      const steps = g.tokens.length + (g.finishReason === "eos" ? 1 : 0);
      for (let step = 0; step < steps; step++) {
        for (let l = 0; l < this.layers; l++) {
          const a = this.alpha[step][l][row];
          const b = this.beta[step][l][row];
          stats.alphaSum[l] += a;
          stats.betaSum[l] += b;
          stats.alphaHistogram[l][binOf(a)]++;
          stats.betaHistogram[l][binOf(b)]++;
        }
      }
      stats.tokens += steps;
    });
    return stats;
  }
}

/** Returns the gate of each row at the last position of the run, from a [batch, width] output. */
function lastColumn(outputs: Outputs, name: string): Float32Array {
  const output = outputs[name];
  if (output === undefined) {
    throw new Error(`generation returned no ${name}; build the router model with exposed gates`);
  }
  const [batch, width] = output.dims;
  const data = output.data as Float32Array;
  return Float32Array.from({ length: batch }, (_, r) => data[r * width + width - 1]);
}

/** Summary for reports: per-layer means, and histograms summed over layers. */
export interface GateSummary {
  tokens: number;
  meanAlpha: number[];
  meanBeta: number[];
  /** Lower edges of the histogram bins. The last bin ends at 1. */
  binEdges: number[];
  /** Counts of (token, layer) values per bin, over every layer. */
  alphaHistogram: number[];
  betaHistogram: number[];
}

export function summariseGates(stats: GateStats): GateSummary {
  const sumOverLayers = (histograms: number[][]) =>
    Array.from({ length: GATE_HISTOGRAM_BINS }, (_, k) =>
      histograms.reduce((sum, h) => sum + h[k], 0),
    );
  return {
    tokens: stats.tokens,
    meanAlpha: stats.alphaSum.map((s) => s / stats.tokens),
    meanBeta: stats.betaSum.map((s) => s / stats.tokens),
    binEdges: Array.from({ length: GATE_HISTOGRAM_BINS }, (_, k) => k / GATE_HISTOGRAM_BINS),
    alphaHistogram: sumOverLayers(stats.alphaHistogram),
    betaHistogram: sumOverLayers(stats.betaHistogram),
  };
}
