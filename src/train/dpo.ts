// DPO-family training of a LoRA adapter: reference log-probs from the disk cache, then the
// shared trainer running one preference step per micro-batch.

import { Rng } from "../generate/sampling.js";
import { log } from "../log.js";
import type { CausalLM } from "../model/causal-lm.js";
import { tensor, type Feeds } from "../runtime/session.js";
import { ValueCache, hashKey, modelContentHash } from "./cache.js";
import { loraLinear } from "./lora-graph.js";
import {
  decoderLinearModules,
  initLoraAdapter,
  loraScale,
  saveLoraAdapter,
  targetModulesOf,
  type LoraAdapter,
  type LoraConfig,
} from "./lora.js";
import type { LossOptions } from "./losses.js";
import { collatePairs, responseLogps, type TokenizedPair } from "./preference-batch.js";
import { PreferenceStep, buildPreferenceGraph, preferenceMetrics } from "./preference-step.js";
import { Trainer, type Param, type TrainSummary, type TrainerOptions } from "./trainer.js";

/** A tokenized pair with its reference log-probs attached. */
export interface ScoredPair extends TokenizedPair {
  refChosen: number;
  refRejected: number;
}

/**
 * Sequence log-probs of the frozen reference model for every pair, read from the cache when
 * the same model and token ids were scored before. Returns [chosen, rejected] per pair.
 */
export async function referenceLogps(
  model: CausalLM,
  modelDir: string,
  pairs: readonly TokenizedPair[],
  cache: ValueCache,
): Promise<ScoredPair[]> {
  const key = hashKey({
    kind: "ref-logps/v1",
    model: modelContentHash(modelDir, cache.dir),
    pairs: pairs.map((p) => [p.promptIds, p.chosenIds, p.rejectedIds]),
  });
  const { values, hit } = await cache.getOrCompute(
    "ref-logps",
    key,
    pairs.length * 2,
    { model: modelDir, pairs: pairs.length },
    async () => {
      const out = new Float64Array(pairs.length * 2);
      const chunk = 64;
      for (let start = 0; start < pairs.length; start += chunk) {
        const part = pairs.slice(start, start + chunk);
        const batch = collatePairs(part);
        const rows = [
          ...part.map((p) => [...p.promptIds, ...p.chosenIds]),
          ...part.map((p) => [...p.promptIds, ...p.rejectedIds]),
        ];
        const tokenLp = await model.tokenLogprobs(rows);
        const flat = new Float32Array(batch.rows * (batch.width - 1));
        tokenLp.forEach((lp, r) => flat.set(lp, r * (batch.width - 1)));
        const seq = responseLogps(flat, batch);
        part.forEach((_, i) => {
          out[2 * (start + i)] = seq[i];
          out[2 * (start + i) + 1] = seq[part.length + i];
        });
      }
      return out;
    },
  );
  log.info({ pairs: pairs.length, cached: hit }, "reference log-probs ready");
  return pairs.map((p, i) => ({ ...p, refChosen: values[2 * i], refRejected: values[2 * i + 1] }));
}

export interface DpoOptions {
  lora: LoraConfig;
  loss: LossOptions;
  trainer: TrainerOptions;
}

/** Parameters of an adapter as the trainer sees them: views of the adapter's own arrays. */
function adapterParams(adapter: LoraAdapter): Map<string, Param> {
  const params = new Map<string, Param>();
  for (const [name, m] of adapter.modules) {
    params.set(`${name}.lora_A.weight`, { data: m.A, dims: [adapter.config.r, m.inFeatures] });
    params.set(`${name}.lora_B.weight`, { data: m.B, dims: [m.outFeatures, adapter.config.r] });
  }
  return params;
}

/** Draws inverted-dropout masks (0 or 1 / (1 - p)) for each adapted module's input. */
function dropoutFeeds(
  adapter: LoraAdapter,
  rows: number,
  width: number,
  p: number,
  rng: Rng | null,
): Feeds {
  const feeds: Feeds = {};
  for (const [name, m] of adapter.modules) {
    const mask = new Float32Array(rows * width * m.inFeatures);
    if (rng === null) mask.fill(1);
    else for (let i = 0; i < mask.length; i++) mask[i] = rng.next() < p ? 0 : 1 / (1 - p);
    feeds[`${name}.lora_dropout_mask`] = tensor("float32", mask, [rows, width, m.inFeatures]);
  }
  return feeds;
}

export async function trainDpo(
  model: CausalLM,
  train: ScoredPair[],
  evalPairs: ScoredPair[],
  options: DpoOptions,
): Promise<{ adapter: LoraAdapter; summary: TrainSummary }> {
  const { lora, loss } = options;
  const modules = targetModulesOf(decoderLinearModules(model.config), lora.targetModules);
  const adapter = initLoraAdapter(lora, modules, new Rng(options.trainer.seed ^ 0x5eed));
  const dropout = lora.loraDropout > 0;
  const branch = loraLinear(
    modules.map((m) => ({ ...m, r: lora.r })),
    loraScale(lora),
    dropout,
  );
  const graph = buildPreferenceGraph(model.config, branch.linear, () => branch.params, loss);
  const step = await PreferenceStep.create(graph, model.weights);
  const params = adapterParams(adapter);

  const run = async (batch: ScoredPair[], rng: Rng | null) => {
    const collated = collatePairs(batch);
    const ref = Float32Array.from([
      ...batch.map((p) => p.refChosen),
      ...batch.map((p) => p.refRejected),
    ]);
    const extra = dropout
      ? dropoutFeeds(adapter, collated.rows, collated.width, lora.loraDropout, rng)
      : {};
    const result = await step.run(collated, ref, params, extra);
    return { result, metrics: preferenceMetrics(result.logps, ref, loss.beta) };
  };

  const trainer = new Trainer<ScoredPair>(
    {
      params,
      train,
      eval: evalPairs,
      lengthOf: (p) => p.promptIds.length + Math.max(p.chosenIds.length, p.rejectedIds.length),
      step: async (batch, rng) => {
        const { result, metrics } = await run(batch, rng);
        return { loss: result.loss, grads: result.grads, metrics: { ...metrics } };
      },
      evaluate: async (batch) => {
        const { result, metrics } = await run(batch, null);
        return { loss: result.loss, ...metrics };
      },
      save: (dir) => saveLoraAdapter(dir, adapter),
    },
    options.trainer,
  );
  try {
    const summary = await trainer.run();
    return { adapter, summary };
  } finally {
    await step.release();
  }
}
