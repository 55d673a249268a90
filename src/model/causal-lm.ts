// A loaded causal language model: its config, its weights in memory, and the ORT sessions
// that run it. Sessions are created on first use, one per graph variant, all sharing the same
// weight buffers.

import { MidpoError } from "../errors.js";
import type { Graph } from "../graph/graph.js";
import { Session, int64Tensor, tensor, weightFeeds, type Feeds } from "../runtime/session.js";
import type { ModelConfig } from "./config.js";
import {
  buildLlamaGraph,
  LM_HEAD_SLICE,
  lmHeadWeightName,
  weightSpecs,
  type LinearOverride,
  type LlamaGraphOptions,
} from "./llama.js";
import { createMappedSession, fileRanges, type MappedWeights } from "./mapped-weights.js";

export type WeightMap = Map<string, Float32Array>;

export interface LogprobsOptions {
  /** Longest padded batch, in tokens (rows x padded length). */
  maxBatchTokens?: number;
}

/**
 * Tokens per decoder pass of tokenLogprobs unless the caller says otherwise. The
 * activations of a pass grow with it (40 to 60 KiB per token for a SmolLM-135M shape), and
 * 512 tokens keep matrix products efficient.
 */
const MAX_BATCH_TOKENS = 512;

export class CausalLM {
  private readonly sessions = new Map<string, Promise<Session>>();

  constructor(
    readonly config: ModelConfig,
    /** The weights in memory: all of them unless some are mapped. */
    private readonly inMemory: WeightMap,
    /** Where the model came from, for messages. */
    readonly source: string,
    /** False for score models, whose checkpoints have no lm_head. */
    readonly hasLmHead = true,
    /**
     * Extra branches on linear layers (a LoRA adapter, the MidPO experts and router), applied
     * in every graph this model builds; their inputs are bound from `weights` too.
     */
    readonly linear?: LinearOverride,
    /**
     * Float32 weights left in their checkpoint file, which inference sessions map as
     * external-data initializers instead of binding from `weights` (see loadCausalLM).
     */
    private readonly mapped: MappedWeights = new Map(),
  ) {
    for (const spec of weightSpecs(config, hasLmHead)) {
      if (!inMemory.has(spec.name) && !mapped.has(spec.name))
        throw new Error(`${source}: weight ${spec.name} is not loaded`);
    }
  }

  /**
   * Every weight, by checkpoint name, for code that trains, merges or saves them. A model
   * loaded with mapped weights serves inference only, so this throws for it.
   */
  get weights(): WeightMap {
    if (this.mapped.size > 0) {
      throw new MidpoError(
        `${this.source} was loaded with its weights left in the checkpoint file ` +
          `(loadCausalLM with mapWeights), which serves inference only; load it without ` +
          `mapWeights to train or merge it`,
      );
    }
    return this.inMemory;
  }

  /**
   * Returns this model with extra weights and branches on its linear layers (a LoRA adapter,
   * the MidPO experts and router). The new model shares this model's weights.
   */
  withBranches(extra: WeightMap, linear: LinearOverride, source: string): CausalLM {
    const weights: WeightMap = new Map([...this.inMemory, ...extra]);
    const mapped = new Map(this.mapped);
    return new CausalLM(this.config, weights, source, this.hasLmHead, linear, mapped);
  }

  /** True when some weights are read by ORT from the checkpoint file, not kept in memory. */
  get hasMappedWeights(): boolean {
    return this.mapped.size > 0;
  }

  /** The session for one graph variant, created on first use. */
  session(key: string, build: () => Graph): Promise<Session> {
    let s = this.sessions.get(key);
    if (s === undefined) {
      s = createMappedSession(this.mapped, this.inMemory, () => this.createSession(build()));
      this.sessions.set(key, s);
    }
    return s;
  }

  private createSession(graph: Graph): Promise<Session> {
    const bound = { ...weightFeeds(graph, this.inMemory), ...this.lmHeadSliceFeeds(graph) };
    return Session.create(graph, { bound });
  }

  /**
   * Views of the lm_head weight for a graph's `lm_head.rows.<k>` inputs, consecutive slices
   * of rows in the order of k, each as long as its input declares.
   */
  private lmHeadSliceFeeds(graph: Graph): Feeds {
    const feeds: Feeds = {};
    const h = this.config.hiddenSize;
    const weight = this.inMemory.get(lmHeadWeightName(this.config));
    let start = 0;
    for (let k = 0; ; k++) {
      const input = graph.inputs.find((t) => t.name === `${LM_HEAD_SLICE}${k}`);
      if (input === undefined || weight === undefined) break;
      const rows = input.shape[0] as number;
      feeds[input.name] = tensor("float32", weight.subarray(start * h, (start + rows) * h), [
        rows,
        h,
      ]);
      start += rows;
    }
    return feeds;
  }

  llamaSession(options: LlamaGraphOptions): Promise<Session> {
    const key = [
      "llama",
      options.output,
      options.kvCache ? "cache" : "nocache",
      options.vocabSliceRows ?? "",
    ].join(":");
    return this.session(key, () =>
      buildLlamaGraph(this.config, {
        ...options,
        linear: options.linear ?? this.linear,
        mappedWeights: fileRanges(this.mapped),
      }),
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
    const maxBatchTokens = options.maxBatchTokens ?? MAX_BATCH_TOKENS;
    const session = await this.llamaSession({ output: "token-logprobs" });
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
      );
      batch.forEach((i, r) => {
        results[i] = out[r];
      });
    }
    return results;
  }

  private async runLogprobsBatch(session: Session, seqs: number[][]): Promise<number[][]> {
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
    const lp = out.token_logprobs.data as Float32Array;
    return seqs.map((s, r) =>
      Array.from(lp.subarray(r * (width - 1), r * (width - 1) + s.length - 1)),
    );
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
