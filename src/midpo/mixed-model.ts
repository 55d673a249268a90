// The mixed model as a CausalLM: base weights, both frozen experts and the router (or fixed
// gates), usable for log-probs and KV-cache generation like any other model.

import { CausalLM, type WeightMap } from "../model/causal-lm.js";
import { expertWeights, mixedLinear, type Experts, type Mixing } from "./mixed.js";

export function mixedModel(
  base: CausalLM,
  experts: Experts,
  mixing: Mixing,
  router: Map<string, Float32Array> | null,
  exposeGates = false,
): CausalLM {
  const weights: WeightMap = expertWeights(experts);
  if (mixing.kind === "router") {
    if (router === null) throw new Error("mixedModel: router mixing needs router weights");
    for (const [name, value] of router) weights.set(name, value);
  }
  const mixed = mixedLinear(experts, mixing, exposeGates);
  const label = mixing.kind === "router" ? "router" : `alpha ${mixing.alpha}, beta ${mixing.beta}`;
  return base.withBranches(weights, mixed.linear, `${base.source} + experts (${label})`);
}
