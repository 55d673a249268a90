// Gradient rules of elementwise ops. Binary ops sum their gradients back over broadcast axes.

import type { GradRule } from "../autodiff.js";
import type { Tensor } from "../graph.js";
import * as op from "../ops.js";
import { sumToShape } from "./broadcast.js";

function inputs(node: { inputs: (Tensor | null)[] }): Tensor[] {
  return node.inputs as Tensor[];
}

function one(like: Tensor): Tensor {
  return op.scalar(like.graph, 1, like.dtype);
}

export const elementwiseRules: Record<string, GradRule> = {
  Identity: ({ dOutputs: [dy] }) => [dy],

  Add: ({ node, dOutputs: [dy] }) => {
    const [a, b] = inputs(node);
    return [sumToShape(dy!, a.shape), sumToShape(dy!, b.shape)];
  },

  Sub: ({ node, dOutputs: [dy], needs }) => {
    const [a, b] = inputs(node);
    return [sumToShape(dy!, a.shape), needs(1) ? sumToShape(op.neg(dy!), b.shape) : null];
  },

  // d(a*b) = b da + a db
  Mul: ({ node, dOutputs: [dy], needs }) => {
    const [a, b] = inputs(node);
    return [
      needs(0) ? sumToShape(op.mul(dy!, b), a.shape) : null,
      needs(1) ? sumToShape(op.mul(dy!, a), b.shape) : null,
    ];
  },

  // d(a/b) = da / b - a db / b^2 = (da - y db) / b
  Div: ({ node, dOutputs: [dy], needs }) => {
    const [a, b] = inputs(node);
    const y = node.outputs[0];
    const dyOverB = op.div(dy!, b);
    return [
      needs(0) ? sumToShape(dyOverB, a.shape) : null,
      needs(1) ? sumToShape(op.neg(op.mul(dyOverB, y)), b.shape) : null,
    ];
  },

  // d(x^p)/dx = p x^(p-1); the exponent is treated as a constant.
  Pow: ({ node, dOutputs: [dy], needs }) => {
    const [x, p] = inputs(node);
    if (needs(1)) throw new Error("Pow: gradients with respect to the exponent are not supported");
    const dx = op.mul(op.mul(dy!, p), op.pow(x, op.sub(p, one(p))));
    return [sumToShape(dx, x.shape), null];
  },

  Max: ({ node, dOutputs: [dy] }) => {
    const [a, b] = inputs(node);
    const aWins = op.greaterOrEqual(a, b);
    const zero = op.scalar(a.graph, 0, a.dtype);
    return [
      sumToShape(op.where(aWins, dy!, zero), a.shape),
      sumToShape(op.where(aWins, zero, dy!), b.shape),
    ];
  },

  Neg: ({ dOutputs: [dy] }) => [op.neg(dy!)],

  // d exp(x) = exp(x) dx
  Exp: ({ node, dOutputs: [dy] }) => [op.mul(dy!, node.outputs[0])],

  Log: ({ node, dOutputs: [dy] }) => [op.div(dy!, inputs(node)[0])],

  // d sqrt(x) = dx / (2 sqrt(x))
  Sqrt: ({ node, dOutputs: [dy] }) => {
    const y = node.outputs[0];
    return [op.div(dy!, op.mul(y, op.scalar(y.graph, 2, y.dtype)))];
  },

  // d(1/x) = -dx / x^2 = -y^2 dx
  Reciprocal: ({ node, dOutputs: [dy] }) => {
    const y = node.outputs[0];
    return [op.neg(op.mul(dy!, op.mul(y, y)))];
  },

  // d sigmoid(x) = y (1 - y) dx
  Sigmoid: ({ node, dOutputs: [dy] }) => {
    const y = node.outputs[0];
    return [op.mul(dy!, op.mul(y, op.sub(one(y), y)))];
  },

  // d softplus(x) = sigmoid(x) dx
  Softplus: ({ node, dOutputs: [dy] }) => [op.mul(dy!, op.sigmoid(inputs(node)[0]))],

  // d tanh(x) = (1 - y^2) dx
  Tanh: ({ node, dOutputs: [dy] }) => {
    const y = node.outputs[0];
    return [op.mul(dy!, op.sub(one(y), op.mul(y, y)))];
  },

  Relu: ({ node, dOutputs: [dy] }) => {
    const x = inputs(node)[0];
    return [
      op.where(op.greater(x, op.scalar(x.graph, 0, x.dtype)), dy!, op.scalar(x.graph, 0, x.dtype)),
    ];
  },

  Abs: ({ node, dOutputs: [dy] }) => [op.mul(dy!, op.sign(inputs(node)[0]))],

  // The condition gets no gradient; each branch gets dy where it was chosen.
  Where: ({ node, dOutputs: [dy], needs }) => {
    const [cond, a, b] = inputs(node);
    const zero = op.scalar(a.graph, 0, a.dtype);
    return [
      null,
      needs(1) ? sumToShape(op.where(cond, dy!, zero), a.shape) : null,
      needs(2) ? sumToShape(op.where(cond, zero, dy!), b.shape) : null,
    ];
  },

  // Float-to-float casts pass the gradient back in the input's type.
  Cast: ({ node, dOutputs: [dy] }) => [op.cast(dy!, inputs(node)[0].dtype)],
};
