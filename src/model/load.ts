// Loading a model directory (or hub id) into a CausalLM, with its tokenizer when it has one.

import { existsSync } from "node:fs";
import { join } from "node:path";
import { MidpoError } from "../errors.js";
import type { Tokenizer } from "../tokenize/tokenizer.js";
import { CausalLM } from "./causal-lm.js";
import { weightSpecs } from "./llama.js";
import { loadConfig } from "./load-config.js";
import { SafetensorsCheckpoint } from "./safetensors-checkpoint.js";
import { readOrMapWeights } from "./mapped-weights.js";

export interface LoadedModel {
  model: CausalLM;
  /** Undefined when the directory has no tokenizer.json (inputs must then be token ids). */
  tokenizer: Tokenizer | undefined;
  directory: string;
}

export interface LoadOptions {
  /**
   * Leave float32 weights in the checkpoint file for ORT to map when a session is created,
   * instead of reading them into memory. The model then serves inference (log-probs,
   * generation, adapters and experts on top) but not training, which updates or reads
   * weights in memory. Saves the copy of the weights in JavaScript and the per-run inputs
   * that bind them. F16 and BF16 weights are still read and widened.
   *
   * NOTE: the file must stay as it is while the model is in use. A file replaced before a
   * session starts is rejected, but one rewritten in place or truncated under a running
   * session changes its results or ends the process (SIGBUS), as with any memory-mapped
   * file. Each session maps the file on its own, so resident memory counts the weights once
   * per session, although the pages are shared.
   */
  mapWeights?: boolean;
}

/** Reads config.json and every weight (widened to float32) from a model directory. */
export function loadCausalLM(dir: string, options: LoadOptions = {}): CausalLM {
  const config = loadConfig(join(dir, "config.json"));
  const checkpoint = SafetensorsCheckpoint.open(dir);
  const { inMemory, mapped } = readOrMapWeights(
    checkpoint,
    weightSpecs(config),
    options.mapWeights === true,
  );
  return new CausalLM(config, inMemory, dir, true, undefined, mapped);
}

/** Rejects a tokenizer that can produce ids the model has no embedding for. */
export function checkTokenizerFits(tokenizer: Tokenizer, model: CausalLM): void {
  if (tokenizer.vocabSize > model.config.vocabSize) {
    throw new MidpoError(
      `the tokenizer in ${tokenizer.directory} has ${tokenizer.vocabSize} tokens but the model ` +
        `${model.source} has vocab_size ${model.config.vocabSize}; use the tokenizer that was ` +
        `trained with this model`,
    );
  }
}

/**
 * Resolves `arg` (a directory or a hub id), then loads the model and, when `withTokenizer`
 * is "if-present" or "required", its tokenizer.
 */
export async function loadModel(
  arg: string,
  withTokenizer: "required" | "if-present" | "no",
  options: LoadOptions = {},
): Promise<LoadedModel> {
  // Loaded on use: the hub client and its dependencies take about 14 MiB of memory, which a
  // program that only opens local directories through loadCausalLM does not need.
  const { resolveModel } = await import("../hub/resolve.js");
  const directory = await resolveModel(arg);
  const model = loadCausalLM(directory, options);
  let tokenizer: Tokenizer | undefined;
  const hasTokenizer = existsSync(join(directory, "tokenizer.json"));
  if (withTokenizer === "required" || (withTokenizer === "if-present" && hasTokenizer)) {
    // Loaded on use, like the hub client: the tokenizer libraries take about 9 MiB.
    const { Tokenizer } = await import("../tokenize/tokenizer.js");
    tokenizer = Tokenizer.fromDirectory(directory);
    checkTokenizerFits(tokenizer, model);
  }
  return { model, tokenizer, directory };
}
