// Undoing broadcasting in gradients: a gradient shaped like a broadcast result is summed
// back to the shape of the input that was broadcast.

import type { Tensor } from "../graph.js";
import * as op from "../ops.js";
import type { Shape } from "../types.js";

/**
 * Sums `d` over the axes along which an input of `shape` was broadcast: leading axes the
 * input lacked, and axes where the input has a fixed 1 and `d` does not.
 */
export function sumToShape(d: Tensor, shape: Shape): Tensor {
  const extra = d.rank - shape.length;
  let out = d;
  if (extra > 0) out = op.reduceSum(out, [...Array(extra).keys()], false);
  const axes: number[] = [];
  shape.forEach((dim, i) => {
    if (dim === 1 && out.shape[i] !== 1) axes.push(i);
  });
  if (axes.length > 0) out = op.reduceSum(out, axes, true);
  return out;
}
