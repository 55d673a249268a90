// A trained router on disk: `router.safetensors` (the gate networks) and `router_config.json`,
// which names the base model and both expert adapters with content hashes. A router only
// makes sense with the exact experts it learned to mix, so loading it against different
// ones is an error.

import { createHash } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { MidpoError } from "../errors.js";
import { SafetensorsCheckpoint } from "../model/safetensors-checkpoint.js";
import { writeSafetensors, type SafetensorsTensor } from "../model/safetensors.js";
import { modelContentHash } from "../train/cache.js";
import { ADAPTER_CONFIG_FILE, ADAPTER_WEIGHTS_FILE } from "../train/lora.js";
import { routerParams, type RouterShape } from "./router.js";

export const ROUTER_CONFIG_FILE = "router_config.json";
export const ROUTER_WEIGHTS_FILE = "router.safetensors";

export interface Provenance {
  path: string;
  sha256: string;
}

export interface RouterConfig {
  format: "midpo-router/v1";
  router: RouterShape;
  lambdaAlpha: number;
  lambdaBeta: number;
  baseModel: Provenance;
  safety: Provenance;
  helpfulness: Provenance;
}

/** SHA-256 over an adapter directory's config and weights. */
export function adapterContentHash(dir: string): string {
  const hash = createHash("sha256");
  for (const file of [ADAPTER_CONFIG_FILE, ADAPTER_WEIGHTS_FILE]) {
    const path = join(dir, file);
    if (!existsSync(path)) throw new MidpoError(`adapter ${dir} has no ${file}`);
    hash.update(`${file}\0`).update(readFileSync(path));
  }
  return hash.digest("hex");
}

export function provenance(baseDir: string, safetyDir: string, helpfulnessDir: string) {
  return {
    baseModel: { path: resolve(baseDir), sha256: modelContentHash(baseDir) },
    safety: { path: resolve(safetyDir), sha256: adapterContentHash(safetyDir) },
    helpfulness: { path: resolve(helpfulnessDir), sha256: adapterContentHash(helpfulnessDir) },
  };
}

export function saveRouter(
  dir: string,
  config: RouterConfig,
  params: Map<string, Float32Array>,
): void {
  mkdirSync(dir, { recursive: true });
  const tensors: Record<string, SafetensorsTensor> = {};
  for (const p of routerParams(config.router)) {
    tensors[p.name] = { dtype: "F32", shape: p.dims, data: params.get(p.name)! };
  }
  writeSafetensors(join(dir, ROUTER_WEIGHTS_FILE), tensors);
  const path = join(dir, ROUTER_CONFIG_FILE);
  writeFileSync(`${path}.tmp`, JSON.stringify(config, null, 2) + "\n");
  renameSync(`${path}.tmp`, path);
}

export function readRouterConfig(dir: string): RouterConfig {
  const path = join(dir, ROUTER_CONFIG_FILE);
  if (!existsSync(path)) {
    throw new MidpoError(
      `${dir} has no ${ROUTER_CONFIG_FILE}; pass a directory written by train-router`,
    );
  }
  const config = JSON.parse(readFileSync(path, "utf8")) as RouterConfig;
  if (config.format !== "midpo-router/v1") {
    throw new MidpoError(`${path}: unknown format ${JSON.stringify(config.format)}`);
  }
  return config;
}

/**
 * Loads router weights after checking that `baseDir`, `safetyDir` and `helpfulnessDir` hold
 * the same content the router was trained with (paths may differ; hashes must not).
 */
export function loadRouter(
  dir: string,
  dirs: { base: string; safety: string; helpfulness: string },
): { config: RouterConfig; params: Map<string, Float32Array> } {
  const config = readRouterConfig(dir);
  const actual = provenance(dirs.base, dirs.safety, dirs.helpfulness);
  const checks: [string, Provenance, Provenance][] = [
    ["base model", config.baseModel, actual.baseModel],
    ["safety adapter", config.safety, actual.safety],
    ["helpfulness adapter", config.helpfulness, actual.helpfulness],
  ];
  for (const [what, trained, given] of checks) {
    if (trained.sha256 !== given.sha256) {
      throw new MidpoError(
        `router ${dir} was trained with ${what} ${trained.path} (sha256 ${trained.sha256.slice(0, 12)}), ` +
          `but ${given.path} has different content (sha256 ${given.sha256.slice(0, 12)}); ` +
          `pass the ${what} it was trained with, or train a new router`,
      );
    }
  }
  const file = SafetensorsCheckpoint.open(join(dir, ROUTER_WEIGHTS_FILE));
  const params = new Map<string, Float32Array>();
  for (const p of routerParams(config.router)) params.set(p.name, file.readFloat32(p.name, p.dims));
  return { config, params };
}
