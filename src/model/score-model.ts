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
import { groupSharedPrefixes, type PrefixGroup } from "./shared-prefix.js";
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
 * With `kvCache`, the graph also takes the past_key.N/past_value.N inputs and returns the
 * `present` output of buildLlamaGraph's KV cache.
 */
export function buildScoreGraph(
  config: ModelConfig,
  linear?: LinearOverride,
  dtype: "float32" | "float64" = "float32",
  forGradients = false,
  mappedWeights?: ReadonlyMap<string, FileRange>,
  kvCache = false,
): { graph: Graph; scores: Tensor; head: Tensor } {
  // Inference graphs run the last layer at the end token only (see "end-hidden"). Training
  // graphs keep the plain form, whose gradient rules are tested op by op.
  const endOnly = !forGradients;
  const g = buildLlamaGraph(config, {
    output: endOnly ? "end-hidden" : "hidden",
    dtype,
    linear,
    forGradients,
    mappedWeights,
    kvCache,
  });
  const hidden = g.outputs.find((t) => t.name === "hidden")!;
  const end = endOnly
    ? hidden
    : op.reduceSum(
        op.mul(hidden, op.unsqueeze(g.input("last_token_mask", dtype, ["batch", "seq"]), [2])),
        [1],
        false,
      ); // [B, H]
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
  const width = seqs.reduce((w, s) => Math.max(w, s.length), 1);
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

/** Options of ScoreModel.endScores. */
export interface EndScoreOptions {
  /**
   * Tokens per ORT run, counted as rows times the longest row (SCORE_BATCH_TOKENS by
   * default). A longer sequence or prefix runs as one row anyway. Runs on a prefix's cache
   * also take up to PAST_TOKENS_PER_BATCH_TOKEN times as many past positions.
   */
  maxBatchTokens?: number;
  /**
   * Sequences that share a prefix of at least this many tokens (MIN_SHARED_PREFIX by default)
   * may run it once: the prefix first, then each sequence's remaining tokens on the prefix's
   * key-value cache. groupSharedPrefixes decides which prefixes are worth it. Infinity scores
   * every sequence on its own.
   */
  minSharedPrefix?: number;
}

/** The key-value cache of a batch of prefixes: buildLlamaGraph's `present` output. */
interface PrefixCache {
  /** [2 * layers, width, rows, kvHeads, headDim] */
  present: Float32Array;
  width: number;
  rows: number;
}

/** A sequence's tokens after its group's prefix, and the row of that prefix in its cache. */
interface Suffix {
  index: number;
  tokens: number[];
  prefixRow: number;
  prefixLength: number;
}

/** A loaded score model that computes end scores of token sequences. */
export class ScoreModel {
  private session: Promise<Session> | null = null;

  constructor(readonly files: ScoreModelFiles) {}

  /** Loads a score model for scoring, with its float32 weights mapped from the file. */
  static load(dir: string): ScoreModel {
    return new ScoreModel(loadScoreModel(dir, { mapWeights: true }));
  }

  /**
   * Returns the session of the score graph with a KV cache. Sequences scored on their own
   * feed an empty past. Scoring 16 sequences of 256 tokens on the SmolLM-135M shape took as
   * long on this graph as on one without the cache (ORT 1.31, 2 cores, 2026-12-05).
   */
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
          true,
        );
        graph.output("scores", scores);
        const bound = weightFeeds(graph, files.weights);
        bound["score.weight"] = tensor("float32", files.head.weight, [1, files.config.hiddenSize]);
        bound["score.bias"] = tensor("float32", Float32Array.of(files.head.bias), []);
        // Pre-packed weights made scoring 4 to 8 % faster with the same peak memory (801
        // against 807 MiB): 48 sequences of 144 tokens on the SmolLM-135M shape, ORT 1.31,
        // 2 cores of an Intel Xeon with AVX-512, 2026-12-05.
        return Session.create(graph, { bound, prepack: true });
      });
    }
    return this.session;
  }

  /**
   * Computes the end scores of the sequences, in input order. Sequences that share a long
   * prefix, such as the responses to one prompt, run it once (see groupSharedPrefixes). The
   * others run on their own, batched by length.
   */
  async endScores(seqs: readonly number[][], options: EndScoreOptions = {}): Promise<Float64Array> {
    const maxBatchTokens = options.maxBatchTokens ?? SCORE_BATCH_TOKENS;
    if (!(maxBatchTokens >= 1)) {
      throw new MidpoError(`maxBatchTokens must be at least 1, got ${maxBatchTokens}`);
    }
    this.checkTokens(seqs);
    const out = new Float64Array(seqs.length);
    const { groups, singles } = groupSharedPrefixes(seqs, options.minSharedPrefix);
    await this.scoreAlone(seqs, singles, maxBatchTokens, out);
    await this.scoreGroups(seqs, groups, maxBatchTokens, out);
    return out;
  }

  /**
   * Rejects empty sequences and token ids that are not integers in [0, vocab_size). ORT
   * would wrap an id of -1 around to the last row of the embedding table without an error.
   */
  private checkTokens(seqs: readonly number[][]): void {
    const vocab = this.files.config.vocabSize;
    seqs.forEach((seq, i) => {
      if (seq.length === 0) throw new MidpoError(`cannot score sequence ${i}: it is empty`);
      seq.forEach((id, t) => {
        if (!Number.isInteger(id) || id < 0 || id >= vocab) {
          throw new MidpoError(
            `sequence ${i}, position ${t}: token id ${id} is not an integer in [0, ${vocab}); ` +
              `tokenize with the score model's own tokenizer`,
          );
        }
      });
    });
  }

  /** Scores `seqs[i]` for each i in `indices` on its own, longest first, into `out[i]`. */
  private async scoreAlone(
    seqs: readonly number[][],
    indices: readonly number[],
    maxBatchTokens: number,
    out: Float64Array,
  ): Promise<void> {
    if (indices.length === 0) return;
    const session = await this.getSession();
    const order = [...indices].sort((a, b) => seqs[b].length - seqs[a].length);
    for (const idx of batchesByTokens(order, (i) => seqs[i].length, maxBatchTokens)) {
      const feeds = batchFeeds(padSequences(idx.map((i) => seqs[i])));
      Object.assign(feeds, this.pastFeeds(new Float32Array(0), 0, idx.length));
      const result = await session.run(feeds, ["scores"]);
      this.store(result.scores.data as Float32Array, idx, out);
    }
  }

  /**
   * Scores the members of prefix groups: a batch of prefixes, longest first, then their
   * members' remaining tokens in batches on the prefixes' key-value cache.
   */
  private async scoreGroups(
    seqs: readonly number[][],
    groups: readonly PrefixGroup[],
    maxBatchTokens: number,
    out: Float64Array,
  ): Promise<void> {
    if (groups.length === 0) return;
    const session = await this.getSession();
    const sorted = [...groups].sort((a, b) => b.prefixLength - a.prefixLength);
    for (const chunk of batchesByTokens(sorted, (g) => g.prefixLength, maxBatchTokens)) {
      const prefixes = chunk.map((g) => seqs[g.members[0]].slice(0, g.prefixLength));
      const cache = await this.runPrefixes(session, prefixes);

      const suffixes: Suffix[] = chunk.flatMap((g, prefixRow) =>
        g.members.map((index) => ({
          index,
          tokens: seqs[index].slice(g.prefixLength),
          prefixRow,
          prefixLength: g.prefixLength,
        })),
      );
      suffixes.sort((a, b) => b.tokens.length - a.tokens.length);
      for (const batch of suffixBatches(suffixes, maxBatchTokens)) {
        const result = await session.run(this.suffixFeeds(batch, cache), ["scores"]);
        this.store(
          result.scores.data as Float32Array,
          batch.map((s) => s.index),
          out,
        );
      }
    }
  }

  /** Runs right-padded prefixes with an empty cache and returns the cache they leave. */
  private async runPrefixes(session: Session, prefixes: number[][]): Promise<PrefixCache> {
    const batch = padSequences(prefixes);
    const feeds = batchFeeds(batch);
    feeds.last_token_mask = tensor("float32", new Float32Array(batch.rows * batch.width), [
      batch.rows,
      batch.width,
    ]);
    Object.assign(feeds, this.pastFeeds(new Float32Array(0), 0, batch.rows));
    const result = await session.run(feeds, ["present"]);
    return { present: result.present.data as Float32Array, width: batch.width, rows: batch.rows };
  }

  /**
   * Feeds for suffixes on their prefixes' cache. Row r's past contains its prefix's entries at
   * positions 0..prefixLength-1 and masked zeros up to the longest prefix of the batch. Its
   * tokens continue at position prefixLength, and they are right-padded.
   */
  private suffixFeeds(batch: readonly Suffix[], cache: PrefixCache): Feeds {
    const c = this.files.config;
    const rows = batch.length;
    const entry = c.numKeyValueHeads * c.headDim;
    const pastLength = batch.reduce((n, s) => Math.max(n, s.prefixLength), 0);
    const padded = padSequences(batch.map((s) => s.tokens));

    const past = new Float32Array(2 * c.numHiddenLayers * pastLength * rows * entry);
    const pastBlock = pastLength * rows * entry;
    const cacheBlock = cache.width * cache.rows * entry;
    for (let k = 0; k < 2 * c.numHiddenLayers; k++) {
      batch.forEach((s, r) => {
        for (let p = 0; p < s.prefixLength; p++) {
          const from = k * cacheBlock + (p * cache.rows + s.prefixRow) * entry;
          past.set(
            cache.present.subarray(from, from + entry),
            k * pastBlock + (p * rows + r) * entry,
          );
        }
      });
    }

    const total = pastLength + padded.width;
    const attentionMask = new BigInt64Array(rows * total);
    batch.forEach((s, r) => {
      attentionMask.fill(1n, r * total, r * total + s.prefixLength);
      attentionMask.fill(1n, r * total + pastLength, r * total + pastLength + s.tokens.length);
      for (let t = 0; t < padded.width; t++) {
        padded.positionIds[r * padded.width + t] = BigInt(s.prefixLength + t);
      }
    });
    return {
      ...batchFeeds(padded),
      attention_mask: int64Tensor(attentionMask, [rows, total]),
      ...this.pastFeeds(past, pastLength, rows),
    };
  }

  /**
   * past_key.N and past_value.N as views of `past` [2 * layers, length, rows, kvHeads,
   * headDim], the layout of the graph's `present` output.
   */
  private pastFeeds(past: Float32Array, length: number, rows: number): Feeds {
    const c = this.files.config;
    const dims = [length, rows, c.numKeyValueHeads, c.headDim];
    const block = length * rows * c.numKeyValueHeads * c.headDim;
    const feeds: Feeds = {};
    for (let l = 0; l < c.numHiddenLayers; l++) {
      feeds[`past_key.${l}`] = tensor(
        "float32",
        past.subarray(2 * l * block, (2 * l + 1) * block),
        dims,
      );
      feeds[`past_value.${l}`] = tensor(
        "float32",
        past.subarray((2 * l + 1) * block, (2 * l + 2) * block),
        dims,
      );
    }
    return feeds;
  }

  private store(scores: Float32Array, indices: readonly number[], out: Float64Array): void {
    indices.forEach((i, r) => {
      out[i] = this.normalise(scores[r]);
    });
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
 * Past positions per suffix batch, as a multiple of its token budget. Each row copies its
 * prefix's cache, so many rows on a long prompt would otherwise copy it many times over.
 */
const PAST_TOKENS_PER_BATCH_TOKEN = 4;

/**
 * Splits suffixes sorted by decreasing length into batches of at most `maxTokens` padded
 * tokens and PAST_TOKENS_PER_BATCH_TOKEN times as many past positions, each with at least
 * one row.
 */
function suffixBatches(suffixes: readonly Suffix[], maxTokens: number): Suffix[][] {
  const batches: Suffix[][] = [];
  let start = 0;
  while (start < suffixes.length) {
    const width = Math.max(1, suffixes[start].tokens.length);
    let pastLength = suffixes[start].prefixLength;
    let end = start + 1;
    while (end < suffixes.length) {
      const rows = end - start + 1;
      const longestPast = Math.max(pastLength, suffixes[end].prefixLength);
      if (rows * width > maxTokens) break;
      if (rows * longestPast > PAST_TOKENS_PER_BATCH_TOKEN * maxTokens) break;
      pastLength = longestPast;
      end++;
    }
    batches.push(suffixes.slice(start, end));
    start = end;
  }
  return batches;
}

/**
 * Splits items sorted by decreasing length into consecutive batches of at most
 * `maxTokens` padded tokens each: as many rows as fit at the first row's length, and at
 * least one.
 */
function batchesByTokens<T>(
  items: readonly T[],
  length: (item: T) => number,
  maxTokens: number,
): T[][] {
  const batches: T[][] = [];
  let start = 0;
  while (start < items.length) {
    const rows = Math.max(1, Math.floor(maxTokens / Math.max(1, length(items[start]))));
    batches.push(items.slice(start, start + rows));
    start += rows;
  }
  return batches;
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
