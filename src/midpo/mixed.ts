// The MidPO mixed model: every decoder layer's MLP output becomes
//
//   down_proj(h) + α(h) · s_s · B_s A_s h + β(h) · s_h · B_h A_h h
//
// with h the input of down_proj, the frozen safety (s) and helpfulness (h) LoRA adapters, and
// per-token gates α, β from the router (or fixed numbers for the static-mix baseline).
//
// NOTE: each adapter keeps its own LoRA scale s = lora_alpha / r. MidPO's formula has one s
// because both experts share r and alpha in its setting; with equal settings the two agree.
// The scale is applied the same way in router training and at inference (the reference code
// omits it during router training; midpo does not copy that).

import { MidpoError } from "../errors.js";
import type { Tensor } from "../graph/graph.js";
import * as op from "../graph/ops.js";
import type { WeightMap } from "../model/causal-lm.js";
import type { LinearOverride } from "../model/llama.js";
import { loraScale, type LoraAdapter } from "../train/lora.js";
import { gateNetwork, type RouterShape } from "./router.js";

export interface Experts {
  safety: LoraAdapter;
  helpfulness: LoraAdapter;
}

export type Mixing =
  { kind: "router"; shape: RouterShape } | { kind: "fixed"; alpha: number; beta: number };

export interface MixedGraph {
  linear: LinearOverride;
  /** Router inputs by name, filled in while the model graph is built. */
  routerInputs: Map<string, Tensor>;
  /** Gate tensors [batch, seq] per layer, filled in while the model graph is built. */
  alpha: Tensor[];
  beta: Tensor[];
}

const DOWN_PROJ = /^model\.layers\.(\d+)\.mlp\.down_proj$/;

/** Rejects adapters that adapt anything but the MLP down_proj, where MidPO mixes. */
export function checkExperts(experts: Experts): void {
  for (const [role, adapter] of Object.entries(experts)) {
    for (const name of adapter.modules.keys()) {
      if (!DOWN_PROJ.test(name)) {
        throw new MidpoError(
          `the ${role} adapter adapts ${name}; MidPO mixes experts only at mlp.down_proj, ` +
            `so train both experts with target modules ["down_proj"]`,
        );
      }
    }
  }
}

function expertInputName(role: keyof Experts, module: string, matrix: "A" | "B"): string {
  return `${role}.${module}.lora_${matrix}.weight`;
}

/** The adapters' matrices under the input names the mixed graph uses, to bind as weights. */
export function expertWeights(experts: Experts): WeightMap {
  const weights: WeightMap = new Map();
  for (const role of ["safety", "helpfulness"] as const) {
    for (const [name, m] of experts[role].modules) {
      weights.set(expertInputName(role, name, "A"), m.A);
      weights.set(expertInputName(role, name, "B"), m.B);
    }
  }
  return weights;
}

/**
 * The linear override of the mixed model. With `exposeGates`, each layer's α and β become
 * graph outputs `gate.alpha.N` and `gate.beta.N` ([batch, seq]).
 */
export function mixedLinear(experts: Experts, mixing: Mixing, exposeGates: boolean): MixedGraph {
  checkExperts(experts);
  const routerInputs = new Map<string, Tensor>();
  const alphas: Tensor[] = [];
  const betas: Tensor[] = [];

  const branch = (role: keyof Experts, name: string, h: Tensor): Tensor | null => {
    const adapter = experts[role];
    const m = adapter.modules.get(name);
    if (m === undefined) return null;
    const g = h.graph;
    const r = adapter.config.r;
    const a = g.input(expertInputName(role, name, "A"), h.dtype, [r, m.inFeatures]);
    const b = g.input(expertInputName(role, name, "B"), h.dtype, [m.outFeatures, r]);
    const low = op.mul(op.matmulTransB(h, a), op.scalar(g, loraScale(adapter.config), h.dtype));
    return op.matmulTransB(low, b);
  };

  const linear: LinearOverride = (name, h, base) => {
    const match = DOWN_PROJ.exec(name);
    if (match === null) return base(h);
    const layer = Number(match[1]);
    const g = h.graph;
    let out = base(h);

    let alpha: Tensor;
    let beta: Tensor;
    if (mixing.kind === "router") {
      const input = (n: string, dims: number[]) => {
        let t = routerInputs.get(n);
        if (t === undefined) {
          t = g.input(n, h.dtype, dims);
          routerInputs.set(n, t);
        }
        return t;
      };
      alpha = gateNetwork(mixing.shape, layer, "alpha", h, input);
      beta = gateNetwork(mixing.shape, layer, "beta", h, input);
      alphas[layer] = alpha;
      betas[layer] = beta;
      if (exposeGates) {
        g.output(`gate.alpha.${layer}`, alpha);
        g.output(`gate.beta.${layer}`, beta);
      }
      alpha = op.unsqueeze(alpha, [2]);
      beta = op.unsqueeze(beta, [2]);
    } else {
      alpha = op.scalar(g, mixing.alpha, h.dtype);
      beta = op.scalar(g, mixing.beta, h.dtype);
    }

    const safety = branch("safety", name, h);
    const helpful = branch("helpfulness", name, h);
    if (safety !== null) out = op.add(out, op.mul(alpha, safety));
    if (helpful !== null) out = op.add(out, op.mul(beta, helpful));
    return out;
  };

  return { linear, routerInputs, alpha: alphas, beta: betas };
}

/**
 * λ_α · mean|α| + λ_β · mean|β − 1| over every layer and every non-padding token; `mask` is
 * [batch, seq] with 1 on real tokens. Padding is left out of the means (the reference code
 * averages over padding too; midpo does not copy that). Also returns mean α and mean β.
 */
export function gateRegularizer(
  mixed: MixedGraph,
  mask: Tensor,
  lambdaAlpha: number,
  lambdaBeta: number,
): { penalty: Tensor; meanAlpha: Tensor; meanBeta: Tensor } {
  const g = mask.graph;
  const layers = mixed.alpha.length;
  const one = op.scalar(g, 1, mask.dtype);
  const count = op.mul(op.reduceSum(mask, [0, 1], false), op.scalar(g, layers, mask.dtype));
  const maskedMean = (gates: Tensor[], f: (t: Tensor) => Tensor) => {
    let sum: Tensor | null = null;
    for (const gate of gates) {
      const s = op.reduceSum(op.mul(f(gate), mask), [0, 1], false);
      sum = sum === null ? s : op.add(sum, s);
    }
    return op.div(sum!, count);
  };
  const meanAbsAlpha = maskedMean(mixed.alpha, (a) => op.abs(a));
  const meanBetaGap = maskedMean(mixed.beta, (b) => op.abs(op.sub(b, one)));
  const penalty = op.add(
    op.mul(op.scalar(g, lambdaAlpha, mask.dtype), meanAbsAlpha),
    op.mul(op.scalar(g, lambdaBeta, mask.dtype), meanBetaGap),
  );
  // Gates lie in (0, 1), so mean|α| is mean α and 1 − mean|β − 1| is mean β.
  return { penalty, meanAlpha: meanAbsAlpha, meanBeta: op.sub(one, meanBetaGap) };
}
