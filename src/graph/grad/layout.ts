// Gradient rules of ops that move elements without arithmetic: reshapes, transposes,
// slices, concatenation and gathers. Each routes the gradient back to where the element
// came from, with zeros for elements the forward pass dropped.

import type { GradRule } from "../autodiff.js";
import type { Node, Tensor } from "../graph.js";
import * as op from "../ops.js";
import { sumToShape } from "./broadcast.js";

/** The values of a node's constant int64 input (axes, starts, ends). */
function constantInts(node: Node, index: number): number[] {
  const t = node.inputs[index];
  const init = t === null ? undefined : t.graph.initializers.find((i) => i.tensor === t);
  if (init === undefined || init.kind !== "inline") {
    throw new Error(`${node.opType}: gradients need input ${index} to be a constant`);
  }
  return Array.from(init.data as BigInt64Array, Number);
}

function normalise(axis: number, rank: number): number {
  return axis < 0 ? axis + rank : axis;
}

/** Size of axis `a` of x: a constant when known, else read at run time, as int64 [1]. */
function dimOf(x: Tensor, a: number): Tensor {
  const d = x.shape[a];
  return typeof d === "number" ? op.int64s(x.graph, [d]) : op.shapeOf(x, a, a + 1);
}

const INT64_MAX_AS_END = 2 ** 31;

/** Pads the gradient of a Slice along one axis back to the input's extent. */
function unslice(dy: Tensor, x: Tensor, axis: number, start: number, end: number): Tensor {
  const g = x.graph;
  const dim = x.shape[axis];
  if (typeof dim === "number") {
    const clamp = (v: number) => Math.min(Math.max(v < 0 ? v + dim : v, 0), dim);
    const before = clamp(start);
    const after = dim - Math.max(clamp(end), before);
    return op.padAxis(dy, axis, op.int64s(g, [before]), op.int64s(g, [after]));
  }
  // Symbolic extent: offsets relative to the end are turned into counts at run time.
  const size = dimOf(x, axis);
  const before = start >= 0 ? op.int64s(g, [start]) : op.add(size, op.int64s(g, [start]));
  let after: Tensor;
  if (end >= INT64_MAX_AS_END) after = op.int64s(g, [0]);
  else if (end < 0) after = op.int64s(g, [-end]);
  else after = op.sub(size, op.int64s(g, [end]));
  return op.padAxis(dy, axis, before, after);
}

export const layoutRules: Record<string, GradRule> = {
  Reshape: ({ node, dOutputs: [dy] }) => {
    const x = node.inputs[0] as Tensor;
    return [op.reshapeTo(dy!, op.shapeOf(x), x.shape), null];
  },

  Transpose: ({ node, dOutputs: [dy] }) => {
    const perm = (node.attributes.perm as { ints: number[] }).ints;
    const inverse = new Array<number>(perm.length);
    perm.forEach((p, i) => (inverse[p] = i));
    return [op.transpose(dy!, inverse)];
  },

  Unsqueeze: ({ node, dOutputs: [dy] }) => [op.squeeze(dy!, constantInts(node, 1)), null],

  Squeeze: ({ node, dOutputs: [dy] }) => [op.unsqueeze(dy!, constantInts(node, 1)), null],

  Expand: ({ node, dOutputs: [dy] }) => [sumToShape(dy!, (node.inputs[0] as Tensor).shape), null],

  Slice: ({ node, dOutputs: [dy] }) => {
    const x = node.inputs[0] as Tensor;
    if (node.inputs.length > 4 && node.inputs[4] !== null) {
      throw new Error("Slice: gradients of strided slices are not supported");
    }
    const starts = constantInts(node, 1);
    const ends = constantInts(node, 2);
    const axes = constantInts(node, 3).map((a) => normalise(a, x.rank));
    let d = dy!;
    axes.forEach((a, i) => {
      d = unslice(d, x, a, starts[i], ends[i]);
    });
    return [d, null, null, null];
  },

  // Each input receives its own segment of the gradient along the concatenation axis.
  Concat: ({ node, dOutputs: [dy], needs }) => {
    const xs = node.inputs as Tensor[];
    const axis = normalise((node.attributes.axis as { int: number }).int, xs[0].rank);
    const sizes = xs.map((x) => x.shape[axis]);
    if (sizes.every((s) => typeof s === "number")) {
      let start = 0;
      return xs.map((_, i) => {
        const end = start + (sizes[i] as number);
        const d = needs(i) ? op.slice(dy!, [axis], [start], [end]) : null;
        start = end;
        return d;
      });
    }
    let offset: Tensor = op.int64s(xs[0].graph, [0]);
    return xs.map((x, i) => {
      const end = op.add(offset, dimOf(x, axis));
      const d = needs(i) ? op.sliceDynamic(dy!, axis, offset, end) : null;
      offset = end;
      return d;
    });
  },

  // Embedding lookups: rows gathered several times accumulate their gradients.
  Gather: ({ node, dOutputs: [dy] }) => {
    const [x, indices] = node.inputs as Tensor[];
    const axis = (node.attributes.axis as { int: number }).int;
    if (axis !== 0) throw new Error("Gather: gradients are supported for axis 0 only");
    const tuples = op.unsqueeze(op.cast(indices, "int64"), [indices.rank]);
    return [op.scatterNdAdd(op.zerosLike(x), tuples, dy!), null];
  },

  GatherElements: ({ node, dOutputs: [dy] }) => {
    const [x, indices] = node.inputs as Tensor[];
    const axis = (node.attributes.axis as { int: number }).int;
    return [op.scatterElementsAdd(op.zerosLike(x), indices, dy!, axis), null];
  },
};
