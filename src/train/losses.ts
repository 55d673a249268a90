// The preference losses, each written once as graph ops so that differentiation and every
// caller (DPO experts, the router, score models) share one definition.
//
// All take z, the margin-adjusted implicit-reward difference of each pair:
//   z = β·Δ − m,  Δ = [log π(y_w) − log π_ref(y_w)] − [log π(y_l) − log π_ref(y_l)]
// (for a score model, z = r(y_w) − r(y_l)), and return the mean loss over pairs.

import type { Tensor } from "../graph/graph.js";
import * as op from "../graph/ops.js";

export const LOSS_TYPES = ["sigmoid", "ipo", "hinge", "robust"] as const;
export type LossType = (typeof LOSS_TYPES)[number];

export interface LossOptions {
  type: LossType;
  /** β of the implicit reward; IPO's target depends on it. */
  beta: number;
  /**
   * Label smoothing ε: with "sigmoid" this is conservative DPO (cDPO), with "robust" the
   * noise rate of robust DPO. 0 for the other types.
   */
  labelSmoothing: number;
}

/** −log σ(z), written as softplus(−z) so it stays finite for large |z|. */
export function negLogSigmoid(z: Tensor): Tensor {
  return op.softplus(op.neg(z));
}

/** Per-pair losses, [pairs]. */
export function pairLosses(z: Tensor, options: LossOptions): Tensor {
  const g = z.graph;
  const c = (v: number) => op.scalar(g, v, z.dtype);
  const eps = options.labelSmoothing;
  switch (options.type) {
    // DPO: −log σ(z); with ε > 0, cDPO: −(1−ε) log σ(z) − ε log σ(−z)
    case "sigmoid": {
      const loss = negLogSigmoid(z);
      if (eps === 0) return loss;
      return op.add(op.mul(c(1 - eps), loss), op.mul(c(eps), negLogSigmoid(op.neg(z))));
    }
    // Robust DPO: (−(1−ε) log σ(z) + ε log σ(−z)) / (1 − 2ε)
    case "robust": {
      if (eps >= 0.5) throw new Error(`robust loss needs label smoothing below 0.5, got ${eps}`);
      const num = op.sub(
        op.mul(c(1 - eps), negLogSigmoid(z)),
        op.mul(c(eps), negLogSigmoid(op.neg(z))),
      );
      return op.div(num, c(1 - 2 * eps));
    }
    // SLiC-style hinge: max(0, 1 − z)
    case "hinge":
      return op.relu(op.sub(c(1), z));
    // IPO: (Δ − m/β − 1/(2β))² = ((z − 1/2) / β)², the squared distance of the implicit
    // reward gap from its target. Uses summed log-probs, as every loss here does.
    case "ipo": {
      const d = op.div(op.sub(z, c(0.5)), c(options.beta));
      return op.mul(d, d);
    }
  }
}

export function meanLoss(z: Tensor, options: LossOptions): Tensor {
  return op.reduceMean(pairLosses(z, options), [0], false);
}
