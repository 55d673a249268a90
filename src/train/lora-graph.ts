// LoRA in the model graph, with PEFT's semantics: a target module computes
//   y = x W^T + b + s · (dropout(x) A^T) B^T,   A: [r, in], B: [out, r],
// where s is `lora_alpha / r` (or `lora_alpha / sqrt(r)` with rsLoRA). A and B are graph
// inputs named as in PEFT's files without the `base_model.model.` prefix, e.g.
// `model.layers.0.mlp.down_proj.lora_A.weight`, fed from JavaScript buffers on every run so
// the optimizer can update them in place.

import type { Tensor } from "../graph/graph.js";
import * as op from "../graph/ops.js";
import { CausalLM, type WeightMap } from "../model/causal-lm.js";
import type { LinearOverride } from "../model/llama.js";
import { loraScale, type LoraAdapter } from "./lora.js";

export interface LoraModuleShape {
  /** Module path in the base model, e.g. `model.layers.3.mlp.down_proj`. */
  name: string;
  r: number;
  inFeatures: number;
  outFeatures: number;
}

export function loraInputNames(module: string): { a: string; b: string; dropoutMask: string } {
  return {
    a: `${module}.lora_A.weight`,
    b: `${module}.lora_B.weight`,
    dropoutMask: `${module}.lora_dropout_mask`,
  };
}

export interface LoraGraph {
  linear: LinearOverride;
  /** lora_A and lora_B inputs by name, filled in while the model graph is built. */
  params: Map<string, Tensor>;
  /** Dropout mask inputs by module name (present only when dropout is on). */
  dropoutMasks: Map<string, Tensor>;
}

/**
 * A linear override that adds the LoRA branch to each listed module. With `dropout` on,
 * each module gets an input `<module>.lora_dropout_mask` shaped like its input x, holding
 * 0 or 1 / (1 - p), which the trainer draws from its seeded generator; so a resumed run
 * draws exactly the masks an uninterrupted one would.
 */
export function loraLinear(modules: LoraModuleShape[], scale: number, dropout: boolean): LoraGraph {
  const byName = new Map(modules.map((m) => [m.name, m]));
  const params = new Map<string, Tensor>();
  const dropoutMasks = new Map<string, Tensor>();

  const linear: LinearOverride = (name, x, base) => {
    const m = byName.get(name);
    if (m === undefined) return base(x);
    const g = x.graph;
    const names = loraInputNames(name);
    const a = g.input(names.a, x.dtype, [m.r, m.inFeatures]);
    const b = g.input(names.b, x.dtype, [m.outFeatures, m.r]);
    params.set(names.a, a);
    params.set(names.b, b);

    let xin = x;
    if (dropout) {
      const mask = g.input(names.dropoutMask, x.dtype, x.shape);
      dropoutMasks.set(name, mask);
      xin = op.mul(x, mask);
    }
    // The scale is applied to the rank-r activation, the smallest tensor on the branch.
    const low = op.mul(op.matmulTransB(xin, a), op.scalar(g, scale, x.dtype)); // [.., r]
    return op.add(base(x), op.matmulTransB(low, b)); // [.., out]
  };

  return { linear, params, dropoutMasks };
}

/** The base model with an adapter applied (dropout off), as a CausalLM for scoring and generation. */
export function withAdapter(base: CausalLM, adapter: LoraAdapter): CausalLM {
  const weights: WeightMap = new Map();
  const modules: LoraModuleShape[] = [];
  for (const [name, m] of adapter.modules) {
    const names = loraInputNames(name);
    weights.set(names.a, m.A);
    weights.set(names.b, m.B);
    modules.push({
      name,
      r: adapter.config.r,
      inFeatures: m.inFeatures,
      outFeatures: m.outFeatures,
    });
  }
  const branch = loraLinear(modules, loraScale(adapter.config), false);
  return base.withBranches(weights, branch.linear, `${base.source} + adapter`);
}

/** W + scale · B A for every adapted module: the adapter merged into full weights. */
export function mergeLora(weights: WeightMap, adapter: LoraAdapter): WeightMap {
  const merged: WeightMap = new Map(weights);
  const scale = loraScale(adapter.config);
  const r = adapter.config.r;
  for (const [name, m] of adapter.modules) {
    const base = weights.get(`${name}.weight`)!;
    const out = Float32Array.from(base);
    for (let o = 0; o < m.outFeatures; o++) {
      for (let k = 0; k < r; k++) {
        const b = m.B[o * r + k] * scale;
        if (b === 0) continue;
        const row = o * m.inFeatures;
        const aRow = k * m.inFeatures;
        for (let i = 0; i < m.inFeatures; i++) out[row + i] += b * m.A[aRow + i];
      }
    }
    merged.set(`${name}.weight`, out);
  }
  return merged;
}
