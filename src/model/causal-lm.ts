// A loaded causal language model: its config, its weights in memory, and the ORT sessions
// that run it. Sessions are created on first use, one per graph variant, all sharing the same
// weight buffers.

import { MidpoError } from "../errors.js";
import type { Graph } from "../graph/graph.js";
import { Session, int64Tensor, tensor, weightFeeds } from "../runtime/session.js";
import type { ModelConfig } from "./config.js";
import {
  buildLlamaGraph,
  buildLogprobHeadGraph,
  weightSpecs,
  type LinearOverride,
  type LlamaGraphOptions,
} from "./llama.js";

export type WeightMap = Map<string, Float32Array>;

export interface LogprobsOptions {
  /** Longest padded batch, in tokens (rows x padded length). */
  maxBatchTokens?: number;
  /** Most logits held at once, in bytes; see LOGITS_CHUNK_BYTES. */
  logitsChunkBytes?: number;
}

/**
 * Most logits held at once by tokenLogprobs, in bytes. A batch's decoder pass ends at the
 * hidden states; the lm_head then runs over a slice of positions at a time, so that a
 * [rows, length, vocab] block of logits (191 MiB for 4 x 255 positions of a 49152-token
 * vocabulary) never exists whole.
 */
const LOGITS_CHUNK_BYTES = 32 * 1024 * 1024;

export class CausalLM {
  private readonly sessions = new Map<string, Promise<Session>>();

  constructor(
    readonly config: ModelConfig,
    readonly weights: WeightMap,
    /** Where the model came from, for messages. */
    readonly source: string,
    /** False for score models, whose checkpoints have no lm_head. */
    readonly hasLmHead = true,
    /**
     * Extra branches on linear layers (a LoRA adapter, the MidPO experts and router), applied
     * in every graph this model builds; their inputs are bound from `weights` too.
     */
    readonly linear?: LinearOverride,
  ) {
    for (const spec of weightSpecs(config, hasLmHead)) {
      const w = weights.get(spec.name);
      if (w === undefined) throw new Error(`${source}: weight ${spec.name} is not loaded`);
    }
  }

  /** The session for one graph variant, created on first use. */
  session(key: string, build: () => Graph): Promise<Session> {
    let s = this.sessions.get(key);
    if (s === undefined) {
      s = (async () => {
        const graph = build();
        return Session.create(graph, { bound: weightFeeds(graph, this.weights) });
      })();
      this.sessions.set(key, s);
    }
    return s;
  }

  llamaSession(options: LlamaGraphOptions): Promise<Session> {
    const key = `llama:${options.output}:${options.kvCache ? "cache" : "nocache"}`;
    return this.session(key, () =>
      buildLlamaGraph(this.config, { ...options, linear: options.linear ?? this.linear }),
    );
  }

  /** Rejects sequences the model cannot attend over. */
  checkLength(length: number, what: string): void {
    const max = this.config.maxPositionEmbeddings;
    if (length > max) {
      throw new MidpoError(
        `${what} is ${length} tokens, longer than max_position_embeddings ${max} of ${this.source}; ` +
          `shorten it or pass --truncate to keep its last ${max} tokens`,
      );
    }
    const window = this.config.slidingWindow;
    if (window !== null && length > window) {
      throw new MidpoError(
        `${what} is ${length} tokens, longer than sliding_window ${window} of ${this.source}; ` +
          `sliding-window attention is not implemented, so shorten the input to ${window} tokens`,
      );
    }
  }

  /**
   * Returns, for each sequence, log p(ids[t] | ids[<t]) for t = 1..n-1. Sequences are sorted
   * by length and right-padded in batches, so padding costs little and never reaches a real
   * token (attention is causal and padded keys are masked).
   */
  async tokenLogprobs(sequences: number[][], options: LogprobsOptions = {}): Promise<number[][]> {
    const maxBatchTokens = options.maxBatchTokens ?? 4096;
    const session = await this.llamaSession({ output: "hidden" });
    const order = sequences
      .map((_, i) => i)
      .sort((a, b) => sequences[b].length - sequences[a].length);
    const results: number[][] = new Array(sequences.length);

    let start = 0;
    while (start < order.length) {
      const longest = Math.max(sequences[order[start]].length, 1);
      const rows = Math.max(1, Math.floor(maxBatchTokens / longest));
      const batch = order.slice(start, start + rows);
      start += batch.length;
      const out = await this.runLogprobsBatch(
        session,
        batch.map((i) => sequences[i]),
        options.logitsChunkBytes ?? LOGITS_CHUNK_BYTES,
      );
      batch.forEach((i, r) => {
        results[i] = out[r];
      });
    }
    return results;
  }

  private async runLogprobsBatch(
    session: Session,
    seqs: number[][],
    chunkBytes: number,
  ): Promise<number[][]> {
    const width = Math.max(...seqs.map((s) => s.length));
    if (width < 2) return seqs.map(() => []);
    const n = seqs.length;
    const ids = new BigInt64Array(n * width);
    const mask = new BigInt64Array(n * width);
    const positions = new BigInt64Array(n * width);
    seqs.forEach((s, r) => {
      for (let t = 0; t < width; t++) {
        const real = t < s.length;
        ids[r * width + t] = BigInt(real ? s[t] : 0);
        mask[r * width + t] = real ? 1n : 0n;
        positions[r * width + t] = BigInt(t);
      }
    });
    this.checkIds(seqs);
    const out = await session.run({
      input_ids: int64Tensor(ids, [n, width]),
      attention_mask: int64Tensor(mask, [n, width]),
      position_ids: int64Tensor(positions, [n, width]),
    });
    const hidden = out.hidden.data as Float32Array; // [n, width, H]

    // Position t of row r predicts token t + 1; only real targets are scored.
    const rows: number[] = [];
    const targets: number[] = [];
    seqs.forEach((s, r) => {
      for (let t = 0; t + 1 < s.length; t++) {
        rows.push(r * width + t);
        targets.push(s[t + 1]);
      }
    });
    const logprobs = await this.headLogprobs(hidden, rows, targets, chunkBytes);
    const results: number[][] = [];
    let at = 0;
    for (const s of seqs) {
      const count = Math.max(0, s.length - 1);
      results.push(Array.from(logprobs.subarray(at, at + count)));
      at += count;
    }
    return results;
  }

  /** log p(targets[i]) from the final-normed hidden state at flat position rows[i]. */
  private async headLogprobs(
    hidden: Float32Array,
    rows: number[],
    targets: number[],
    chunkBytes: number,
  ): Promise<Float32Array> {
    const h = this.config.hiddenSize;
    const session = await this.session("logprob-head", () => buildLogprobHeadGraph(this.config));
    const chunk = Math.max(1, Math.floor(chunkBytes / (4 * this.config.vocabSize)));
    const result = new Float32Array(rows.length);
    for (let start = 0; start < rows.length; start += chunk) {
      const count = Math.min(chunk, rows.length - start);
      const states = new Float32Array(count * h);
      for (let i = 0; i < count; i++) {
        const row = rows[start + i];
        states.set(hidden.subarray(row * h, (row + 1) * h), i * h);
      }
      const out = await session.run({
        hidden: tensor("float32", states, [count, h]),
        targets: int64Tensor(targets.slice(start, start + count), [count]),
      });
      result.set(out.token_logprobs.data as Float32Array, start);
    }
    return result;
  }

  /** Rejects token ids outside the embedding table, which ORT would not catch. */
  checkIds(seqs: number[][]): void {
    const vocab = this.config.vocabSize;
    for (const s of seqs) {
      for (const id of s) {
        if (!Number.isInteger(id) || id < 0 || id >= vocab) {
          throw new MidpoError(
            `token id ${id} is outside the vocabulary of ${this.source} (0..${vocab - 1})`,
          );
        }
      }
    }
  }

  async release(): Promise<void> {
    for (const s of this.sessions.values()) await (await s).release();
    this.sessions.clear();
  }
}
