// Inputs of the training benchmarks, written once by bench/run-train-benches.ts before any
// measuring process starts: the score model, the initial parameters and the plan file.

import { existsSync, mkdirSync, readFileSync } from "node:fs";
import { join } from "node:path";

import { Rng } from "../src/generate/sampling.js";
import { log } from "../src/log.js";
import { initRouterParams, routerParams, type RouterShape } from "../src/midpo/router.js";
import type { ModelConfig } from "../src/model/config.js";
import { loadCausalLM } from "../src/model/load.js";
import { saveScoreModel } from "../src/model/score-model.js";
import { writeSafetensors, type SafetensorsTensor } from "../src/model/safetensors.js";
import { loraInputNames } from "../src/train/lora-graph.js";
import {
  createLoraConfig,
  decoderLinearModules,
  initLoraAdapter,
  targetModulesOf,
} from "../src/train/lora.js";
import { SMOLLM_135M_CONFIG } from "./make-random-model.js";
import type { PlanPair, TrainPlan } from "./train-plan.js";

export interface SetupOptions {
  modelDir: string;
  cacheDir: string;
  seed: number;
  pairs: number;
  promptLength: number;
  responseLength: number;
  scoreSequences: number;
  scoreLength: number;
  scorePromptLength: number;
  scoreBatch: number;
  repeats: number;
  loraR: number;
  loraAlpha: number;
  routerHidden: number;
}

function uniform(size: number, bound: number, rng: Rng): Float32Array {
  return Float32Array.from({ length: size }, () => (2 * rng.next() - 1) * bound);
}

/**
 * Writes a score model beside the random checkpoint: the same backbone plus a random
 * `score.weight` [1, hidden], in transformers' LlamaForSequenceClassification layout, which both
 * sides read. An existing one is kept when its config records the same seed.
 * NOTE: the check does not notice a base model rewritten with the same seed but other weights.
 */
export function ensureScoreModel(modelDir: string, scoreDir: string, seed: number): void {
  const configPath = join(scoreDir, "config.json");
  if (existsSync(configPath)) {
    const config = JSON.parse(readFileSync(configPath, "utf8")) as Record<string, unknown>;
    if (config.midpo_bench_seed === seed) {
      log.info({ dir: scoreDir }, "score model already present, keeping it");
      return;
    }
  }
  const model = loadCausalLM(modelDir);
  const head = { weight: uniform(model.config.hiddenSize, 0.05, new Rng(seed ^ 0x5c0e)), bias: 0 };
  const rawConfig = { ...SMOLLM_135M_CONFIG, midpo_bench_seed: seed };
  saveScoreModel(scoreDir, rawConfig, model.config, model.weights, head, "reward");
  log.info({ dir: scoreDir, seed }, "wrote the score model");
}

/**
 * Draws LoRA weights for down_proj in every layer. lora_A has PEFT's initialisation, but
 * lora_B is uniform in ±0.02 instead of PEFT's zeros. So the adapter changes the model, and
 * both lora_A and lora_B get nonzero gradients to compare between the sides. The FLOPs are
 * the same as with zeros.
 */
function adapterTensors(
  config: ModelConfig,
  r: number,
  alpha: number,
  rng: Rng,
  prefix: string,
): Record<string, SafetensorsTensor> {
  const lora = createLoraConfig({ r, loraAlpha: alpha, targetModules: ["down_proj"] });
  const modules = targetModulesOf(decoderLinearModules(config), lora.targetModules);
  const adapter = initLoraAdapter(lora, modules, rng);
  const tensors: Record<string, SafetensorsTensor> = {};
  for (const [name, m] of adapter.modules) {
    const names = loraInputNames(name);
    tensors[prefix + names.a] = { dtype: "F32", shape: [r, m.inFeatures], data: m.A };
    const b = uniform(m.B.length, 0.02, rng);
    tensors[prefix + names.b] = { dtype: "F32", shape: [m.outFeatures, r], data: b };
  }
  return tensors;
}

/** Writes the DPO adapter, the two experts and the router into `cacheDir`; returns the paths. */
export function writeParamFiles(config: ModelConfig, options: SetupOptions) {
  const { cacheDir, seed, loraR, loraAlpha } = options;
  mkdirSync(cacheDir, { recursive: true });
  const paths = {
    adapter: join(cacheDir, "train-adapter.safetensors"),
    experts: join(cacheDir, "train-experts.safetensors"),
    router: join(cacheDir, "train-router.safetensors"),
  };

  writeSafetensors(paths.adapter, adapterTensors(config, loraR, loraAlpha, new Rng(seed + 1), ""));
  writeSafetensors(paths.experts, {
    ...adapterTensors(config, loraR, loraAlpha, new Rng(seed + 2), "safety."),
    ...adapterTensors(config, loraR, loraAlpha, new Rng(seed + 3), "helpfulness."),
  });

  const shape = routerShape(config, options.routerHidden);
  const values = initRouterParams(shape, new Rng(seed + 4));
  const router: Record<string, SafetensorsTensor> = {};
  for (const p of routerParams(shape)) {
    router[p.name] = { dtype: "F32", shape: p.dims, data: values.get(p.name)! };
  }
  writeSafetensors(paths.router, router);
  return paths;
}

export function routerShape(config: ModelConfig, hidden: number): RouterShape {
  return {
    kind: "reference",
    intermediateSize: config.intermediateSize,
    hidden,
    layers: config.numHiddenLayers,
  };
}

/**
 * Sequences to score, as a preference dataset has them: pairs of responses to one prompt of
 * `scorePromptLength` tokens, every sequence `scoreLength` tokens long. An odd count leaves
 * the last sequence alone.
 */
function scoreSequences(options: SetupOptions, ids: (length: number) => number[]): number[][] {
  const sequences: number[][] = [];
  const responseLength = options.scoreLength - options.scorePromptLength;
  while (sequences.length < options.scoreSequences) {
    const prompt = ids(options.scorePromptLength);
    const responses = Math.min(2, options.scoreSequences - sequences.length);
    for (let i = 0; i < responses; i++) sequences.push([...prompt, ...ids(responseLength)]);
  }
  return sequences;
}

/** Builds the plan: token ids drawn uniformly from the vocabulary, as no id is special here. */
export function makePlan(
  config: ModelConfig,
  options: SetupOptions,
  paths: ReturnType<typeof writeParamFiles>,
  scoreDir: string,
): TrainPlan {
  const rng = new Rng(options.seed);
  const ids = (length: number) =>
    Array.from({ length }, () => Math.floor(rng.next() * config.vocabSize));
  const pairs: PlanPair[] = Array.from({ length: options.pairs }, (_, i) => ({
    prompt_ids: ids(options.promptLength),
    chosen_ids: ids(options.responseLength),
    rejected_ids: ids(options.responseLength),
    // One pair with a margin, as SPE-DPO has, and the rest without.
    margin: i === 0 ? 0.5 : 0,
  }));
  return {
    model_dir: options.modelDir,
    score_model_dir: scoreDir,
    adapter_path: paths.adapter,
    experts_path: paths.experts,
    router_path: paths.router,
    pairs,
    beta: 0.1,
    lora: { r: options.loraR, alpha: options.loraAlpha, target_modules: ["down_proj"] },
    router: { hidden: options.routerHidden, lambda_alpha: 1, lambda_beta: 1 },
    score_sequences: scoreSequences(options, ids),
    score_prompt_length: options.scorePromptLength,
    score_batch: options.scoreBatch,
    repeats: options.repeats,
    // The matmul has as many rows as the step has tokens, and the shape of gate_proj.
    matmul: {
      m: 2 * options.pairs * (options.promptLength + options.responseLength),
      k: config.hiddenSize,
      n: config.intermediateSize,
      runs: 20,
    },
    max_grad_norm: 1,
    learning_rate: 1e-5,
  };
}
