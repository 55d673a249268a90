// Choosing the next token from a row of logits, in the order transformers applies its logits
// processors: repetition penalty, then temperature, top-k and top-p, then sampling (or argmax
// when sampling is off).

export interface SamplingOptions {
  /** 0 means greedy decoding (argmax); otherwise logits are divided by it before sampling. */
  temperature: number;
  /** Keep only the k most likely tokens; 0 disables. */
  topK: number;
  /** Keep the smallest set of tokens whose probability sums to at least p; 1 disables. */
  topP: number;
  /** CTRL-style penalty on tokens already in the sequence; 1 disables. */
  repetitionPenalty: number;
}

export const DEFAULT_SAMPLING: SamplingOptions = {
  temperature: 0,
  topK: 0,
  topP: 1,
  repetitionPenalty: 1,
};

/** A seeded 32-bit generator (mulberry32): small, fast and the same on every platform. */
export class Rng {
  private state: number;

  constructor(seed: number) {
    this.state = seed >>> 0;
  }

  /** A float in [0, 1). */
  next(): number {
    this.state = (this.state + 0x6d2b79f5) >>> 0;
    let t = this.state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }

  getState(): number {
    return this.state;
  }

  setState(state: number): void {
    this.state = state >>> 0;
  }
}

/** Divides positive logits and multiplies negative ones by `penalty` for every seen token. */
export function applyRepetitionPenalty(
  logits: Float32Array,
  seen: Iterable<number>,
  penalty: number,
): void {
  if (penalty === 1) return;
  for (const id of new Set(seen)) {
    const v = logits[id];
    logits[id] = v > 0 ? v / penalty : v * penalty;
  }
}

export function argmax(values: Float32Array): number {
  let best = 0;
  for (let i = 1; i < values.length; i++) if (values[i] > values[best]) best = i;
  return best;
}

/**
 * Picks the next token; `logits` is modified in place. Work is O(vocab) except for the
 * sorts that top-k and top-p need, which run on a typed-array copy and on the few tokens
 * that can survive top-p, so sampling stays cheap next to a decode step.
 */
export function sampleToken(
  logits: Float32Array,
  seen: Iterable<number>,
  options: SamplingOptions,
  rng: Rng,
): number {
  applyRepetitionPenalty(logits, seen, options.repetitionPenalty);
  if (options.temperature <= 0) return argmax(logits);

  const vocab = logits.length;
  const maxLogit = logits[argmax(logits)];
  const weights = new Float64Array(vocab);
  for (let i = 0; i < vocab; i++) {
    weights[i] = Math.exp((logits[i] - maxLogit) / options.temperature);
  }

  if (options.topK > 0 && options.topK < vocab) {
    const kth = Float32Array.from(logits).sort()[vocab - options.topK];
    for (let i = 0; i < vocab; i++) if (logits[i] < kth) weights[i] = 0;
  }

  if (options.topP < 1) keepTopP(weights, options.topP);

  let total = 0;
  for (let i = 0; i < vocab; i++) total += weights[i];
  let r = rng.next() * total;
  let last = 0;
  for (let i = 0; i < vocab; i++) {
    if (weights[i] === 0) continue;
    last = i;
    r -= weights[i];
    if (r < 0) return i;
  }
  return last;
}

/**
 * Zeroes every weight outside the smallest set of most likely tokens whose share of the
 * total reaches `topP`. Tokens below (1 - topP) / vocab of the total are all in the dropped
 * tail (together they weigh at most 1 - topP), so only the rest need sorting.
 */
function keepTopP(weights: Float64Array, topP: number): void {
  let total = 0;
  for (const w of weights) total += w;
  const floor = ((1 - topP) * total) / weights.length;
  const candidates: number[] = [];
  for (let i = 0; i < weights.length; i++) if (weights[i] > floor) candidates.push(i);
  candidates.sort((a, b) => weights[b] - weights[a]);

  const keep = new Uint8Array(weights.length);
  let cumulative = 0;
  for (const id of candidates) {
    keep[id] = 1;
    cumulative += weights[id];
    if (cumulative >= topP * total) break;
  }
  for (let i = 0; i < weights.length; i++) if (!keep[i]) weights[i] = 0;
}
