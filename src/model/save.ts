// Writing a causal LM in Hugging Face layout: config.json, model.safetensors (F32) and the
// tokenizer files of the model it came from.

import { copyFileSync, existsSync, mkdirSync, renameSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { writeSafetensors, type SafetensorsTensor } from "./safetensors.js";
import type { WeightMap } from "./causal-lm.js";
import type { ModelConfig } from "./config.js";
import { weightSpecs } from "./llama.js";

export const TOKENIZER_FILES = [
  "tokenizer.json",
  "tokenizer_config.json",
  "special_tokens_map.json",
  "generation_config.json",
  "chat_template.jinja",
];

/** Copies whichever tokenizer files exist in `from` into `to`. */
export function copyTokenizerFiles(from: string, to: string): void {
  for (const file of TOKENIZER_FILES) {
    if (existsSync(join(from, file))) copyFileSync(join(from, file), join(to, file));
  }
}

/**
 * Writes config.json and model.safetensors into `dir`, each to a temporary name first and
 * then renamed, keeping other files in `dir`. `rawConfig` is the original config.json, so
 * keys midpo does not read survive the round trip.
 */
export function saveCausalLM(
  dir: string,
  config: ModelConfig,
  rawConfig: Record<string, unknown>,
  weights: WeightMap,
): void {
  mkdirSync(dir, { recursive: true });
  const tensors: Record<string, SafetensorsTensor> = {};
  for (const spec of weightSpecs(config)) {
    const data = weights.get(spec.name);
    if (data === undefined) throw new Error(`saveCausalLM: weight ${spec.name} is missing`);
    tensors[spec.name] = { dtype: "F32", shape: spec.shape, data };
  }
  writeSafetensors(join(dir, "model.safetensors"), tensors);
  const path = join(dir, "config.json");
  writeFileSync(
    `${path}.tmp`,
    JSON.stringify({ ...rawConfig, torch_dtype: "float32" }, null, 2) + "\n",
  );
  renameSync(`${path}.tmp`, path);
}
