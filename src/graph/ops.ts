// Tensor operations of the graph builder. Each function records one ONNX node (opset 18)
// and computes its output element type and shape, so that mistakes show up while the graph
// is built, with the op's name, instead of as an ORT error at session creation.
//
// Shapes may hold symbolic dimensions (strings). Where a result dimension depends on two
// symbols, it gets a new symbol such as "past+seq"; only graph inputs and outputs carry
// shapes into the ONNX model.

import { Graph, Tensor, type Attribute } from "./graph.js";
import { formatShape, isFloat, type Dim, type DType, type Shape } from "./types.js";

// ---------------------------------------------------------------------------------------
// Shape helpers

function sameDim(a: Dim, b: Dim): boolean {
  return a === b;
}

/** Numpy broadcasting of two shapes; throws when two fixed sizes disagree. */
export function broadcastShapes(op: string, a: Shape, b: Shape): Shape {
  const rank = Math.max(a.length, b.length);
  const out: Dim[] = [];
  for (let i = 0; i < rank; i++) {
    const da = i < rank - a.length ? 1 : a[i - (rank - a.length)];
    const db = i < rank - b.length ? 1 : b[i - (rank - b.length)];
    if (da === 1) out.push(db);
    else if (db === 1 || sameDim(da, db)) out.push(da);
    else if (typeof da === "number" && typeof db === "number") {
      throw new Error(`${op}: shapes ${formatShape(a)} and ${formatShape(b)} do not broadcast`);
    } else {
      // A symbolic dimension meeting another symbol or a size: ORT checks at run time.
      out.push(typeof da === "number" ? da : db);
    }
  }
  return out;
}

function normAxis(op: string, axis: number, rank: number): number {
  const a = axis < 0 ? axis + rank : axis;
  if (a < 0 || a >= rank) throw new Error(`${op}: axis ${axis} out of range for rank ${rank}`);
  return a;
}

function addDims(a: Dim, b: Dim): Dim {
  if (typeof a === "number" && typeof b === "number") return a + b;
  if (a === 0) return b;
  if (b === 0) return a;
  return `${a}+${b}`;
}

function graphOf(...ts: Tensor[]): Graph {
  return ts[0].graph;
}

function requireSameDType(op: string, ...ts: Tensor[]): DType {
  const dtype = ts[0].dtype;
  for (const t of ts) {
    if (t.dtype !== dtype) {
      throw new Error(`${op}: element types differ (${ts.map((x) => x.dtype).join(", ")})`);
    }
  }
  return dtype;
}

// ---------------------------------------------------------------------------------------
// Constants

/** A constant stored in the model. Numbers become a tensor of the given type and shape. */
export function constant(g: Graph, dtype: DType, shape: Shape, values: readonly number[]): Tensor {
  switch (dtype) {
    case "float32":
      return g.initializer(null, dtype, shape, Float32Array.from(values));
    case "float64":
      return g.initializer(null, dtype, shape, Float64Array.from(values));
    case "int64":
      return g.initializer(null, dtype, shape, BigInt64Array.from(values.map((v) => BigInt(v))));
    case "int32":
      return g.initializer(null, dtype, shape, Int32Array.from(values));
    case "bool":
      return g.initializer(null, dtype, shape, Uint8Array.from(values));
    default:
      throw new Error(`constant: element type ${dtype} is not supported`);
  }
}

export function scalar(g: Graph, value: number, dtype: DType = "float32"): Tensor {
  return constant(g, dtype, [], [value]);
}

export function int64s(g: Graph, values: readonly number[]): Tensor {
  return constant(g, "int64", [values.length], values);
}

// ---------------------------------------------------------------------------------------
// Elementwise

function binary(op: string, a: Tensor, b: Tensor, outDType?: DType): Tensor {
  const dtype = requireSameDType(op, a, b);
  const shape = broadcastShapes(op, a.shape, b.shape);
  return graphOf(a).addNode(op, [a, b], [{ dtype: outDType ?? dtype, shape }])[0];
}

function unary(op: string, x: Tensor, attributes: Record<string, Attribute> = {}): Tensor {
  return graphOf(x).addNode(op, [x], [{ dtype: x.dtype, shape: x.shape }], attributes)[0];
}

export const add = (a: Tensor, b: Tensor) => binary("Add", a, b);
export const sub = (a: Tensor, b: Tensor) => binary("Sub", a, b);
export const mul = (a: Tensor, b: Tensor) => binary("Mul", a, b);
export const div = (a: Tensor, b: Tensor) => binary("Div", a, b);
export const pow = (a: Tensor, b: Tensor) => binary("Pow", a, b);
export const max = (a: Tensor, b: Tensor) => binary("Max", a, b);
export const min = (a: Tensor, b: Tensor) => binary("Min", a, b);
export const equal = (a: Tensor, b: Tensor) => binary("Equal", a, b, "bool");
export const less = (a: Tensor, b: Tensor) => binary("Less", a, b, "bool");
export const greater = (a: Tensor, b: Tensor) => binary("Greater", a, b, "bool");
export const lessOrEqual = (a: Tensor, b: Tensor) => binary("LessOrEqual", a, b, "bool");
export const greaterOrEqual = (a: Tensor, b: Tensor) => binary("GreaterOrEqual", a, b, "bool");
export const and = (a: Tensor, b: Tensor) => binary("And", a, b);
export const or = (a: Tensor, b: Tensor) => binary("Or", a, b);

export const neg = (x: Tensor) => unary("Neg", x);
export const exp = (x: Tensor) => unary("Exp", x);
export const log = (x: Tensor) => unary("Log", x);
export const sqrt = (x: Tensor) => unary("Sqrt", x);
export const reciprocal = (x: Tensor) => unary("Reciprocal", x);
export const tanh = (x: Tensor) => unary("Tanh", x);
export const softplus = (x: Tensor) => unary("Softplus", x);
export const cos = (x: Tensor) => unary("Cos", x);
export const sin = (x: Tensor) => unary("Sin", x);
export const sigmoid = (x: Tensor) => unary("Sigmoid", x);
export const abs = (x: Tensor) => unary("Abs", x);
export const relu = (x: Tensor) => unary("Relu", x);
export const sign = (x: Tensor) => unary("Sign", x);
export const not = (x: Tensor) => unary("Not", x);
export const identity = (x: Tensor) => unary("Identity", x);

export function cast(x: Tensor, to: DType): Tensor {
  if (x.dtype === to) return x;
  const toCode = CAST_CODES[to];
  return graphOf(x).addNode("Cast", [x], [{ dtype: to, shape: x.shape }], {
    to: { int: toCode },
  })[0];
}

// ONNX TensorProto.DataType codes, as Cast's `to` attribute takes them.
const CAST_CODES: Record<DType, number> = {
  float32: 1,
  bool: 9,
  int32: 6,
  int64: 7,
  float16: 10,
  float64: 11,
  bfloat16: 16,
};

/** where(cond, a, b): a where cond is true, else b, with broadcasting. */
export function where(cond: Tensor, a: Tensor, b: Tensor): Tensor {
  if (cond.dtype !== "bool") throw new Error(`Where: condition must be bool, got ${cond.dtype}`);
  const dtype = requireSameDType("Where", a, b);
  const shape = broadcastShapes("Where", broadcastShapes("Where", cond.shape, a.shape), b.shape);
  return graphOf(a).addNode("Where", [cond, a, b], [{ dtype, shape }])[0];
}

// ---------------------------------------------------------------------------------------
// Matrix products

/** Numpy-style matmul of the last two dimensions with broadcast batch dimensions. */
export function matmul(a: Tensor, b: Tensor): Tensor {
  return matmulEx(a, b, { transA: false, transB: false });
}

/**
 * a @ b^T without materialising the transpose. Linear layers use it with Hugging Face's
 * [out, in] weights as they are stored.
 */
export function matmulTransB(a: Tensor, b: Tensor): Tensor {
  return matmulEx(a, b, { transA: false, transB: true });
}

/**
 * op(a) @ op(b), where op transposes the last two axes when asked. Float32 uses ORT's
 * com.microsoft FusedMatMul, which reads the operands transposed in place; ORT has no
 * float64 FusedMatMul, so float64 (gradient checks) transposes explicitly and uses MatMul.
 */
export function matmulEx(
  a: Tensor,
  b: Tensor,
  options: { transA: boolean; transB: boolean },
): Tensor {
  const op = "MatMul";
  const dtype = requireSameDType(op, a, b);
  if (a.rank < 2 || b.rank < 2) {
    throw new Error(`${op}: ranks ${a.rank} and ${b.rank} are not supported (need >= 2)`);
  }
  const m = options.transA ? a.shape[a.rank - 1] : a.shape[a.rank - 2];
  const k = options.transA ? a.shape[a.rank - 2] : a.shape[a.rank - 1];
  const bk = options.transB ? b.shape[b.rank - 1] : b.shape[b.rank - 2];
  const n = options.transB ? b.shape[b.rank - 2] : b.shape[b.rank - 1];
  if (typeof k === "number" && typeof bk === "number" && k !== bk) {
    throw new Error(
      `${op}: inner dimensions differ, ${formatShape(a.shape)} and ${formatShape(b.shape)}` +
        ` (transA ${options.transA}, transB ${options.transB})`,
    );
  }
  const batch = broadcastShapes(op, a.shape.slice(0, -2), b.shape.slice(0, -2));
  const shape = [...batch, m, n];
  const g = graphOf(a);

  if (!options.transA && !options.transB) {
    return g.addNode("MatMul", [a, b], [{ dtype, shape }])[0];
  }
  if (dtype === "float32") {
    const attributes = {
      transA: { int: options.transA ? 1 : 0 },
      transB: { int: options.transB ? 1 : 0 },
    };
    return g.addNode("FusedMatMul", [a, b], [{ dtype, shape }], attributes, "com.microsoft")[0];
  }
  const swapLast = (t: Tensor) => {
    const perm = t.shape.map((_, i) => i);
    [perm[t.rank - 2], perm[t.rank - 1]] = [perm[t.rank - 1], perm[t.rank - 2]];
    return transpose(t, perm);
  };
  return matmul(options.transA ? swapLast(a) : a, options.transB ? swapLast(b) : b);
}

// ---------------------------------------------------------------------------------------
// Reductions and normalisations

function reduce(op: string, x: Tensor, axes: number[], keepDims: boolean): Tensor {
  const norm = axes.map((a) => normAxis(op, a, x.rank));
  const shape: Dim[] = [];
  x.shape.forEach((d, i) => {
    if (!norm.includes(i)) shape.push(d);
    else if (keepDims) shape.push(1);
  });
  const g = graphOf(x);
  return g.addNode(op, [x, int64s(g, norm)], [{ dtype: x.dtype, shape }], {
    keepdims: { int: keepDims ? 1 : 0 },
  })[0];
}

export const reduceSum = (x: Tensor, axes: number[], keepDims = false) =>
  reduce("ReduceSum", x, axes, keepDims);
export const reduceMean = (x: Tensor, axes: number[], keepDims = false) =>
  reduce("ReduceMean", x, axes, keepDims);
export const reduceMax = (x: Tensor, axes: number[], keepDims = false) =>
  reduce("ReduceMax", x, axes, keepDims);
/** Index of the largest value along `axis` (the first one on ties), int64, axis removed. */
export function argMax(x: Tensor, axis: number): Tensor {
  const a = normAxis("ArgMax", axis, x.rank);
  const shape = x.shape.filter((_, i) => i !== a);
  return graphOf(x).addNode("ArgMax", [x], [{ dtype: "int64", shape }], {
    axis: { int: a },
    keepdims: { int: 0 },
  })[0];
}

/** log(sum(exp(x))) over the axes, computed stably by ORT. */
export const reduceLogSumExp = (x: Tensor, axes: number[], keepDims = false) =>
  reduce("ReduceLogSumExp", x, axes, keepDims);

export function softmax(x: Tensor, axis = -1): Tensor {
  return unary("Softmax", x, { axis: { int: axis } });
}

export function logSoftmax(x: Tensor, axis = -1): Tensor {
  return unary("LogSoftmax", x, { axis: { int: axis } });
}

export function cumSum(x: Tensor, axis: number): Tensor {
  const g = graphOf(x);
  const axisT = constant(g, "int64", [], [axis]);
  return g.addNode("CumSum", [x, axisT], [{ dtype: x.dtype, shape: x.shape }])[0];
}

// ---------------------------------------------------------------------------------------
// Indexing and layout

/** Gathers slices of `data` along `axis` at `indices` (ONNX Gather). */
export function gather(data: Tensor, indices: Tensor, axis = 0): Tensor {
  if (indices.dtype !== "int64" && indices.dtype !== "int32") {
    throw new Error(`Gather: indices must be int64 or int32, got ${indices.dtype}`);
  }
  const a = normAxis("Gather", axis, data.rank);
  const shape = [...data.shape.slice(0, a), ...indices.shape, ...data.shape.slice(a + 1)];
  return graphOf(data).addNode("Gather", [data, indices], [{ dtype: data.dtype, shape }], {
    axis: { int: a },
  })[0];
}

/** Picks data[..., indices[...], ...] elementwise along `axis` (ONNX GatherElements). */
export function gatherElements(data: Tensor, indices: Tensor, axis: number): Tensor {
  const a = normAxis("GatherElements", axis, data.rank);
  return graphOf(data).addNode(
    "GatherElements",
    [data, indices],
    [{ dtype: data.dtype, shape: indices.shape }],
    { axis: { int: a } },
  )[0];
}

/**
 * Reshape with ONNX semantics: 0 copies the input dimension at that position and -1 is
 * inferred. Fixed sizes are checked here when the input size is known.
 */
export function reshape(x: Tensor, target: readonly number[]): Tensor {
  const shape: Dim[] = target.map((d, i) => (d === 0 ? x.shape[i] : d));
  const inferred = shape.indexOf(-1);
  if (inferred >= 0) {
    const known = shape.filter((d, i) => i !== inferred);
    const allStatic = x.shape.every((d) => typeof d === "number");
    if (allStatic && known.every((d) => typeof d === "number")) {
      const total = (x.shape as number[]).reduce((p, d) => p * d, 1);
      const part = (known as number[]).reduce((p, d) => p * d, 1);
      shape[inferred] = total / part;
    } else {
      shape[inferred] = graphOf(x).fresh("dim");
    }
  }
  const g = graphOf(x);
  return g.addNode("Reshape", [x, int64s(g, target)], [{ dtype: x.dtype, shape }])[0];
}

export function transpose(x: Tensor, perm: number[]): Tensor {
  if (perm.length !== x.rank) {
    throw new Error(`Transpose: permutation [${perm}] does not match rank ${x.rank}`);
  }
  const shape = perm.map((p) => x.shape[p]);
  return graphOf(x).addNode("Transpose", [x], [{ dtype: x.dtype, shape }], {
    perm: { ints: perm },
  })[0];
}

export function concat(xs: Tensor[], axis: number): Tensor {
  const dtype = requireSameDType("Concat", ...xs);
  const a = normAxis("Concat", axis, xs[0].rank);
  const shape = [...xs[0].shape];
  shape[a] = xs.slice(1).reduce((d, t) => addDims(d, t.shape[a]), xs[0].shape[a]);
  return graphOf(...xs).addNode("Concat", xs, [{ dtype, shape }], { axis: { int: a } })[0];
}

/** x[start:end] along each listed axis; `end` may exceed the size (clamped, as in ONNX). */
export function slice(x: Tensor, axes: number[], starts: number[], ends: number[]): Tensor {
  const shape = [...x.shape];
  axes.forEach((axis, i) => {
    const a = normAxis("Slice", axis, x.rank);
    const d = x.shape[a];
    if (typeof d === "number") {
      const clamp = (v: number) => Math.min(Math.max(v < 0 ? v + d : v, 0), d);
      shape[a] = Math.max(clamp(ends[i]) - clamp(starts[i]), 0);
    } else if (starts[i] >= 0 && ends[i] >= 0 && ends[i] < 2 ** 31) {
      shape[a] = ends[i] - starts[i];
    } else {
      shape[a] = graphOf(x).fresh("dim");
    }
  });
  const g = graphOf(x);
  const inputs = [x, int64s(g, starts), int64s(g, ends), int64s(g, axes)];
  return g.addNode("Slice", inputs, [{ dtype: x.dtype, shape }])[0];
}

/** Slice with start and end given as int64 tensors of shape [1] (for run-time offsets). */
export function sliceDynamic(x: Tensor, axis: number, start: Tensor, end: Tensor): Tensor {
  const a = normAxis("Slice", axis, x.rank);
  const shape = [...x.shape];
  shape[a] = graphOf(x).fresh("dim");
  const g = graphOf(x);
  return g.addNode("Slice", [x, start, end, int64s(g, [a])], [{ dtype: x.dtype, shape }])[0];
}

export function unsqueeze(x: Tensor, axes: number[]): Tensor {
  const rank = x.rank + axes.length;
  const norm = axes.map((a) => normAxis("Unsqueeze", a, rank)).sort((p, q) => p - q);
  const shape: Dim[] = [];
  let src = 0;
  for (let i = 0; i < rank; i++) shape.push(norm.includes(i) ? 1 : x.shape[src++]);
  const g = graphOf(x);
  return g.addNode("Unsqueeze", [x, int64s(g, norm)], [{ dtype: x.dtype, shape }])[0];
}

export function squeeze(x: Tensor, axes: number[]): Tensor {
  const norm = axes.map((a) => normAxis("Squeeze", a, x.rank));
  for (const a of norm) {
    if (x.shape[a] !== 1 && typeof x.shape[a] === "number") {
      throw new Error(`Squeeze: axis ${a} of ${formatShape(x.shape)} is not 1`);
    }
  }
  const shape = x.shape.filter((_, i) => !norm.includes(i));
  const g = graphOf(x);
  return g.addNode("Squeeze", [x, int64s(g, norm)], [{ dtype: x.dtype, shape }])[0];
}

/** Broadcasts x to the shape held in an int64 tensor (ONNX Expand). */
export function expand(x: Tensor, shapeTensor: Tensor, resultShape: Shape): Tensor {
  return graphOf(x).addNode(
    "Expand",
    [x, shapeTensor],
    [{ dtype: x.dtype, shape: resultShape }],
  )[0];
}

/** The run-time shape of x as an int64 vector, optionally restricted to [start, end). */
export function shapeOf(x: Tensor, start?: number, end?: number): Tensor {
  const attributes: Record<string, Attribute> = {};
  if (start !== undefined) attributes.start = { int: start };
  if (end !== undefined) attributes.end = { int: end };
  const n = (end ?? x.rank) - (start ?? 0);
  return graphOf(x).addNode("Shape", [x], [{ dtype: "int64", shape: [n] }], attributes)[0];
}

/** [start, start + delta, ...) below `limit`; all three are scalar tensors of one type. */
export function range(start: Tensor, limit: Tensor, delta: Tensor): Tensor {
  const dtype = requireSameDType("Range", start, limit, delta);
  const g = graphOf(start);
  return g.addNode("Range", [start, limit, delta], [{ dtype, shape: [g.fresh("dim")] }])[0];
}

/** Lower (upper = false) or upper triangle of the last two dimensions, offset by k. */
export function trilu(x: Tensor, upper: boolean, k = 0): Tensor {
  const g = graphOf(x);
  return g.addNode(
    "Trilu",
    [x, constant(g, "int64", [], [k])],
    [{ dtype: x.dtype, shape: x.shape }],
    {
      upper: { int: upper ? 1 : 0 },
    },
  )[0];
}

/** A tensor of the run-time shape `shapeTensor` filled with `value`. */
export function constantOfShape(
  shapeTensor: Tensor,
  value: number,
  dtype: DType,
  resultShape: Shape,
): Tensor {
  if (!isFloat(dtype) && dtype !== "int64" && dtype !== "bool") {
    throw new Error(`ConstantOfShape: element type ${dtype} is not supported`);
  }
  const g = graphOf(shapeTensor);
  return g.addNode("ConstantOfShape", [shapeTensor], [{ dtype, shape: resultShape }], {
    value: { tensor: { dtype, values: [value] } },
  })[0];
}

/** Pads `x` along `axis` with `before` and `after` zeros (scalars or int64 [1] tensors). */
export function padAxis(x: Tensor, axis: number, before: Tensor, after: Tensor): Tensor {
  const a = normAxis("Pad", axis, x.rank);
  const g = graphOf(x);
  const pads = concat([before, after], 0);
  const shape = [...x.shape];
  shape[a] = g.fresh("dim");
  return g.addNode("Pad", [x, pads, null, int64s(g, [a])], [{ dtype: x.dtype, shape }])[0];
}

/** A copy of `data` with `updates` added at `indices` along `axis` (ScatterElements, add). */
export function scatterElementsAdd(
  data: Tensor,
  indices: Tensor,
  updates: Tensor,
  axis: number,
): Tensor {
  const a = normAxis("ScatterElements", axis, data.rank);
  return graphOf(data).addNode(
    "ScatterElements",
    [data, indices, updates],
    [{ dtype: data.dtype, shape: data.shape }],
    { axis: { int: a }, reduction: { string: "add" } },
  )[0];
}

/** Number of elements of x at run time, as an int64 scalar. */
export function size(x: Tensor): Tensor {
  return graphOf(x).addNode("Size", [x], [{ dtype: "int64", shape: [] }])[0];
}

/** Zeros of x's run-time shape and type. */
export function zerosLike(x: Tensor): Tensor {
  return constantOfShape(shapeOf(x), 0, x.dtype, x.shape);
}

/** Reshape to a run-time shape held in an int64 tensor. */
export function reshapeTo(x: Tensor, shapeTensor: Tensor, resultShape: Shape): Tensor {
  return graphOf(x).addNode(
    "Reshape",
    [x, shapeTensor],
    [{ dtype: x.dtype, shape: resultShape }],
  )[0];
}

/** A copy of `data` with `updates` added at the index tuples in `indices` (ScatterND, add). */
export function scatterNdAdd(data: Tensor, indices: Tensor, updates: Tensor): Tensor {
  return graphOf(data).addNode(
    "ScatterND",
    [data, indices, updates],
    [{ dtype: data.dtype, shape: data.shape }],
    { reduction: { string: "add" } },
  )[0];
}
