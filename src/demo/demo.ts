// `midpo demo`: the whole MidPO pipeline on the synthetic corpus of corpus.ts and a tiny Llama
// trained from random weights, sized to finish in a few minutes on two CPU cores.

import { mkdirSync, renameSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { Rng } from "../generate/sampling.js";
import { log } from "../log.js";
import type { ModelConfig } from "../model/config.js";
import { weightSpecs } from "../model/llama.js";
import { parseConfig } from "../model/load-config.js";
import { saveCausalLM } from "../model/save.js";
import { parsePipelineConfig, type PipelineConfig } from "../pipeline/config.js";
import { demoRecords, demoSftPairs, splitPrompts, writeDemoTokenizer } from "./corpus.js";

export interface DemoAssets {
  corpus: string;
  sft: string;
  prompts: string[];
  model: string;
}

function writeJsonl(path: string, rows: readonly unknown[]): void {
  writeFileSync(`${path}.tmp`, rows.map((r) => JSON.stringify(r)).join("\n") + "\n");
  renameSync(`${path}.tmp`, path);
}

/** The demo model's config.json: a 4-layer Llama with grouped-query attention. */
export function demoModelConfig(vocabSize: number): Record<string, unknown> {
  return {
    architectures: ["LlamaForCausalLM"],
    model_type: "llama",
    vocab_size: vocabSize,
    hidden_size: 64,
    intermediate_size: 192,
    num_hidden_layers: 4,
    num_attention_heads: 4,
    num_key_value_heads: 2,
    max_position_embeddings: 128,
    rms_norm_eps: 1e-5,
    rope_theta: 10000,
    hidden_act: "silu",
    tie_word_embeddings: false,
    bos_token_id: 1,
    eos_token_id: 2,
    pad_token_id: 0,
    initializer_range: 0.02,
  };
}

/** Random weights as transformers initialises a Llama: N(0, 0.02) matrices, unit norms. */
function randomWeights(config: ModelConfig, rng: Rng): Map<string, Float32Array> {
  const weights = new Map<string, Float32Array>();
  const normal = () => {
    const u = Math.max(rng.next(), 1e-12);
    return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * rng.next());
  };
  for (const spec of weightSpecs(config)) {
    const size = spec.shape.reduce((a, b) => a * b, 1);
    const isNorm = spec.name.endsWith("norm.weight");
    weights.set(
      spec.name,
      Float32Array.from({ length: size }, () => (isNorm ? 1 : 0.02 * normal())),
    );
  }
  return weights;
}

/** Writes the corpus, SFT pairs, held-out prompts, tokenizer and random model into `dir`. */
export function writeDemoAssets(dir: string, seed: number): DemoAssets {
  mkdirSync(dir, { recursive: true });
  const corpus = join(dir, "preferences.jsonl");
  writeJsonl(corpus, demoRecords(seed));
  const sft = join(dir, "sft.jsonl");
  writeJsonl(sft, demoSftPairs(seed));

  const { heldOut } = splitPrompts(seed);
  const prompts = ["harmful", "benign"].map((category) => {
    const path = join(dir, `heldout-${category}.jsonl`);
    writeJsonl(
      path,
      heldOut
        .filter((p) => p.category === category)
        .map((p) => ({
          prompt: p.prompt,
          label: p.harmful ? "unsafe" : "safe",
          category: p.category,
        })),
    );
    return path;
  });

  const model = join(dir, "init-model");
  const vocabSize = writeDemoTokenizer(model);
  const raw = demoModelConfig(vocabSize);
  const config = parseConfig(raw, join(model, "config.json"));
  saveCausalLM(model, config, raw, randomWeights(config, new Rng(seed + 7)));
  log.info({ dir, records: demoRecords(seed).length, vocabSize }, "demo corpus and model written");
  return { corpus, sft, prompts, model };
}

const ALL_LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"];

/** The pipeline settings of the demo, tuned for the tiny model and corpus. */
export function demoPipelineConfig(out: string, assets: DemoAssets, seed: number): PipelineConfig {
  return parsePipelineConfig(
    {
      out,
      seed,
      model: assets.model,
      cache_dir: join(out, "cache"),
      data: { files: [assets.corpus], eval_ratio: 0.1, max_length: 64 },
      sft: {
        data: [assets.sft],
        lora: null,
        lr: 3e-3,
        max_steps: 1000,
        batch_size: 16,
        warmup_ratio: 0.05,
        save_every: 200,
      },
      reward: {
        lora: { r: 8, alpha: 16, target_modules: ALL_LINEAR },
        lr: 3e-3,
        max_steps: 400,
        batch_size: 16,
        save_every: 100,
      },
      cost: {
        lora: { r: 8, alpha: 16, target_modules: ALL_LINEAR },
        lr: 3e-3,
        max_steps: 400,
        batch_size: 16,
        save_every: 100,
      },
      // Score-model margins span a few units here, so SPE-DPO takes a tenth of them.
      experts: {
        lora: { r: 16, alpha: 32, target_modules: ["down_proj"] },
        lr: 2e-3,
        max_steps: 100,
        batch_size: 8,
        beta: 0.1,
        margin_scale: 0.1,
        save_every: 50,
      },
      // D_dual by cost: see corpus.ts for why the label rule leaves the router nothing to learn here.
      router: {
        dual: "cost",
        kind: "compact",
        hidden: 32,
        lr: 1e-2,
        max_steps: 200,
        batch_size: 8,
        save_every: 50,
      },
      eval: { prompts: assets.prompts, max_new_tokens: 24, temperature: 0 },
    },
    "built-in demo config",
    resolve("."),
  );
}
