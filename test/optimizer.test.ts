import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";

import { MidpoError } from "../src/errors.js";
import { AdamW, clipGradNorm, globalNorm, type NamedArrays } from "../src/train/optimizer.js";
import { learningRate, warmupStepsFromRatio } from "../src/train/schedule.js";

/** Written by scripts/reference/optimizer_reference.py with torch 1.13. */
interface AdamWFixture {
  hyperparameters: {
    base_lr: number;
    betas: [number, number];
    eps: number;
    weight_decay: number;
    max_grad_norm: number;
    schedule: "cosine";
    warmup_steps: number;
    total_steps: number;
  };
  shapes: Record<string, number[]>;
  initial_params: Record<string, number[]>;
  steps: { grads: Record<string, number[]>; lr: number; pre_clip_norm: number }[];
  final: {
    step: number;
    params: Record<string, number[]>;
    exp_avg: Record<string, number[]>;
    exp_avg_sq: Record<string, number[]>;
  };
}

const fixture = JSON.parse(
  readFileSync(new URL("./fixtures/optimizer/adamw.json", import.meta.url), "utf8"),
) as AdamWFixture;

function toFloat32(values: Record<string, number[]>): NamedArrays {
  const arrays: NamedArrays = {};
  for (const [name, list] of Object.entries(values)) {
    arrays[name] = Float32Array.from(list);
  }
  return arrays;
}

function maxAbsDifference(actual: Float32Array, expected: number[]): number {
  expect(actual.length).toBe(expected.length);
  let max = 0;
  for (let i = 0; i < expected.length; i++) {
    max = Math.max(max, Math.abs(actual[i] - expected[i]));
  }
  return max;
}

/** Replays the fixture's run: clip, AdamW step at the scheduled learning rate, repeat. */
function replayFixture(): {
  optimizer: AdamW;
  params: NamedArrays;
  lrs: number[];
  norms: number[];
} {
  const h = fixture.hyperparameters;
  const params = toFloat32(fixture.initial_params);
  const optimizer = new AdamW(params, {
    lr: h.base_lr,
    betas: h.betas,
    eps: h.eps,
    weightDecay: h.weight_decay,
  });
  const lrs: number[] = [];
  const norms: number[] = [];

  fixture.steps.forEach((record, step) => {
    const grads = toFloat32(record.grads);
    norms.push(clipGradNorm(grads, h.max_grad_norm));
    const lr = learningRate(h.schedule, step, {
      baseLr: h.base_lr,
      warmupSteps: h.warmup_steps,
      totalSteps: h.total_steps,
    });
    lrs.push(lr);
    optimizer.step(grads, lr);
  });
  return { optimizer, params, lrs, norms };
}

describe("AdamW against torch", () => {
  const { optimizer, params, lrs, norms } = replayFixture();

  it("schedule gives the LambdaLR learning rates", () => {
    fixture.steps.forEach((record, step) => {
      expect(lrs[step], `step ${step}`).toBeCloseTo(record.lr, 15);
    });
  });

  it("clipGradNorm returns the pre-clip norms", () => {
    fixture.steps.forEach((record, step) => {
      expect(Math.abs(norms[step] - record.pre_clip_norm), `step ${step}`).toBeLessThan(1e-6);
    });
  });

  it("final parameters match within 1e-6", () => {
    for (const [name, expected] of Object.entries(fixture.final.params)) {
      expect(maxAbsDifference(params[name], expected), name).toBeLessThan(1e-6);
    }
  });

  it("moment estimates match torch's state", () => {
    const state = optimizer.state();
    expect(state.step).toBe(fixture.final.step);
    for (const name of Object.keys(fixture.shapes)) {
      expect(maxAbsDifference(state.expAvg[name], fixture.final.exp_avg[name]), name).toBeLessThan(
        1e-7,
      );
      expect(
        maxAbsDifference(state.expAvgSq[name], fixture.final.exp_avg_sq[name]),
        name,
      ).toBeLessThan(1e-8);
    }
  });

  it("fixture clips some steps but not all", () => {
    const clipped = fixture.steps.map((record) => record.pre_clip_norm > 1);
    expect(clipped).toContain(true);
    expect(clipped).toContain(false);
  });
});

describe("AdamW", () => {
  it("first step moves each parameter by about lr", () => {
    // With zero state, m_hat = g and v_hat = g^2 after bias correction, so the step is
    // lr * g / (|g| + eps) = lr * sign(g) when weight decay is 0.
    const param = Float32Array.from([1, -2, 3]);
    const optimizer = new AdamW({ param }, { lr: 0.1, weightDecay: 0 });
    optimizer.step({ param: Float32Array.from([0.5, -4, 1e-3]) });
    expect(param[0]).toBeCloseTo(0.9, 6);
    expect(param[1]).toBeCloseTo(-1.9, 6);
    expect(param[2]).toBeCloseTo(2.9, 4);
  });

  it("weight decay is decoupled from the gradient", () => {
    // With a zero gradient the Adam term is 0 / (0 + eps) = 0, so only p *= 1 - lr * wd remains.
    const param = Float32Array.from([2, -4]);
    const optimizer = new AdamW({ param }, { lr: 0.1, weightDecay: 0.5 });
    optimizer.step({ param: new Float32Array(2) });
    expect(param[0]).toBeCloseTo(2 * 0.95, 6);
    expect(param[1]).toBeCloseTo(-4 * 0.95, 6);
  });

  it("step uses the default lr when none given", () => {
    const a = Float32Array.from([1]);
    const b = Float32Array.from([1]);
    new AdamW({ a }, { lr: 0.2 }).step({ a: Float32Array.from([1]) });
    new AdamW({ b }, { lr: 0.7 }).step({ b: Float32Array.from([1]) }, 0.2);
    expect(a[0]).toBe(b[0]);
  });

  it("state and loadState resume exactly", () => {
    const grads = (k: number): NamedArrays => ({
      w: Float32Array.from([0.3 * k, -0.2, 0.1 / k]),
    });
    const straight = { w: Float32Array.from([1, 2, 3]) };
    const straightOptimizer = new AdamW(straight, { lr: 0.01, betas: [0.9, 0.95] });
    for (let k = 1; k <= 4; k++) {
      straightOptimizer.step(grads(k));
    }

    const first = { w: Float32Array.from([1, 2, 3]) };
    const firstOptimizer = new AdamW(first, { lr: 0.01, betas: [0.9, 0.95] });
    firstOptimizer.step(grads(1));
    firstOptimizer.step(grads(2));
    const saved = firstOptimizer.state();

    const resumed = { w: Float32Array.from(first.w) };
    const resumedOptimizer = new AdamW(resumed, { lr: 0.01, betas: [0.9, 0.95] });
    resumedOptimizer.loadState(saved);
    expect(resumedOptimizer.steps).toBe(2);
    resumedOptimizer.step(grads(3));
    resumedOptimizer.step(grads(4));

    expect(Array.from(resumed.w)).toEqual(Array.from(straight.w));
  });

  it("state returns copies", () => {
    const w = Float32Array.from([1]);
    const optimizer = new AdamW({ w }, { lr: 0.1 });
    optimizer.step({ w: Float32Array.from([1]) });
    const state = optimizer.state();
    state.expAvg.w[0] = 123;
    expect(optimizer.state().expAvg.w[0]).not.toBe(123);
  });

  it("loadState rejects mismatched state", () => {
    const optimizer = new AdamW({ w: new Float32Array(3) }, { lr: 0.1 });
    const good = {
      step: 1,
      expAvg: { w: new Float32Array(3) },
      expAvgSq: { w: new Float32Array(3) },
    };

    const wrongLength = { ...good, expAvgSq: { w: new Float32Array(4) } };
    expect(() => optimizer.loadState(wrongLength)).toThrow(MidpoError);
    expect(() => optimizer.loadState(wrongLength)).toThrow(/exp_avg_sq of "w" has 4 elements/);

    const missing = { ...good, expAvg: {} };
    expect(() => optimizer.loadState(missing)).toThrow(/no exp_avg for parameter "w"/);

    const extra = { ...good, expAvg: { w: new Float32Array(3), v: new Float32Array(1) } };
    expect(() => optimizer.loadState(extra)).toThrow(/unknown parameters: v/);

    expect(() => optimizer.loadState({ ...good, step: -1 })).toThrow(/step -1/);
    expect(optimizer.steps).toBe(0);
  });

  it("step rejects missing or mis-sized gradients", () => {
    const optimizer = new AdamW({ w: new Float32Array(2) }, { lr: 0.1 });
    expect(() => optimizer.step({})).toThrow(/no gradient for parameter "w"/);
    expect(() => optimizer.step({ w: new Float32Array(3) })).toThrow(/has 3 elements/);
  });

  it("rejects invalid hyperparameters", () => {
    const params = { w: new Float32Array(1) };
    expect(() => new AdamW(params, { lr: -1 })).toThrow(MidpoError);
    expect(() => new AdamW(params, { lr: 0.1, betas: [1, 0.9] })).toThrow(/betas \(1, 0.9\)/);
    expect(() => new AdamW(params, { lr: 0.1, eps: -1 })).toThrow(/eps -1/);
    expect(() => new AdamW(params, { lr: 0.1, weightDecay: Number.NaN })).toThrow(/weight decay/);
  });
});

describe("clipGradNorm", () => {
  it("scales down to maxNorm", () => {
    const grads = { a: Float32Array.from([3, 0]), b: Float32Array.from([4]) };
    const norm = clipGradNorm(grads, 1);
    expect(norm).toBe(5);
    const scale = 1 / (5 + 1e-6);
    expect(grads.a[0]).toBeCloseTo(3 * scale, 7);
    expect(grads.b[0]).toBeCloseTo(4 * scale, 7);
    expect(globalNorm([grads.a, grads.b])).toBeCloseTo(1, 6);
  });

  it("leaves small gradients unchanged", () => {
    const grads = [Float32Array.from([0.3, 0.4])];
    expect(clipGradNorm(grads, 1)).toBeCloseTo(0.5, 7);
    expect(Array.from(grads[0])).toEqual([Math.fround(0.3), Math.fround(0.4)]);
  });

  it("leaves gradients unchanged for a non-finite norm", () => {
    const grads = [Float32Array.from([Number.POSITIVE_INFINITY, 1])];
    expect(clipGradNorm(grads, 1)).toBe(Number.POSITIVE_INFINITY);
    expect(grads[0][1]).toBe(1);
  });

  it("sums squares in float64", () => {
    // 2^20 values of 1e-3: a float32 running sum of squares stalls well below the exact 1.048576.
    const grads = [new Float32Array(1 << 20).fill(1e-3)];
    expect(globalNorm(grads)).toBeCloseTo(Math.fround(1e-3) * 1024, 9);
  });

  it("rejects a non-positive maxNorm", () => {
    expect(() => clipGradNorm([new Float32Array(1)], 0)).toThrow(MidpoError);
  });
});

describe("learningRate", () => {
  const base = { baseLr: 2, warmupSteps: 2, totalSteps: 10 };

  it("warms up linearly from 0", () => {
    for (const kind of ["constant", "linear", "cosine"] as const) {
      expect(learningRate(kind, 0, base), kind).toBe(0);
      expect(learningRate(kind, 1, base), kind).toBe(1);
      expect(learningRate(kind, 2, base), kind).toBe(2);
    }
  });

  it("constant stays at baseLr", () => {
    expect(learningRate("constant", 7, base)).toBe(2);
    expect(learningRate("constant", 50, base)).toBe(2);
    expect(learningRate("constant", 0, { ...base, warmupSteps: 0 })).toBe(2);
  });

  it("linear decays to 0 at totalSteps", () => {
    // (total - step) / (total - warmup): 8/8, 4/8, 1/8, 0.
    expect(learningRate("linear", 2, base)).toBe(2);
    expect(learningRate("linear", 6, base)).toBe(1);
    expect(learningRate("linear", 9, base)).toBe(0.25);
    expect(learningRate("linear", 10, base)).toBe(0);
    expect(learningRate("linear", 12, base)).toBe(0);
  });

  it("cosine follows half a period", () => {
    // 0.5 * (1 + cos(pi * progress)), progress = (step - 2) / 8.
    expect(learningRate("cosine", 4, base)).toBeCloseTo(2 * (0.5 + Math.SQRT2 / 4), 14);
    expect(learningRate("cosine", 6, base)).toBeCloseTo(1, 14);
    expect(learningRate("cosine", 10, base)).toBeCloseTo(0, 14);
  });

  it("cosine rises again past totalSteps", () => {
    // transformers applies no clamp beyond max(0, ...): progress 1.5 gives multiplier 0.5.
    expect(learningRate("cosine", 14, base)).toBeCloseTo(1, 14);
  });

  it("handles warmup equal to total", () => {
    const options = { baseLr: 1, warmupSteps: 5, totalSteps: 5 };
    expect(learningRate("linear", 4, options)).toBe(0.8);
    expect(learningRate("linear", 5, options)).toBe(0);
    expect(learningRate("cosine", 5, options)).toBe(1);
  });

  it("rejects invalid steps", () => {
    expect(() => learningRate("linear", -1, base)).toThrow(MidpoError);
    expect(() => learningRate("linear", 1.5, base)).toThrow(/step is 1.5/);
    expect(() => learningRate("linear", 0, { ...base, totalSteps: -3 })).toThrow(/totalSteps/);
    expect(() => learningRate("linear", 0, { ...base, baseLr: Number.NaN })).toThrow(
      /Learning rate NaN/,
    );
  });
});

describe("warmupStepsFromRatio", () => {
  it("rounds up like transformers", () => {
    expect(warmupStepsFromRatio(0.03, 100)).toBe(3);
    expect(warmupStepsFromRatio(0.03, 1000)).toBe(30);
    expect(warmupStepsFromRatio(0.03, 10)).toBe(1);
    expect(warmupStepsFromRatio(0, 10)).toBe(0);
  });

  it("keeps the float product's rounding", () => {
    // 0.07 * 100 is 7.000000000000001 in float64, and transformers takes its ceil.
    expect(warmupStepsFromRatio(0.07, 100)).toBe(8);
  });

  it("rejects ratios outside [0, 1]", () => {
    expect(() => warmupStepsFromRatio(1.5, 10)).toThrow(/Warmup ratio 1.5/);
    expect(() => warmupStepsFromRatio(-0.1, 10)).toThrow(MidpoError);
  });
});
