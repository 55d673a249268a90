// Gradient rules of reductions and of softmax-type normalisations.

import type { GradRule } from "../autodiff.js";
import type { Node, Tensor } from "../graph.js";
import * as op from "../ops.js";

/** The reduced axes of a Reduce* node, read from its constant axes input. */
function reducedAxes(node: Node): number[] {
  const x = node.inputs[0] as Tensor;
  const axesInput = node.inputs[1];
  const init = x.graph.initializers.find((i) => i.tensor === axesInput);
  if (init === undefined || init.kind !== "inline") {
    throw new Error(`${node.opType}: gradients need constant axes`);
  }
  return Array.from(init.data as BigInt64Array, (v) => {
    const a = Number(v);
    return a < 0 ? a + x.rank : a;
  });
}

function keepsDims(node: Node): boolean {
  const k = node.attributes.keepdims;
  return k === undefined || ("int" in k && k.int === 1);
}

/** Broadcasts a reduction's output gradient back over the input's shape. */
function spread(node: Node, dy: Tensor): Tensor {
  const x = node.inputs[0] as Tensor;
  const d = keepsDims(node) ? dy : op.unsqueeze(dy, reducedAxes(node));
  return op.expand(d, op.shapeOf(x), x.shape);
}

export const reduceRules: Record<string, GradRule> = {
  ReduceSum: ({ node, dOutputs: [dy] }) => [spread(node, dy!), null],

  // Each input element gets dy / (number of elements averaged), counted at run time.
  ReduceMean: ({ node, dOutputs: [dy] }) => {
    const x = node.inputs[0] as Tensor;
    const y = node.outputs[0];
    const ratio = op.div(op.cast(op.size(y), x.dtype), op.cast(op.size(x), x.dtype));
    return [op.mul(spread(node, dy!), ratio), null];
  },

  // d logsumexp(x) = softmax(x) dy = exp(x - y) dy, with y broadcast over the reduced axes.
  ReduceLogSumExp: ({ node, dOutputs: [dy] }) => {
    const x = node.inputs[0] as Tensor;
    const axes = reducedAxes(node);
    // Over the last axis alone, exp(x - y) is softmax(x): one kernel instead of a subtraction
    // and an exponential over the whole input (the logits, in a log-prob head), and dy
    // broadcasts in the product without being expanded first.
    if (axes.length === 1 && axes[0] === x.rank - 1) {
      const d = keepsDims(node) ? dy! : op.unsqueeze(dy!, axes);
      return [op.mul(op.softmax(x, -1), d), null];
    }
    const y = node.outputs[0];
    const yKept = keepsDims(node) ? y : op.unsqueeze(y, reducedAxes(node));
    return [op.mul(op.exp(op.sub(x, yKept)), spread(node, dy!)), null];
  },

  // dx = y * (dy - sum(dy * y))
  Softmax: ({ node, dOutputs: [dy] }) => {
    const y = node.outputs[0];
    const axis = (node.attributes.axis as { int: number }).int;
    const dot = op.reduceSum(op.mul(dy!, y), [axis], true);
    return [op.mul(y, op.sub(dy!, dot))];
  },

  // dx = dy - softmax(x) * sum(dy)
  LogSoftmax: ({ node, dOutputs: [dy] }) => {
    const y = node.outputs[0];
    const axis = (node.attributes.axis as { int: number }).int;
    const total = op.reduceSum(dy!, [axis], true);
    return [op.sub(dy!, op.mul(op.exp(y), total))];
  },
};
