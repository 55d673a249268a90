// Score models: a Llama-family backbone plus a linear head read at the last non-padding token
// (the "end score"). Reward models score helpfulness (higher is better); cost models score
// harm (positive means unsafe).
//
// Two checkpoint layouts load: PKU safe-rlhf's `LlamaForScore` (`score_head.weight`, optional
// `score_head.bias`, optional normaliser) and transformers' `*ForSequenceClassification` with
// one label (`score.weight`, no bias). midpo saves the second, which transformers can load.

import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { MidpoError } from "../errors.js";
import type { FileRange, Graph, Tensor } from "../graph/graph.js";
import * as op from "../graph/ops.js";
import { Session, int64Tensor, tensor, weightFeeds, type Feeds } from "../runtime/session.js";
import type { WeightMap } from "./causal-lm.js";
import type { ModelConfig } from "./config.js";
import { buildLlamaGraph, weightSpecs, type LinearOverride } from "./llama.js";
import { parseConfig } from "./load-config.js";
import type { LoadOptions } from "./load.js";
import {
  createMappedSession,
  fileRanges,
  readOrMapWeights,
  type MappedWeights,
} from "./mapped-weights.js";
import { SafetensorsCheckpoint } from "./safetensors-checkpoint.js";
import { writeSafetensors, type SafetensorsTensor } from "./safetensors.js";

/** Score-model architectures, each with the causal LM whose backbone it shares. */
const SCORE_ARCHITECTURES: Record<string, string> = {
  LlamaForScore: "LlamaForCausalLM",
  LlamaForSequenceClassification: "LlamaForCausalLM",
  MistralForSequenceClassification: "MistralForCausalLM",
  Qwen2ForSequenceClassification: "Qwen2ForCausalLM",
};

export type ScoreKind = "reward" | "cost";

export interface ScoreHead {
  /** [1, hidden] */
  weight: Float32Array;
  bias: number;
  /**
   * safe-rlhf's normaliser, applied when present and `do_normalize` is true: cost scores are
   * divided by the running std (keeping the sign that means safe or unsafe), reward scores
   * are centred and divided by it.
   */
  normalizer: { mean: number; variance: number } | null;
}

export interface ScoreModelFiles {
  config: ModelConfig;
  /** The raw config.json, kept so saving preserves unknown keys. */
  rawConfig: Record<string, unknown>;
  /** The backbone weights in memory: all of them unless some are mapped. */
  weights: WeightMap;
  /** Backbone weights left in the checkpoint file for ORT to map (inference only). */
  mapped: MappedWeights;
  head: ScoreHead;
  kind: ScoreKind | null;
  directory: string;
}

function readFloats(checkpoint: SafetensorsCheckpoint, name: string): Float32Array | null {
  return checkpoint.has(name) ? checkpoint.readFloat32(name) : null;
}

/**
 * Reads a score-model directory in either supported layout. With `mapWeights`, float32
 * backbone weights stay in the file, as for loadCausalLM: such files serve ScoreModel only.
 */
export function loadScoreModel(dir: string, options: LoadOptions = {}): ScoreModelFiles {
  const configPath = join(dir, "config.json");
  if (!existsSync(dir)) {
    throw new MidpoError(`score model directory ${dir} does not exist`);
  }
  if (!existsSync(configPath)) {
    throw new MidpoError(
      `score model ${dir} has no config.json; pass a directory written by train-score`,
    );
  }
  let raw: Record<string, unknown>;
  try {
    raw = JSON.parse(readFileSync(configPath, "utf8")) as Record<string, unknown>;
  } catch (error) {
    throw new MidpoError(
      `${configPath} is not valid JSON (${(error as Error).message}); restore it from the ` +
        `checkpoint's source`,
    );
  }
  const arch = Array.isArray(raw.architectures) ? String(raw.architectures[0]) : undefined;
  const backbone = arch === undefined ? undefined : SCORE_ARCHITECTURES[arch];
  if (backbone === undefined) {
    throw new MidpoError(
      `${configPath}: architectures[0] is ${JSON.stringify(arch)}, not a score model; ` +
        `supported: ${Object.keys(SCORE_ARCHITECTURES).join(", ")}`,
    );
  }
  if (raw.num_labels !== undefined && raw.num_labels !== 1) {
    throw new MidpoError(`${configPath}: num_labels is ${raw.num_labels}; a score model needs 1`);
  }
  if (raw.score_dim !== undefined && raw.score_dim !== 1) {
    throw new MidpoError(
      `${configPath}: score_dim is ${raw.score_dim}; midpo reads scalar scores only`,
    );
  }
  const config = parseConfig({ ...raw, architectures: [backbone] }, configPath);
  const checkpoint = SafetensorsCheckpoint.open(dir);
  const { inMemory, mapped } = readOrMapWeights(
    checkpoint,
    weightSpecs(config, false),
    options.mapWeights === true,
  );

  const headName = checkpoint.has("score_head.weight") ? "score_head" : "score";
  if (!checkpoint.has(`${headName}.weight`)) {
    throw new MidpoError(
      `score model ${dir} has neither score_head.weight (safe-rlhf) nor score.weight (transformers)`,
    );
  }
  const weight = checkpoint.readFloat32(`${headName}.weight`, [1, config.hiddenSize]);
  const bias = readFloats(checkpoint, `${headName}.bias`)?.[0] ?? 0;
  const mean = readFloats(checkpoint, "normalizer.mean");
  const variance = readFloats(checkpoint, "normalizer.var");
  const normalizer =
    raw.do_normalize === true && mean !== null && variance !== null
      ? { mean: mean[0], variance: variance[0] }
      : null;
  const kind = raw.score_type === "reward" || raw.score_type === "cost" ? raw.score_type : null;
  return {
    config,
    rawConfig: raw,
    weights: inMemory,
    mapped,
    head: { weight, bias, normalizer },
    kind,
    directory: dir,
  };
}

/**
 * Builds the end-score graph: backbone hidden states, the row picked by `last_token_mask`
 * ([batch, seq], 1 at the last non-padding token), then the head. The head weight is the
 * input `score.weight` [1, hidden] so that training can feed it; `score.bias` is a scalar input.
 */
export function buildScoreGraph(
  config: ModelConfig,
  linear?: LinearOverride,
  dtype: "float32" | "float64" = "float32",
  forGradients = false,
  mappedWeights?: ReadonlyMap<string, FileRange>,
): { graph: Graph; scores: Tensor; head: Tensor } {
  const g = buildLlamaGraph(config, {
    output: "hidden",
    dtype,
    linear,
    forGradients,
    mappedWeights,
  });
  const hidden = g.outputs.find((t) => t.name === "hidden")!;
  const lastMask = g.input("last_token_mask", dtype, ["batch", "seq"]);
  const end = op.reduceSum(op.mul(hidden, op.unsqueeze(lastMask, [2])), [1], false); // [B, H]
  const head = g.input("score.weight", dtype, [1, config.hiddenSize]);
  const bias = g.input("score.bias", dtype, []);
  const scores = op.add(op.reshape(op.matmulTransB(end, head), [-1]), bias); // [B]
  // The hidden states are not needed outside the graph: keep only the scores as output.
  g.outputs.splice(g.outputs.indexOf(hidden), 1);
  return { graph: g, scores, head };
}

/** One-hot rows marking each sequence's last real token, for right-padded batches. */
export function lastTokenMask(lengths: readonly number[], width: number): Float32Array {
  const mask = new Float32Array(lengths.length * width);
  lengths.forEach((n, r) => {
    mask[r * width + n - 1] = 1;
  });
  return mask;
}

export interface PaddedBatch {
  inputIds: BigInt64Array;
  attentionMask: BigInt64Array;
  positionIds: BigInt64Array;
  lastMask: Float32Array;
  rows: number;
  width: number;
}

export function padSequences(seqs: readonly number[][], padId = 0): PaddedBatch {
  const rows = seqs.length;
  const width = Math.max(1, ...seqs.map((s) => s.length));
  const inputIds = new BigInt64Array(rows * width);
  const attentionMask = new BigInt64Array(rows * width);
  const positionIds = new BigInt64Array(rows * width);
  seqs.forEach((s, r) => {
    if (s.length === 0) throw new MidpoError("cannot score an empty sequence");
    for (let t = 0; t < width; t++) {
      inputIds[r * width + t] = BigInt(t < s.length ? s[t] : padId);
      attentionMask[r * width + t] = t < s.length ? 1n : 0n;
      positionIds[r * width + t] = BigInt(t);
    }
  });
  return {
    inputIds,
    attentionMask,
    positionIds,
    lastMask: lastTokenMask(
      seqs.map((s) => s.length),
      width,
    ),
    rows,
    width,
  };
}

export function batchFeeds(b: PaddedBatch): Feeds {
  return {
    input_ids: int64Tensor(b.inputIds, [b.rows, b.width]),
    attention_mask: int64Tensor(b.attentionMask, [b.rows, b.width]),
    position_ids: int64Tensor(b.positionIds, [b.rows, b.width]),
    last_token_mask: tensor("float32", b.lastMask, [b.rows, b.width]),
  };
}

/**
 * Tokens per ORT run of endScores unless the caller says otherwise. Smaller runs were faster,
 * as their activations stay in cache. Scoring 16 sequences of 256 tokens on the SmolLM-135M
 * shape took 14.7 s in runs of 512 tokens and 16.5 s in runs of 4096. Runs of 1024 took
 * 15.3 s and runs of 2048 took 16.2 s (ORT 1.31, 2 cores of an AMD EPYC with 8 MiB of L3,
 * 2026-12-05).
 */
export const SCORE_BATCH_TOKENS = 512;

/** A loaded score model that computes end scores of token sequences. */
export class ScoreModel {
  private session: Promise<Session> | null = null;

  constructor(readonly files: ScoreModelFiles) {}

  /** Loads a score model for scoring, with its float32 weights mapped from the file. */
  static load(dir: string): ScoreModel {
    return new ScoreModel(loadScoreModel(dir, { mapWeights: true }));
  }

  private getSession(): Promise<Session> {
    if (this.session === null) {
      const files = this.files;
      this.session = createMappedSession(files.mapped, files.weights, () => {
        const { graph, scores } = buildScoreGraph(
          files.config,
          undefined,
          "float32",
          false,
          fileRanges(files.mapped),
        );
        graph.output("scores", scores);
        const bound = weightFeeds(graph, files.weights);
        bound["score.weight"] = tensor("float32", files.head.weight, [1, files.config.hiddenSize]);
        bound["score.bias"] = tensor("float32", Float32Array.of(files.head.bias), []);
        return Session.create(graph, { bound });
      });
    }
    return this.session;
  }

  /** End scores of the sequences, batched by length. */
  async endScores(
    seqs: readonly number[][],
    maxBatchTokens = SCORE_BATCH_TOKENS,
  ): Promise<Float64Array> {
    const session = await this.getSession();
    const out = new Float64Array(seqs.length);
    const order = seqs.map((_, i) => i).sort((a, b) => seqs[b].length - seqs[a].length);
    let start = 0;
    while (start < order.length) {
      const rows = Math.max(1, Math.floor(maxBatchTokens / Math.max(1, seqs[order[start]].length)));
      const idx = order.slice(start, start + rows);
      start += idx.length;
      const result = await session.run(batchFeeds(padSequences(idx.map((i) => seqs[i]))));
      const scores = result.scores.data as Float32Array;
      idx.forEach((i, r) => {
        out[i] = this.normalise(scores[r]);
      });
    }
    return out;
  }

  private normalise(score: number): number {
    const n = this.files.head.normalizer;
    if (n === null) return score;
    const std = Math.sqrt(n.variance) + 1e-8;
    return this.files.kind === "cost" ? score / std : (score - n.mean) / std;
  }

  async release(): Promise<void> {
    if (this.session !== null) await (await this.session).release();
    this.session = null;
  }
}

/**
 * Writes a score model in transformers' `*ForSequenceClassification` layout with one label:
 * config.json, model.safetensors with the backbone and `score.weight`. A nonzero head bias is
 * stored as `score.bias` (transformers ignores it; midpo reads it). Each file is written to a
 * temporary name and renamed, and other files in `dir` (a training run's logs) are kept.
 */
export function saveScoreModel(
  dir: string,
  rawConfig: Record<string, unknown>,
  config: ModelConfig,
  weights: WeightMap,
  head: { weight: Float32Array; bias: number },
  kind: ScoreKind,
): void {
  const backboneArch = String(
    (rawConfig.architectures as string[] | undefined)?.[0] ?? "LlamaForCausalLM",
  );
  const arch = backboneArch.replace(
    /For(CausalLM|Score|SequenceClassification)$/,
    "ForSequenceClassification",
  );
  const hiddenSize = config.hiddenSize;
  const tensors: Record<string, SafetensorsTensor> = {};
  for (const spec of weightSpecs(config, false)) {
    tensors[spec.name] = { dtype: "F32", shape: spec.shape, data: weights.get(spec.name)! };
  }
  tensors["score.weight"] = { dtype: "F32", shape: [1, hiddenSize], data: head.weight };
  if (head.bias !== 0)
    tensors["score.bias"] = { dtype: "F32", shape: [1], data: Float32Array.of(head.bias) };

  const out = {
    ...rawConfig,
    architectures: [arch],
    num_labels: 1,
    score_type: kind,
    torch_dtype: "float32",
  };
  mkdirSync(dir, { recursive: true });
  writeSafetensors(join(dir, "model.safetensors"), tensors);
  const configPath = join(dir, "config.json");
  writeFileSync(`${configPath}.tmp`, JSON.stringify(out, null, 2) + "\n");
  renameSync(`${configPath}.tmp`, configPath);
}
