// Training reward and cost models through the shared trainer.
//
// Reward model (Bradley-Terry on helpfulness pairs):  −log σ(R(y_w) − R(y_l))
// Cost model (safety pairs, y_w the safer response):
//   −log σ(C(y_l) − C(y_w)) − log σ(s_w·C(y_w)) − log σ(s_l·C(y_l)),
// with s = +1 for a response labelled unsafe and −1 for one labelled safe (a response without
// a label contributes no sign term). Both average over pairs and may add
// `regularization · mean(score²)`.
//
// Trainable: the score head always, plus either LoRA adapters on chosen modules or the full
// weights of the last N decoder layers.

import { gradients } from "../graph/autodiff.js";
import type { Tensor } from "../graph/graph.js";
import * as op from "../graph/ops.js";
import { Rng } from "../generate/sampling.js";
import type { WeightMap } from "../model/causal-lm.js";
import type { ModelConfig } from "../model/config.js";
import { weightSpecs } from "../model/llama.js";
import {
  batchFeeds,
  buildScoreGraph,
  padSequences,
  saveScoreModel,
  type ScoreKind,
} from "../model/score-model.js";
import { Session, tensor, weightFeeds, type Feeds } from "../runtime/session.js";
import { loraLinear, mergeLora } from "./lora-graph.js";
import {
  decoderLinearModules,
  initLoraAdapter,
  loraScale,
  targetModulesOf,
  type LoraAdapter,
  type LoraConfig,
} from "./lora.js";
import { negLogSigmoid } from "./losses.js";
import {
  Trainer,
  type Metrics,
  type Param,
  type TrainSummary,
  type TrainerOptions,
} from "./trainer.js";

/** Two full sequences (prompt + response + EOS); `chosen` is the better or the safer one. */
export interface ScorePair {
  chosenIds: number[];
  rejectedIds: number[];
  /** Safety labels (cost models): true when the response is unsafe, null when unknown. */
  chosenUnsafe: boolean | null;
  rejectedUnsafe: boolean | null;
}

export interface ScoreTrainOptions {
  kind: ScoreKind;
  /** LoRA settings, or null to train the last `unfreezeLayers` layers in full. */
  lora: LoraConfig | null;
  unfreezeLayers: number;
  regularization: number;
  trainer: TrainerOptions;
}

function signOf(unsafe: boolean | null): number {
  if (unsafe === null) return 0;
  return unsafe ? 1 : -1;
}

/** Scores are [chosen rows..., rejected rows...]; returns the mean loss over pairs. */
function scoreLoss(kind: ScoreKind, scores: Tensor, signs: Tensor, regularization: number): Tensor {
  const g = scores.graph;
  const halves = op.reshape(scores, [2, -1]);
  const chosen = op.squeeze(op.slice(halves, [0], [0], [1]), [0]);
  const rejected = op.squeeze(op.slice(halves, [0], [1], [2]), [0]);
  let perPair: Tensor;
  if (kind === "reward") {
    perPair = negLogSigmoid(op.sub(chosen, rejected));
  } else {
    const pairwise = negLogSigmoid(op.sub(rejected, chosen));
    // |s| masks out responses without a safety label.
    const signTerms = op.mul(negLogSigmoid(op.mul(signs, scores)), op.abs(signs)); // [rows]
    const signPerPair = op.reduceSum(op.reshape(signTerms, [2, -1]), [0], false);
    perPair = op.add(pairwise, signPerPair);
  }
  let loss = op.reduceMean(perPair, [0], false);
  if (regularization > 0) {
    const reg = op.mul(
      op.scalar(g, regularization),
      op.reduceMean(op.mul(scores, scores), [0], false),
    );
    loss = op.add(loss, reg);
  }
  return loss;
}

export function scoreMetrics(
  kind: ScoreKind,
  scores: ArrayLike<number>,
  batch: readonly ScorePair[],
): Metrics {
  const n = batch.length;
  let pairCorrect = 0;
  let signCorrect = 0;
  let signCount = 0;
  batch.forEach((p, i) => {
    const w = scores[i];
    const l = scores[n + i];
    if (kind === "reward" ? w > l : w < l) pairCorrect++;
    for (const [score, unsafe] of [
      [w, p.chosenUnsafe],
      [l, p.rejectedUnsafe],
    ] as const) {
      if (unsafe === null) continue;
      signCount++;
      if (score > 0 === unsafe) signCorrect++;
    }
  });
  const metrics: Metrics = { accuracy: pairCorrect / n };
  if (kind === "cost" && signCount > 0) metrics.sign_accuracy = signCorrect / signCount;
  return metrics;
}

export async function trainScoreModel(
  config: ModelConfig,
  rawConfig: Record<string, unknown>,
  weights: WeightMap,
  train: ScorePair[],
  evalPairs: ScorePair[],
  options: ScoreTrainOptions,
): Promise<TrainSummary> {
  const rng = new Rng(options.trainer.seed ^ 0x5c0e);
  const params = new Map<string, Param>();

  // Score head: normal(0, 1/sqrt(hidden)), so initial scores are of order 1.
  const head = new Float32Array(config.hiddenSize);
  for (let i = 0; i < head.length; i++) {
    const u = Math.max(rng.next(), 1e-12);
    head[i] =
      (Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * rng.next())) /
      Math.sqrt(config.hiddenSize);
  }
  params.set("score.weight", { data: head, dims: [1, config.hiddenSize] });
  const bias = new Float32Array(1);
  params.set("score.bias", { data: bias, dims: [] });

  let adapter: LoraAdapter | null = null;
  let linear;
  let loraParams: Map<string, Tensor> | null = null;
  if (options.lora !== null) {
    const modules = targetModulesOf(decoderLinearModules(config), options.lora.targetModules);
    adapter = initLoraAdapter(options.lora, modules, rng);
    const branch = loraLinear(
      modules.map((m) => ({ ...m, r: options.lora!.r })),
      loraScale(options.lora),
      false,
    );
    linear = branch.linear;
    loraParams = branch.params;
    for (const [name, m] of adapter.modules) {
      params.set(`${name}.lora_A.weight`, { data: m.A, dims: [options.lora.r, m.inFeatures] });
      params.set(`${name}.lora_B.weight`, { data: m.B, dims: [m.outFeatures, options.lora.r] });
    }
  } else {
    const first = config.numHiddenLayers - options.unfreezeLayers;
    for (const spec of weightSpecs(config, false)) {
      const layer = /^model\.layers\.(\d+)\./.exec(spec.name);
      const trainable =
        (layer !== null && Number(layer[1]) >= first) ||
        (options.unfreezeLayers > 0 && spec.name === "model.norm.weight");
      if (trainable)
        params.set(spec.name, {
          data: Float32Array.from(weights.get(spec.name)!),
          dims: spec.shape,
        });
    }
  }

  const { graph, scores } = buildScoreGraph(config, linear, "float32", true);
  const signs = graph.input("safety_sign", "float32", ["batch"]);
  const loss = scoreLoss(options.kind, scores, signs, options.regularization);
  const inputsByName = new Map(graph.inputs.map((t) => [t.name, t]));
  const trainable = [...params.keys()];
  const wrt = trainable.map((name) => loraParams?.get(name) ?? inputsByName.get(name)!);
  const grads = gradients(loss, wrt);
  graph.output("loss", loss);
  graph.output("scores", scores);
  trainable.forEach((name, i) => graph.output(`grad.${name}`, grads.get(wrt[i])!));

  const session = await Session.create(graph, { bound: weightFeeds(graph, weights, params) });

  const run = async (batch: ScorePair[]) => {
    const seqs = [...batch.map((p) => p.chosenIds), ...batch.map((p) => p.rejectedIds)];
    const feeds: Feeds = {
      ...batchFeeds(padSequences(seqs)),
      safety_sign: tensor(
        "float32",
        Float32Array.from([
          ...batch.map((p) => signOf(p.chosenUnsafe)),
          ...batch.map((p) => signOf(p.rejectedUnsafe)),
        ]),
        [seqs.length],
      ),
    };
    for (const [name, p] of params) feeds[name] = tensor("float32", p.data, p.dims);
    const out = await session.run(feeds);
    const s = out.scores.data as Float32Array;
    return {
      loss: Number(out.loss.data[0]),
      grads: new Map(trainable.map((n) => [n, out[`grad.${n}`].data as Float32Array])),
      metrics: scoreMetrics(options.kind, s, batch),
    };
  };

  const save = (dir: string, final: boolean) => {
    if (!final) return; // checkpoints already hold every trainable tensor in params.safetensors
    let full: WeightMap = new Map(weights);
    if (adapter !== null) full = mergeLora(weights, adapter);
    for (const [name, p] of params) if (full.has(name)) full.set(name, p.data);
    saveScoreModel(dir, rawConfig, config, full, { weight: head, bias: bias[0] }, options.kind);
  };

  const trainer = new Trainer<ScorePair>(
    {
      params,
      train,
      eval: evalPairs,
      lengthOf: (p) => Math.max(p.chosenIds.length, p.rejectedIds.length),
      step: (batch) => run(batch),
      evaluate: async (batch) => {
        const r = await run(batch);
        return { loss: r.loss, ...r.metrics };
      },
      save,
    },
    options.trainer,
  );
  try {
    return await trainer.run();
  } finally {
    await session.release();
  }
}
