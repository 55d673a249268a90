// Gradient rules of MatMul and FusedMatMul (op(A) @ op(B), op = optional transpose of the
// last two axes). Most training time goes here: each needed gradient is one more matmul of
// the forward's size, and a frozen weight's gradient is never formed.

import type { GradRule } from "../autodiff.js";
import type { Node, Tensor } from "../graph.js";
import * as op from "../ops.js";
import { sumToShape } from "./broadcast.js";

function flag(node: Node, name: string): boolean {
  const a = node.attributes[name];
  return a !== undefined && "int" in a && a.int === 1;
}

/**
 * Gradient of a 2-D right operand B when A has batch axes: the batch axes are flattened into
 * rows so the sum over them happens inside one matmul.
 */
function weightGradient(
  a: Tensor,
  b: Tensor,
  dy: Tensor,
  transA: boolean,
  transB: boolean,
): Tensor {
  const k = transA ? a.shape[a.rank - 2] : a.shape[a.rank - 1];
  const n = dy.shape[dy.rank - 1];
  if (!transA && typeof k === "number" && typeof n === "number" && b.rank === 2 && a.rank > 2) {
    const a2 = op.reshape(a, [-1, k]); // [rows, K]
    const dy2 = op.reshape(dy, [-1, n]); // [rows, N]
    // B is [K, N] (or [N, K] when transposed): dB = A^T dY (or dY^T A).
    return transB
      ? op.matmulEx(dy2, a2, { transA: true, transB: false })
      : op.matmulEx(a2, dy2, { transA: true, transB: false });
  }
  // General case: batched products, then a sum over the axes B was broadcast along.
  const d = transB
    ? transA
      ? op.matmulEx(dy, a, { transA: true, transB: true }) // dB = dY^T A^T
      : op.matmulEx(dy, a, { transA: true, transB: false }) // dB = dY^T A
    : transA
      ? op.matmulEx(a, dy, { transA: false, transB: false }) // dB = A dY
      : op.matmulEx(a, dy, { transA: true, transB: false }); // dB = A^T dY
  return sumToShape(d, b.shape);
}

function leftGradient(a: Tensor, b: Tensor, dy: Tensor, transA: boolean, transB: boolean): Tensor {
  // Y = op(A) op(B). d op(A) = dY op(B)^T; when A is transposed, dA = (dY op(B)^T)^T.
  const d = transA
    ? op.matmulEx(b, dy, { transA: transB, transB: true }) // dA = op(B) dY^T
    : op.matmulEx(dy, b, { transA: false, transB: !transB }); // dA = dY op(B)^T
  return sumToShape(d, a.shape);
}

const matmulRule: GradRule = ({ node, dOutputs: [dy], needs }) => {
  const [a, b] = node.inputs as Tensor[];
  const transA = flag(node, "transA");
  const transB = flag(node, "transB");
  return [
    needs(0) ? leftGradient(a, b, dy!, transA, transB) : null,
    needs(1) ? weightGradient(a, b, dy!, transA, transB) : null,
  ];
};

export const matmulRules: Record<string, GradRule> = {
  MatMul: matmulRule,
  FusedMatMul: matmulRule,
};
