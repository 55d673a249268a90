// Writes a randomly initialised checkpoint shaped like SmolLM-135M (HuggingFaceTB/SmolLM-135M:
// LlamaForCausalLM, 30 layers, hidden 576, 9 query heads over 3 KV heads, tied embeddings) in
// Hugging Face layout: config.json plus one float32 model.safetensors of about 538 MB.
//
// The benchmarks need a model of a real size but no real text. Every matrix is drawn from
// N(0, 0.02^2) and every RMSNorm weight is 1, with a seeded generator, so that each run and each
// implementation reads the same numbers.
//
// Usage: npx tsx bench/make-random-model.ts [--dir DIR] [--seed N] [--force]

import { existsSync, mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { Command } from "commander";

import { Rng } from "../src/generate/sampling.js";
import { log } from "../src/log.js";
import { parseConfig } from "../src/model/load-config.js";
import { weightSpecs } from "../src/model/llama.js";
import { writeSafetensors, type SafetensorsTensor } from "../src/model/safetensors.js";

export const DEFAULT_MODEL_DIR = "bench/.cache/smollm-135m-random";
export const DEFAULT_MODEL_SEED = 1234;

/** The size keys of SmolLM-135M's config.json; the token ids are those of its tokenizer. */
export const SMOLLM_135M_CONFIG = {
  architectures: ["LlamaForCausalLM"],
  model_type: "llama",
  hidden_size: 576,
  intermediate_size: 1536,
  num_hidden_layers: 30,
  num_attention_heads: 9,
  num_key_value_heads: 3,
  head_dim: 64,
  vocab_size: 49152,
  tie_word_embeddings: true,
  rms_norm_eps: 1e-5,
  rope_theta: 10000,
  max_position_embeddings: 2048,
  hidden_act: "silu",
  attention_bias: false,
  mlp_bias: false,
  bos_token_id: 0,
  eos_token_id: 0,
  torch_dtype: "float32",
} as const;

const WEIGHT_STD = 0.02;

/** Fills `out` with N(0, std^2) samples by the Box-Muller transform. */
function fillNormal(out: Float32Array, std: number, rng: Rng): void {
  for (let i = 0; i < out.length; i += 2) {
    // 1 - next() lies in (0, 1], so the logarithm stays finite.
    const radius = std * Math.sqrt(-2 * Math.log(1 - rng.next()));
    const angle = 2 * Math.PI * rng.next();
    out[i] = radius * Math.cos(angle);
    if (i + 1 < out.length) out[i + 1] = radius * Math.sin(angle);
  }
}

/**
 * Writes the random checkpoint to `dir` unless config.json and model.safetensors are both there
 * already (or `force` is set). Returns true when it wrote the files.
 */
export function ensureRandomModel(dir: string, seed: number, force = false): boolean {
  const configPath = join(dir, "config.json");
  const weightsPath = join(dir, "model.safetensors");
  if (!force && existsSync(configPath) && existsSync(weightsPath)) {
    log.info({ dir }, "random model already present, keeping it");
    return false;
  }

  mkdirSync(dir, { recursive: true });
  const config = parseConfig(SMOLLM_135M_CONFIG, "SMOLLM_135M_CONFIG");
  const rng = new Rng(seed);
  const tensors: Record<string, SafetensorsTensor> = {};
  let parameters = 0;

  // Tensors are drawn in weightSpecs order from one stream, so the seed fixes every value.
  for (const spec of weightSpecs(config)) {
    const size = spec.shape.reduce((a, b) => a * b, 1);
    const data = new Float32Array(size);
    if (spec.name.endsWith("norm.weight")) {
      data.fill(1);
    } else {
      fillNormal(data, WEIGHT_STD, rng);
    }
    tensors[spec.name] = { dtype: "F32", shape: spec.shape, data };
    parameters += size;
  }

  writeSafetensors(weightsPath, tensors, { seed: String(seed), std: String(WEIGHT_STD) });
  // config.json goes last: a run that stops early leaves no config, so the next run rewrites.
  writeFileSync(configPath, JSON.stringify(SMOLLM_135M_CONFIG, null, 2) + "\n");
  log.info({ dir, seed, parameters }, "wrote random SmolLM-135M-shaped model");
  return true;
}

function main(): void {
  const program = new Command("make-random-model")
    .description("Write a random SmolLM-135M-shaped float32 checkpoint for the benchmarks")
    .option("--dir <path>", "output directory", DEFAULT_MODEL_DIR)
    .option(
      "--seed <n>",
      "seed of the weight generator",
      (v) => Number.parseInt(v, 10),
      DEFAULT_MODEL_SEED,
    )
    .option("--force", "rewrite the files even when they exist", false)
    .parse();
  const opts = program.opts<{ dir: string; seed: number; force: boolean }>();
  ensureRandomModel(opts.dir, opts.seed, opts.force);
}

if (import.meta.url === pathToFileURL(process.argv[1]).href) main();
