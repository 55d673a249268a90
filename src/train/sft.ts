// Supervised fine-tuning on prompt/response pairs: the mean negative log-likelihood of the
// response tokens (EOS included; prompt tokens are context only), averaged over all response
// tokens of a batch as transformers' causal-LM loss does. Trains a LoRA adapter or every
// weight of a small model; a LoRA run can be merged into full weights at the end.

import { gradients } from "../graph/autodiff.js";
import type { Tensor } from "../graph/graph.js";
import * as op from "../graph/ops.js";
import { Rng } from "../generate/sampling.js";
import type { CausalLM, WeightMap } from "../model/causal-lm.js";
import { buildLlamaGraph, weightSpecs, type LinearOverride } from "../model/llama.js";
import { Session, int64Tensor, tensor, weightFeeds, type Feeds } from "../runtime/session.js";
import { loraLinear, mergeLora } from "./lora-graph.js";
import {
  decoderLinearModules,
  initLoraAdapter,
  loraScale,
  saveLoraAdapter,
  targetModulesOf,
  type LoraAdapter,
  type LoraConfig,
} from "./lora.js";
import { Trainer, type Param, type TrainSummary, type TrainerOptions } from "./trainer.js";

export interface SftExample {
  promptIds: number[];
  /** Response tokens, ending with EOS. */
  responseIds: number[];
}

export interface SftOptions {
  /** LoRA settings, or null for full fine-tuning of every weight. */
  lora: LoraConfig | null;
  trainer: TrainerOptions;
  /** Called with the final weights (merged when LoRA) to write the full model. */
  saveFull: (dir: string, weights: WeightMap) => void;
}

interface Collated {
  rows: number;
  width: number;
  inputIds: BigInt64Array;
  attentionMask: BigInt64Array;
  positionIds: BigInt64Array;
  /** [rows, width - 1]: 1 where the target token belongs to the response. */
  targetMask: Float32Array;
}

export function collateSft(batch: readonly SftExample[], padId = 0): Collated {
  const seqs = batch.map((e) => [...e.promptIds, ...e.responseIds]);
  const rows = seqs.length;
  const width = Math.max(2, ...seqs.map((s) => s.length));
  const inputIds = new BigInt64Array(rows * width);
  const attentionMask = new BigInt64Array(rows * width);
  const positionIds = new BigInt64Array(rows * width);
  const targetMask = new Float32Array(rows * (width - 1));
  seqs.forEach((s, r) => {
    const prompt = batch[r].promptIds.length;
    for (let t = 0; t < width; t++) {
      inputIds[r * width + t] = BigInt(t < s.length ? s[t] : padId);
      attentionMask[r * width + t] = t < s.length ? 1n : 0n;
      positionIds[r * width + t] = BigInt(t);
      if (t < width - 1 && t + 1 >= prompt && t + 1 < s.length) targetMask[r * (width - 1) + t] = 1;
    }
  });
  return { rows, width, inputIds, attentionMask, positionIds, targetMask };
}

export async function trainSft(
  model: CausalLM,
  train: SftExample[],
  evalSet: SftExample[],
  options: SftOptions,
): Promise<{ summary: TrainSummary; adapter: LoraAdapter | null; weights: WeightMap }> {
  const config = model.config;
  const params = new Map<string, Param>();
  let adapter: LoraAdapter | null = null;
  let linear: LinearOverride | undefined;
  let loraInputs: Map<string, Tensor> | null = null;
  // Full fine-tuning trains copies, so the loaded model stays as it was.
  const weights: WeightMap = new Map(model.weights);

  if (options.lora !== null) {
    const lora = options.lora;
    const modules = targetModulesOf(decoderLinearModules(config), lora.targetModules);
    adapter = initLoraAdapter(lora, modules, new Rng(options.trainer.seed ^ 0x5f7));
    const branch = loraLinear(
      modules.map((m) => ({ ...m, r: lora.r })),
      loraScale(lora),
      false,
    );
    linear = branch.linear;
    loraInputs = branch.params;
    for (const [name, m] of adapter.modules) {
      params.set(`${name}.lora_A.weight`, { data: m.A, dims: [lora.r, m.inFeatures] });
      params.set(`${name}.lora_B.weight`, { data: m.B, dims: [m.outFeatures, lora.r] });
    }
  } else {
    for (const spec of weightSpecs(config)) {
      const copy = Float32Array.from(model.weights.get(spec.name)!);
      weights.set(spec.name, copy);
      params.set(spec.name, { data: copy, dims: spec.shape });
    }
  }

  const g = buildLlamaGraph(config, { output: "token-logprobs", linear, forGradients: true });
  const tokenLogprobs = g.outputs.find((t) => t.name === "token_logprobs")!;
  const targetMask = g.input("target_mask", "float32", ["batch", "targets"]);
  const total = op.reduceSum(op.mul(tokenLogprobs, targetMask), [0, 1], false);
  const count = op.reduceSum(targetMask, [0, 1], false);
  const loss = op.neg(op.div(total, count)); // mean NLL over response tokens
  const byName = new Map(g.inputs.map((t) => [t.name, t]));
  const names = [...params.keys()];
  const wrt = names.map((n) => loraInputs?.get(n) ?? byName.get(n)!);
  const grads = gradients(loss, wrt);
  g.output("loss", loss);
  g.output("tokens", count);
  names.forEach((n, i) => g.output(`grad.${n}`, grads.get(wrt[i])!));

  const session = await Session.create(g, { bound: weightFeeds(g, model.weights, params) });

  const run = async (batch: SftExample[]) => {
    const c = collateSft(batch);
    const feeds: Feeds = {
      input_ids: int64Tensor(c.inputIds, [c.rows, c.width]),
      attention_mask: int64Tensor(c.attentionMask, [c.rows, c.width]),
      position_ids: int64Tensor(c.positionIds, [c.rows, c.width]),
      target_mask: tensor("float32", c.targetMask, [c.rows, c.width - 1]),
    };
    for (const [n, p] of params) feeds[n] = tensor("float32", p.data, p.dims);
    const out = await session.run(feeds);
    const value = Number(out.loss.data[0]);
    return {
      loss: value,
      grads: new Map(names.map((n) => [n, out[`grad.${n}`].data as Float32Array])),
      metrics: { perplexity: Math.exp(value) },
    };
  };

  const finalWeights = () => (adapter !== null ? mergeLora(model.weights, adapter) : weights);
  const trainer = new Trainer<SftExample>(
    {
      params,
      train,
      eval: evalSet,
      lengthOf: (e) => e.promptIds.length + e.responseIds.length,
      step: (batch) => run(batch),
      evaluate: async (batch) => {
        const r = await run(batch);
        return { loss: r.loss, perplexity: r.metrics.perplexity };
      },
      save: (dir, final) => {
        if (adapter !== null) saveLoraAdapter(dir, adapter);
        if (final) options.saveFull(dir, finalWeights());
      },
    },
    options.trainer,
  );
  try {
    const summary = await trainer.run();
    return { summary, adapter, weights: finalWeights() };
  } finally {
    await session.release();
  }
}
