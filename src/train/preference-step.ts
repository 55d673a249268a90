// One preference-optimisation step as a single graph: the policy's forward pass over the
// chosen and rejected rows, the sequence log-probs, the loss, and the gradients of the
// trainable inputs. The reference model's log-probs come in as an input (computed once and
// cached), so the step runs the policy only.

import { gradients } from "../graph/autodiff.js";
import type { Graph, Tensor } from "../graph/graph.js";
import * as op from "../graph/ops.js";
import type { ModelConfig } from "../model/config.js";
import { buildLlamaGraph, type LinearOverride } from "../model/llama.js";
import { Session, int64Tensor, tensor, weightFeeds, type Feeds } from "../runtime/session.js";
import type { WeightMap } from "../model/causal-lm.js";
import { meanLoss, type LossOptions } from "./losses.js";
import type { CollatedPairs } from "./preference-batch.js";

export interface PreferenceGraph {
  graph: Graph;
  /** Names of the trainable inputs, in the order of the `grad.<name>` outputs. */
  trainable: string[];
}

/**
 * Builds the step graph. `linear` adds the trainable branches (LoRA, router) and
 * `trainableParams` returns their input tensors once the model is built.
 * Inputs besides the model's: `logit_positions` and `response_mask` [rows, picked] (see
 * `batchFeeds`), `ref_logps` [rows], `margins` [pairs]. Outputs: `loss`, `logps` [rows], and
 * `grad.<name>` per parameter.
 */
export function buildPreferenceGraph(
  config: ModelConfig,
  linear: LinearOverride,
  trainableParams: () => Map<string, Tensor>,
  loss: LossOptions,
  dtype: "float32" | "float64" = "float32",
  extraLoss?: (g: Graph) => Tensor | null,
): PreferenceGraph {
  // The lm_head runs at response positions only: in a DPO step over prompts as long as their
  // responses, that halves its forward and backward work, about a fifth of the step.
  const g = buildLlamaGraph(config, {
    output: "position-logprobs",
    dtype,
    linear,
    forGradients: true,
  });
  const tokenLogprobs = g.outputs.find((t) => t.name === "token_logprobs")!;
  const responseMask = g.input("response_mask", dtype, ["batch", "picked"]);
  const refLogps = g.input("ref_logps", dtype, ["batch"]);
  const margins = g.input("margins", dtype, ["pairs"]);

  // Sequence log-prob: the sum over response tokens, EOS included.
  const logps = op.reduceSum(op.mul(tokenLogprobs, responseMask), [1], false); // [rows]
  const logRatios = op.reshape(op.sub(logps, refLogps), [2, -1]); // [2, pairs]
  const chosen = op.squeeze(op.slice(logRatios, [0], [0], [1]), [0]);
  const rejected = op.squeeze(op.slice(logRatios, [0], [1], [2]), [0]);
  const beta = op.scalar(g, loss.beta, dtype);
  const z = op.sub(op.mul(beta, op.sub(chosen, rejected)), margins); // β·Δ − m
  let total = meanLoss(z, loss);
  const extra = extraLoss?.(g);
  if (extra) total = op.add(total, extra);

  const params = trainableParams();
  const names = [...params.keys()];
  const grads = gradients(
    total,
    names.map((n) => params.get(n)!),
  );
  g.output("loss", total);
  g.output("logps", logps);
  names.forEach((n) => g.output(`grad.${n}`, grads.get(params.get(n)!)!));
  return { graph: g, trainable: names };
}

/** Builds the token inputs of a step graph for a collated batch, response mask in `dtype`. */
export function batchFeeds(batch: CollatedPairs, dtype: "float32" | "float64" = "float32"): Feeds {
  const { rows, width, picked } = batch;
  const mask = dtype === "float32" ? batch.pickedMask : Float64Array.from(batch.pickedMask);
  return {
    input_ids: int64Tensor(batch.inputIds, [rows, width]),
    attention_mask: int64Tensor(batch.attentionMask, [rows, width]),
    position_ids: int64Tensor(batch.positionIds, [rows, width]),
    logit_positions: int64Tensor(batch.logitPositions, [rows, picked]),
    response_mask: tensor(dtype, mask, [rows, picked]),
  };
}

export interface StepResult {
  loss: number;
  /** Policy sequence log-probs, chosen rows then rejected rows. */
  logps: number[];
  grads: Map<string, Float32Array>;
  /** Every graph output, for callers that add their own (e.g. gate means). */
  outputs: Record<string, { data: unknown }>;
}

/** Runs a preference graph with frozen weights bound once and parameters fed per step. */
export class PreferenceStep {
  private constructor(
    private readonly session: Session,
    readonly trainable: string[],
  ) {}

  static async create(pg: PreferenceGraph, frozen: WeightMap): Promise<PreferenceStep> {
    const bound = weightFeeds(pg.graph, frozen);
    return new PreferenceStep(await Session.create(pg.graph, { bound }), pg.trainable);
  }

  async run(
    batch: CollatedPairs,
    refLogps: Float32Array,
    params: Map<string, { data: Float32Array; dims: number[] }>,
    extraFeeds: Feeds = {},
  ): Promise<StepResult> {
    const feeds: Feeds = {
      ...extraFeeds,
      ...batchFeeds(batch),
      ref_logps: tensor("float32", refLogps, [batch.rows]),
      margins: tensor("float32", batch.margins, [batch.pairs]),
    };
    for (const name of this.trainable) {
      const p = params.get(name);
      if (p === undefined) throw new Error(`preference step: no value for parameter ${name}`);
      feeds[name] = tensor("float32", p.data, p.dims);
    }
    const out = await this.session.run(feeds);
    const grads = new Map<string, Float32Array>();
    for (const name of this.trainable) grads.set(name, out[`grad.${name}`].data as Float32Array);
    return {
      loss: Number(out.loss.data[0]),
      logps: Array.from(out.logps.data as Float32Array),
      grads,
      outputs: out,
    };
  }

  async release(): Promise<void> {
    await this.session.release();
  }
}

export interface PreferenceMetrics {
  "rewards/chosen": number;
  "rewards/rejected": number;
  "rewards/accuracies": number;
  "rewards/margins": number;
  "logps/chosen": number;
  "logps/rejected": number;
}

/** TRL's DPO metrics: implicit rewards β·(log π − log π_ref), averaged over pairs. */
export function preferenceMetrics(
  logps: number[],
  refLogps: ArrayLike<number>,
  beta: number,
): PreferenceMetrics {
  const pairs = logps.length / 2;
  const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
  const chosen: number[] = [];
  const rejected: number[] = [];
  for (let i = 0; i < pairs; i++) {
    chosen.push(beta * (logps[i] - refLogps[i]));
    rejected.push(beta * (logps[pairs + i] - refLogps[pairs + i]));
  }
  return {
    "rewards/chosen": mean(chosen),
    "rewards/rejected": mean(rejected),
    "rewards/accuracies": mean(chosen.map((c, i) => (c > rejected[i] ? 1 : 0))),
    "rewards/margins": mean(chosen.map((c, i) => c - rejected[i])),
    "logps/chosen": mean(logps.slice(0, pairs)),
    "logps/rejected": mean(logps.slice(pairs)),
  };
}
