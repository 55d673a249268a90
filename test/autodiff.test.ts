// Every gradient rule against central finite differences, in float64 (ORT has double
// kernels for these ops) unless the op is float32-only (FusedMatMul), where the tolerance is
// looser and stated at the case.

import { describe, expect, it } from "vitest";
import { gradients } from "../src/graph/autodiff.js";
import { Graph, type Tensor } from "../src/graph/graph.js";
import * as op from "../src/graph/ops.js";
import type { DType } from "../src/graph/types.js";
import { Rng } from "../src/generate/sampling.js";
import { Session, tensor } from "../src/runtime/session.js";

interface InputSpec {
  /** Shape declared in the graph (may be symbolic). */
  declared: (number | string)[];
  /** Shape fed at run time. */
  dims: number[];
  /** Range of the random values; positive ranges for log, sqrt and the like. */
  low?: number;
  high?: number;
  /** Fixed values instead of random ones (e.g. indices). */
  values?: number[];
  dtype?: DType;
  differentiable?: boolean;
}

interface Case {
  name: string;
  inputs: InputSpec[];
  build: (xs: Tensor[]) => Tensor;
  dtype?: "float32" | "float64";
  tolerance?: number;
  /** Finite-difference step; float32 paths need a large one. */
  step?: number;
}

function randomValues(n: number, low: number, high: number, rng: Rng): number[] {
  return Array.from({ length: n }, () => low + (high - low) * rng.next());
}

/**
 * Builds loss = sum(f(x) * w) for a fixed random w of f's output shape (so every output
 * element gets a different weight), appends the gradients, and compares each gradient entry
 * with (loss(x + h) - loss(x - h)) / 2h.
 */
async function checkCase(c: Case): Promise<void> {
  const dtype = c.dtype ?? "float64";
  const rng = new Rng(7);
  const g = new Graph();
  const xs = c.inputs.map((spec, i) => g.input(`x${i}`, spec.dtype ?? dtype, spec.declared));
  const y = c.build(xs);
  // Symbolic so that a probe run with w of all-1 dims can read y's run-time shape first.
  const weightsInput = g.input(
    "w",
    dtype,
    y.shape.map((_, i) => `w${i}`),
  );
  const loss = op.reduceSum(op.mul(y, weightsInput), [...Array(y.rank).keys()], false);
  const wrt = xs.filter((_, i) => c.inputs[i].differentiable !== false);
  const grads = gradients(loss, wrt);
  g.output("loss", loss);
  g.output("y", y);
  wrt.forEach((x, i) => g.output(`grad${i}`, grads.get(x)!));

  const session = await Session.create(g);
  const values = c.inputs.map((spec) => {
    const n = spec.dims.reduce((a, b) => a * b, 1);
    return spec.values ?? randomValues(n, spec.low ?? -1, spec.high ?? 1, rng);
  });
  const makeFeeds = (vals: number[][], w: number[], wDims: number[]) => {
    const feeds: Record<string, ReturnType<typeof tensor>> = {};
    c.inputs.forEach((spec, i) => {
      const t = spec.dtype ?? dtype;
      const data =
        t === "int64"
          ? BigInt64Array.from(vals[i], (v) => BigInt(v))
          : t === "float32"
            ? Float32Array.from(vals[i])
            : Float64Array.from(vals[i]);
      feeds[`x${i}`] = tensor(t, data, spec.dims);
    });
    feeds.w = tensor(
      dtype,
      dtype === "float32" ? Float32Array.from(w) : Float64Array.from(w),
      wDims,
    );
    return feeds;
  };

  const probe = await session.run(makeFeeds(values, [0], new Array(y.rank).fill(1)), ["y"]);
  const yDims = [...probe.y.dims];
  const w = randomValues(
    yDims.reduce((a, b) => a * b, 1),
    -1,
    1,
    rng,
  );
  const out = await session.run(makeFeeds(values, w, yDims));

  const h = c.step ?? (dtype === "float64" ? 1e-6 : 1e-2);
  const tolerance = c.tolerance ?? (dtype === "float64" ? 1e-7 : 1e-3);
  let gradIndex = 0;
  for (let i = 0; i < c.inputs.length; i++) {
    if (c.inputs[i].differentiable === false) continue;
    const analytic = Array.from(out[`grad${gradIndex++}`].data as Float64Array, Number);
    expect(analytic.length, `${c.name}: gradient size of input ${i}`).toBe(values[i].length);
    for (let j = 0; j < values[i].length; j++) {
      const plus = values.map((v) => [...v]);
      const minus = values.map((v) => [...v]);
      plus[i][j] += h;
      minus[i][j] -= h;
      const lp = Number((await session.run(makeFeeds(plus, w, yDims), ["loss"])).loss.data[0]);
      const lm = Number((await session.run(makeFeeds(minus, w, yDims), ["loss"])).loss.data[0]);
      const numeric = (lp - lm) / (2 * h);
      const scale = Math.max(1, Math.abs(numeric));
      expect(Math.abs(analytic[j] - numeric) / scale, `${c.name}: d/dx${i}[${j}]`).toBeLessThan(
        tolerance,
      );
    }
  }
  await session.release();
}

const pos = { low: 0.5, high: 2 };
const CASES: Case[] = [
  {
    name: "Add broadcast",
    inputs: [
      { declared: [2, 3], dims: [2, 3] },
      { declared: [3], dims: [3] },
    ],
    build: ([a, b]) => op.add(a, b),
  },
  {
    name: "Sub broadcast",
    inputs: [
      { declared: [2, 3], dims: [2, 3] },
      { declared: [2, 1], dims: [2, 1] },
    ],
    build: ([a, b]) => op.sub(a, b),
  },
  {
    name: "Mul broadcast",
    inputs: [
      { declared: ["n", 3], dims: [2, 3] },
      { declared: [1, 3], dims: [1, 3] },
    ],
    build: ([a, b]) => op.mul(a, b),
  },
  {
    name: "Div",
    inputs: [
      { declared: [2, 3], dims: [2, 3] },
      { declared: [2, 3], dims: [2, 3], ...pos },
    ],
    build: ([a, b]) => op.div(a, b),
  },
  {
    name: "Pow",
    inputs: [{ declared: [4], dims: [4], ...pos }],
    build: ([a]) => op.pow(a, op.scalar(a.graph, 3, "float64")),
  },
  {
    name: "Max",
    inputs: [
      { declared: [5], dims: [5] },
      { declared: [5], dims: [5] },
    ],
    build: ([a, b]) => op.max(a, b),
  },
  { name: "Neg", inputs: [{ declared: [3], dims: [3] }], build: ([a]) => op.neg(a) },
  { name: "Exp", inputs: [{ declared: [3], dims: [3] }], build: ([a]) => op.exp(a) },
  { name: "Log", inputs: [{ declared: [3], dims: [3], ...pos }], build: ([a]) => op.log(a) },
  { name: "Sqrt", inputs: [{ declared: [3], dims: [3], ...pos }], build: ([a]) => op.sqrt(a) },
  {
    name: "Reciprocal",
    inputs: [{ declared: [3], dims: [3], ...pos }],
    build: ([a]) => op.reciprocal(a),
  },
  {
    name: "Sigmoid",
    inputs: [{ declared: [4], dims: [4], low: -3, high: 3 }],
    build: ([a]) => op.sigmoid(a),
  },
  {
    name: "Softplus",
    inputs: [{ declared: [4], dims: [4], low: -3, high: 3 }],
    build: ([a]) => op.softplus(a),
  },
  { name: "Tanh", inputs: [{ declared: [4], dims: [4] }], build: ([a]) => op.tanh(a) },
  {
    name: "Relu",
    inputs: [{ declared: [4], dims: [4], values: [-1, -0.3, 0.2, 1.5] }],
    build: ([a]) => op.relu(a),
  },
  {
    name: "Abs",
    inputs: [{ declared: [4], dims: [4], values: [-1, -0.3, 0.2, 1.5] }],
    build: ([a]) => op.abs(a),
  },
  {
    name: "Where",
    inputs: [
      { declared: [4], dims: [4] },
      { declared: [1], dims: [1] },
    ],
    build: ([a, b]) => op.where(op.greater(a, op.scalar(a.graph, 0, "float64")), op.mul(a, a), b),
  },
  {
    name: "Cast float64 to float32 and back",
    inputs: [{ declared: [3], dims: [3] }],
    build: ([a]) =>
      op.cast(op.mul(op.cast(a, "float32"), op.scalar(a.graph, 2, "float32")), "float64"),
    // Linear, so a large step loses nothing; float32 rounding is ~1e-7 / step.
    step: 1e-2,
    tolerance: 1e-4,
  },
  {
    name: "MatMul batched by 2-D",
    inputs: [
      { declared: ["b", 3, 4], dims: [2, 3, 4] },
      { declared: [4, 5], dims: [4, 5] },
    ],
    build: ([a, b]) => op.matmul(a, b),
  },
  {
    name: "MatMul broadcast batch",
    inputs: [
      { declared: [2, 1, 3, 4], dims: [2, 1, 3, 4] },
      { declared: [1, 2, 4, 2], dims: [1, 2, 4, 2] },
    ],
    build: ([a, b]) => op.matmul(a, b),
  },
  ...[
    [false, true],
    [true, false],
    [true, true],
  ].map(([transA, transB]) => ({
    name: `MatMul float64 transA ${transA} transB ${transB}`,
    inputs: [
      { declared: [2, transA ? 4 : 3, transA ? 3 : 4], dims: [2, transA ? 4 : 3, transA ? 3 : 4] },
      { declared: [transB ? 5 : 4, transB ? 4 : 5], dims: [transB ? 5 : 4, transB ? 4 : 5] },
    ],
    build: ([a, b]: Tensor[]) => op.matmulEx(a, b, { transA, transB }),
  })),
  // FusedMatMul has only float32 kernels. The loss is bilinear, so central differences are
  // exact up to float32 rounding (about 1e-6 relative / h = 1e-2).
  ...[
    [false, true],
    [true, false],
    [true, true],
  ].map(([transA, transB]) => ({
    name: `FusedMatMul float32 transA ${transA} transB ${transB}`,
    dtype: "float32" as const,
    tolerance: 2e-3,
    inputs: [
      { declared: [2, transA ? 4 : 3, transA ? 3 : 4], dims: [2, transA ? 4 : 3, transA ? 3 : 4] },
      { declared: [2, transB ? 5 : 4, transB ? 4 : 5], dims: [2, transB ? 5 : 4, transB ? 4 : 5] },
    ],
    build: ([a, b]: Tensor[]) => op.matmulEx(a, b, { transA, transB }),
  })),
  {
    name: "FusedMatMul float32 3-D by 2-D weight",
    dtype: "float32",
    tolerance: 2e-3,
    inputs: [
      { declared: ["b", "s", 4], dims: [2, 3, 4] },
      { declared: [5, 4], dims: [5, 4] },
    ],
    build: ([a, b]) => op.matmulTransB(a, b),
  },
  {
    name: "ReduceSum",
    inputs: [{ declared: [2, 3, 4], dims: [2, 3, 4] }],
    build: ([a]) => op.reduceSum(a, [1], false),
  },
  {
    name: "ReduceSum keepdims",
    inputs: [{ declared: [2, 3, 4], dims: [2, 3, 4] }],
    build: ([a]) => op.reduceSum(a, [0, 2], true),
  },
  {
    name: "ReduceMean symbolic",
    inputs: [{ declared: ["n", 3], dims: [4, 3] }],
    build: ([a]) => op.reduceMean(a, [0], false),
  },
  {
    name: "ReduceMean last keepdims",
    inputs: [{ declared: [2, 5], dims: [2, 5] }],
    build: ([a]) => op.reduceMean(a, [-1], true),
  },
  {
    name: "ReduceLogSumExp last axis (softmax path)",
    inputs: [{ declared: ["n", 3, 5], dims: [2, 3, 5], low: -3, high: 3 }],
    build: ([a]) => op.reduceLogSumExp(a, [-1], false),
  },
  {
    name: "ReduceLogSumExp last axis keepdims",
    inputs: [{ declared: [2, 5], dims: [2, 5], low: -3, high: 3 }],
    build: ([a]) => op.reduceLogSumExp(a, [1], true),
  },
  {
    name: "ReduceLogSumExp inner axes",
    inputs: [{ declared: [2, 3, 4], dims: [2, 3, 4], low: -3, high: 3 }],
    build: ([a]) => op.reduceLogSumExp(a, [0, 1], false),
  },
  {
    name: "Softmax",
    inputs: [{ declared: [2, 5], dims: [2, 5] }],
    build: ([a]) => op.softmax(a, -1),
  },
  {
    name: "LogSoftmax",
    inputs: [{ declared: [2, 5], dims: [2, 5] }],
    build: ([a]) => op.logSoftmax(a, 1),
  },
  {
    name: "Reshape",
    inputs: [{ declared: ["n", 6], dims: [2, 6] }],
    build: ([a]) => op.reshape(a, [0, 2, 3]),
  },
  {
    name: "Transpose",
    inputs: [{ declared: [2, 3, 4], dims: [2, 3, 4] }],
    build: ([a]) => op.transpose(a, [2, 0, 1]),
  },
  {
    name: "Unsqueeze and Squeeze",
    inputs: [{ declared: [2, 3], dims: [2, 3] }],
    build: ([a]) => op.squeeze(op.mul(op.unsqueeze(a, [1]), op.unsqueeze(a, [1])), [1]),
  },
  {
    name: "Expand",
    inputs: [{ declared: [1, 3], dims: [1, 3] }],
    build: ([a]) => op.expand(a, op.int64s(a.graph, [4, 3]), [4, 3]),
  },
  {
    name: "Slice static",
    inputs: [{ declared: [2, 6], dims: [2, 6] }],
    build: ([a]) => op.slice(a, [1], [1], [4]),
  },
  {
    name: "Slice symbolic to end-1",
    inputs: [{ declared: [2, "s"], dims: [2, 5] }],
    build: ([a]) => op.slice(a, [1], [0], [-1]),
  },
  {
    name: "Slice symbolic from 1",
    inputs: [{ declared: [2, "s"], dims: [2, 5] }],
    build: ([a]) => op.slice(a, [1], [1], [2 ** 62]),
  },
  {
    name: "Slice symbolic last",
    inputs: [{ declared: ["s", 2], dims: [4, 2] }],
    build: ([a]) => op.slice(a, [0], [-1], [2 ** 62]),
  },
  {
    name: "Concat static",
    inputs: [
      { declared: [2, 3], dims: [2, 3] },
      { declared: [2, 2], dims: [2, 2] },
    ],
    build: ([a, b]) => op.concat([op.neg(b), a], 1),
  },
  {
    name: "Concat symbolic",
    inputs: [
      { declared: ["n", 3], dims: [2, 3] },
      { declared: ["m", 3], dims: [3, 3] },
    ],
    build: ([a, b]) => op.concat([a, b], 0),
  },
  {
    name: "GatherElements",
    inputs: [
      { declared: [2, 4], dims: [2, 4] },
      {
        declared: [2, 3],
        dims: [2, 3],
        values: [0, 3, 3, 1, 1, 2],
        dtype: "int64",
        differentiable: false,
      },
    ],
    build: ([a, idx]) => op.gatherElements(a, idx, 1),
  },
  {
    name: "Gather rows with repeats",
    inputs: [
      { declared: [4, 3], dims: [4, 3] },
      {
        declared: [2, 3],
        dims: [2, 3],
        values: [0, 2, 2, 3, 0, 0],
        dtype: "int64",
        differentiable: false,
      },
    ],
    build: ([table, idx]) => op.gather(table, idx, 0),
  },
  {
    name: "RMSNorm pattern",
    inputs: [
      { declared: ["b", 4], dims: [3, 4] },
      { declared: [4], dims: [4] },
    ],
    build: ([x, w]) => {
      const g = x.graph;
      const ms = op.reduceMean(op.pow(x, op.scalar(g, 2, "float64")), [-1], true);
      return op.mul(op.div(x, op.sqrt(op.add(ms, op.scalar(g, 1e-5, "float64")))), w);
    },
  },
];

describe("gradient rules match finite differences", () => {
  it.each(CASES.map((c) => [c.name, c] as const))("%s", async (_, c) => {
    await checkCase(c);
  });
});

describe("gradients", () => {
  it("skip inputs the loss does not depend on through differentiable paths", () => {
    const g = new Graph();
    const x = g.input("x", "float64", [3]);
    const frozen = g.input("frozen", "float64", [3]);
    const loss = op.reduceSum(op.mul(x, frozen), [0], false);
    const before = g.nodes.length;
    const grads = gradients(loss, [x]);
    expect(grads.has(x)).toBe(true);
    // Only d/dx = frozen * dy (expanded) is built: no node computes x * dy for `frozen`.
    const added = g.nodes.slice(before).filter((n) => n.opType === "Mul");
    expect(added.length).toBe(1);
  });

  it("reports ops without a rule", () => {
    const g = new Graph();
    const x = g.input("x", "float64", [3]);
    const loss = op.reduceSum(op.cumSum(x, 0), [0], false);
    expect(() => gradients(loss, [x])).toThrow(/no gradient rule for CumSum/);
  });
});
