// Turning a system of the systems file into a CausalLM, and the content hash that keys its
// stored generations. The hash covers every file that changes what the system generates:
// the base model's config and weights, the adapters, the router, and the fixed gates.

import { createHash } from "node:crypto";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { MidpoError } from "../errors.js";
import { mixedModel } from "../midpo/mixed-model.js";
import {
  adapterContentHash,
  loadRouter,
  ROUTER_CONFIG_FILE,
  ROUTER_WEIGHTS_FILE,
} from "../midpo/router-files.js";
import type { CausalLM } from "../model/causal-lm.js";
import { checkTokenizerFits, loadCausalLM } from "../model/load.js";
import { defaultCacheDir, modelContentHash } from "../train/cache.js";
import { decoderLinearModules, loadLoraAdapter } from "../train/lora.js";
import { withAdapter } from "../train/lora-graph.js";
import { Tokenizer } from "../tokenize/tokenizer.js";
import type { SystemSpec } from "./systems.js";

export interface SystemModel {
  model: CausalLM;
  /** True for router systems, whose model outputs `gate.alpha.N` and `gate.beta.N`. */
  exposesGates: boolean;
  /** Releases the ORT sessions of the system's model. */
  release(): Promise<void>;
}

/** Loads the tokenizer of the system's base model, which every kind of system generates with. */
export function loadSystemTokenizer(spec: SystemSpec): Tokenizer {
  if (!existsSync(join(spec.base, "tokenizer.json"))) {
    throw new MidpoError(
      `system "${spec.name}": base model ${spec.base} has no tokenizer.json, which evaluation ` +
        `needs to encode prompts and decode responses; copy the tokenizer files into it`,
    );
  }
  return Tokenizer.fromDirectory(spec.base);
}

/** Computes a SHA-256 over the files and values that decide the system's outputs. */
export function systemContentHash(spec: SystemSpec, cacheDir = defaultCacheDir()): string {
  const hash = createHash("sha256");
  hash.update(JSON.stringify({ kind: spec.kind, alpha: spec.alpha, beta: spec.beta }));
  hash.update(`base\0${modelContentHash(spec.base, cacheDir)}`);
  for (const role of ["adapter", "safety", "helpfulness"] as const) {
    const dir = spec[role];
    if (dir !== undefined) hash.update(`${role}\0${adapterContentHash(dir)}`);
  }
  if (spec.router !== undefined) {
    for (const file of [ROUTER_CONFIG_FILE, ROUTER_WEIGHTS_FILE]) {
      const path = join(spec.router, file);
      if (!existsSync(path)) {
        throw new MidpoError(`system "${spec.name}": router ${spec.router} has no ${file}`);
      }
      hash.update(`router/${file}\0`).update(readFileSync(path));
    }
  }
  return hash.digest("hex");
}

/** Loads the system's model. Call `release()` when done with it. */
export function buildSystemModel(spec: SystemSpec, tokenizer: Tokenizer): SystemModel {
  const base = loadCausalLM(spec.base, { mapWeights: true });
  checkTokenizerFits(tokenizer, base);
  const modules = decoderLinearModules(base.config);
  let model: CausalLM = base;

  switch (spec.kind) {
    case "base":
      break;
    case "adapter":
      model = withAdapter(base, loadLoraAdapter(required(spec, "adapter"), modules));
      break;
    case "static-mix":
      model = mixedModel(
        base,
        loadExperts(spec, modules),
        { kind: "fixed", alpha: spec.alpha as number, beta: spec.beta as number },
        null,
      );
      break;
    case "router": {
      const experts = loadExperts(spec, modules);
      const router = loadRouter(required(spec, "router"), {
        base: spec.base,
        safety: required(spec, "safety"),
        helpfulness: required(spec, "helpfulness"),
      });
      model = mixedModel(
        base,
        experts,
        { kind: "router", shape: router.config.router },
        router.params,
        true,
      );
      break;
    }
  }

  return {
    model,
    exposesGates: spec.kind === "router",
    release: async () => {
      await model.release();
      if (model !== base) await base.release();
    },
  };
}

function loadExperts(spec: SystemSpec, modules: ReturnType<typeof decoderLinearModules>) {
  return {
    safety: loadLoraAdapter(required(spec, "safety"), modules),
    helpfulness: loadLoraAdapter(required(spec, "helpfulness"), modules),
  };
}

function required(spec: SystemSpec, key: "adapter" | "safety" | "helpfulness" | "router"): string {
  const value = spec[key];
  if (value === undefined) {
    throw new MidpoError(`system "${spec.name}" of kind ${spec.kind} needs "${key}"`);
  }
  return value;
}
