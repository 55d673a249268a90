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

/**
 * Returns the pipeline settings of the demo, tuned for the tiny model and corpus. Step counts
 * and learning rates are far from the 7B reference settings because the model starts from
 * random weights and has about 0.2 M parameters.
 */
export function demoPipelineConfig(out: string, assets: DemoAssets, seed: number): PipelineConfig {
  return parsePipelineConfig(
    {
      out,
      seed,
      model: assets.model,
      cache_dir: join(out, "cache"),
      data: { files: [assets.corpus], eval_ratio: 0.1, max_length: 64 },
      // 800 steps teach the model to copy the verb and object of a held-out prompt into its
      // answer. After 400 steps it gave the right object of a held-out harmful prompt a
      // probability of 0.09, after 800 steps 0.62 (0.99 for a benign one).
      sft: {
        data: [assets.sft],
        lora: null,
        lr: 3e-3,
        max_steps: 800,
        batch_size: 16,
        warmup_ratio: 0.05,
        save_every: 200,
      },
      reward: {
        lora: { r: 8, alpha: 16, target_modules: ["q_proj", "v_proj", "down_proj"] },
        lr: 3e-3,
        max_steps: 120,
        batch_size: 16,
        save_every: 40,
      },
      cost: {
        lora: { r: 8, alpha: 16, target_modules: ["q_proj", "v_proj", "down_proj"] },
        lr: 3e-3,
        max_steps: 120,
        batch_size: 16,
        save_every: 40,
      },
      // The SPE-DPO margins keep the reference scale of 1, so they reach about 14 here (the
      // score gap between an answer and a refusal). With lr 2e-3, 100 steps and even a tenth of
      // those margins, the log-probabilities of the chosen responses fell with the rejected
      // ones (from -1.7 to -34 for the helpfulness expert), and the experts generated
      // repetitions such as "the the the". At lr 1e-3 and 60 steps they stay within about 2
      // of the reference model's.
      experts: {
        lora: { r: 16, alpha: 32, target_modules: ["down_proj"] },
        lr: 1e-3,
        max_steps: 60,
        batch_size: 8,
        beta: 0.1,
        save_every: 30,
      },
      // D_dual by label would be a subset of D_h with the same preferences, which the
      // helpfulness expert already fits, so the router would have nothing to learn. D_dual by
      // cost prefers refusals on harmful prompts (see corpus.ts). With the reference
      // regulariser weights of 1, the gates of `--seed 2` went to "helpfulness expert only"
      // within 30 steps, where the sigmoid's gradient vanishes, and stayed there. At 0.1 the
      // router learns to turn the helpfulness expert off or the safety expert on for harmful
      // prompts. A compact router of width 32 is enough for an MLP of width 192.
      // NOTE: the outcome depends on the seed. With seeds 0 and 2 the router sends harmful
      // prompts to the safety side and benign ones to the helpfulness expert. With `--seed 1`
      // it keeps the helpfulness expert on everywhere and answers harmful prompts. Small
      // numeric changes in training have moved seeds between these two groups.
      router: {
        dual: "cost",
        kind: "compact",
        hidden: 32,
        lambda_alpha: 0.1,
        lambda_beta: 0.1,
        lr: 1e-2,
        max_steps: 150,
        batch_size: 8,
        save_every: 50,
      },
      eval: { prompts: assets.prompts, max_new_tokens: 24, temperature: 0 },
    },
    "built-in demo config",
    resolve("."),
  );
}
