// Flags that turn the base model into an adapted or mixed model for `generate` and `logprobs`:
// --adapter DIR (base + one LoRA adapter), --safety/--helpfulness with --alpha/--beta (the
// static mix), or --router DIR (MidPO; the experts default to the paths the router names).

import { Command } from "commander";
import { MidpoError } from "../errors.js";
import { mixedModel } from "../midpo/mixed-model.js";
import { loadRouter, readRouterConfig } from "../midpo/router-files.js";
import type { CausalLM } from "../model/causal-lm.js";
import { loadExperts } from "../pipeline/stages.js";
import { withAdapter } from "../train/lora-graph.js";
import { decoderLinearModules, loadLoraAdapter } from "../train/lora.js";
import { parseNumber } from "./options.js";

export interface VariantOptions {
  adapter?: string;
  router?: string;
  safety?: string;
  helpfulness?: string;
  alpha?: number;
  beta?: number;
}

export function addVariantOptions(cmd: Command): Command {
  return cmd
    .option("--adapter <dir>", "apply a PEFT LoRA adapter")
    .option("--router <dir>", "run the MidPO mixed model with this router (see train-router)")
    .option("--safety <dir>", "safety expert adapter (default: the one the router names)")
    .option("--helpfulness <dir>", "helpfulness expert adapter (default: the one the router names)")
    .option(
      "--alpha <x>",
      "fixed safety-expert weight, without a router (static mix)",
      parseNumber(0),
    )
    .option(
      "--beta <x>",
      "fixed helpfulness-expert weight, without a router (static mix)",
      parseNumber(0),
    );
}

/** Applies the variant flags to `base`; `exposeGates` makes router models output their gates. */
export async function applyVariant(
  base: CausalLM,
  baseDir: string,
  o: VariantOptions,
  exposeGates: boolean,
): Promise<CausalLM> {
  const mixing = o.router !== undefined || o.alpha !== undefined || o.beta !== undefined;
  if (o.adapter !== undefined) {
    if (mixing)
      throw new MidpoError("--adapter cannot be combined with --router, --alpha or --beta");
    return withAdapter(base, loadLoraAdapter(o.adapter, decoderLinearModules(base.config)));
  }
  if (o.router !== undefined) {
    if (o.alpha !== undefined || o.beta !== undefined) {
      throw new MidpoError(
        "--alpha and --beta fix the gates, so they cannot be used with --router",
      );
    }
    const config = readRouterConfig(o.router);
    const safety = o.safety ?? config.safety.path;
    const helpfulness = o.helpfulness ?? config.helpfulness.path;
    const router = loadRouter(o.router, { base: baseDir, safety, helpfulness });
    const experts = await loadExperts(base, safety, helpfulness);
    return mixedModel(
      base,
      experts,
      { kind: "router", shape: router.config.router },
      router.params,
      exposeGates,
    );
  }
  if (o.alpha !== undefined || o.beta !== undefined) {
    if (o.safety === undefined || o.helpfulness === undefined) {
      throw new MidpoError(
        "a static mix (--alpha/--beta) needs --safety DIR and --helpfulness DIR",
      );
    }
    const experts = await loadExperts(base, o.safety, o.helpfulness);
    return mixedModel(
      base,
      experts,
      { kind: "fixed", alpha: o.alpha ?? 0, beta: o.beta ?? 0 },
      null,
    );
  }
  if (o.safety !== undefined || o.helpfulness !== undefined) {
    throw new MidpoError(
      "--safety and --helpfulness need --router DIR, or --alpha and --beta for a static mix",
    );
  }
  return base;
}
