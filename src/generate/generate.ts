// Batched autoregressive generation with a KV cache.
//
// Prompts are left-padded so that every row's next token comes from the last position. The
// cache lives in JavaScript buffers laid out [position, batch, kv_head, head_dim]: each step
// feeds the filled prefix as a view (no copy) and appends the step's new entries.

import type { CausalLM } from "../model/causal-lm.js";
import { int64Tensor, tensor, type Feeds, type Session } from "../runtime/session.js";
import { Rng, sampleToken, type SamplingOptions } from "./sampling.js";

export interface GenerateOptions extends SamplingOptions {
  maxNewTokens: number;
  seed: number;
  /** Generation of a row ends after any of these tokens (not included in the result). */
  eosTokenIds: number[];
  /** Generation of a row ends when its decoded text contains one of these (cut before it). */
  stopStrings?: string[];
  /** Turns generated ids into text; needed for stop strings. */
  decode?: (ids: number[]) => string;
  /** Called for every accepted token, in order, for streaming. */
  onToken?: (row: number, id: number) => void;
  /**
   * Called after every model run, e.g. to collect MidPO gate values. It receives the run's
   * outputs and the attention mask of the positions it processed ([batch, width], 1 on real
   * tokens). `sampled` is true when the next tokens come from this run's logits, so it is
   * false for every run of a long prompt but the last.
   */
  onOutputs?: (
    outputs: Record<string, { data: unknown; dims: readonly number[] }>,
    mask: number[][],
    sampled: boolean,
  ) => void;
  /**
   * Maximum tokens (rows x positions) per model run while reading the prompts. Longer
   * prompts are read in several runs, so that one run's activations and KV output stay small.
   * Default 128: on a SmolLM-135M shape at batch 16, 128 instead of 256 lowered a decode
   * process's peak RSS by about 15 MiB (ORT 1.31, 2 cores).
   */
  prefillChunkTokens?: number;
  /** Token id written into padding positions; any id in the vocabulary works. */
  padTokenId?: number;
}

export type FinishReason = "eos" | "stop" | "length";

export interface Generation {
  tokens: number[];
  finishReason: FinishReason;
  /** The decoded text, cut before a stop string; present when `decode` was given. */
  text?: string;
}

interface RowState {
  tokens: number[];
  seen: number[];
  done: boolean;
  finishReason: FinishReason;
  text?: string;
}

/**
 * One idle cache buffer per model, reused by the next generate() call that fits in it. A
 * fresh buffer per call would leave the previous one to the garbage collector, which frees
 * large buffers late: back-to-back calls then held two caches at once.
 */
const idleStorage = new WeakMap<CausalLM, Float32Array>();

class KvCache {
  readonly keys: Float32Array[];
  readonly values: Float32Array[];
  /** Floats per position: batch * kvHeads * headDim. */
  readonly stride: number;
  length = 0;

  constructor(
    readonly storage: Float32Array,
    layers: number,
    capacity: number,
    readonly batch: number,
    readonly kvHeads: number,
    readonly headDim: number,
  ) {
    this.stride = batch * kvHeads * headDim;
    const part = capacity * this.stride;
    const at = (i: number) => storage.subarray(i * part, (i + 1) * part);
    this.keys = Array.from({ length: layers }, (_, l) => at(2 * l));
    this.values = Array.from({ length: layers }, (_, l) => at(2 * l + 1));
  }

  /** Takes the model's idle buffer when it is large enough, else allocates one. */
  static open(model: CausalLM, capacity: number, batch: number): KvCache {
    const c = model.config;
    const floats = 2 * c.numHiddenLayers * capacity * batch * c.numKeyValueHeads * c.headDim;
    // The idle buffer leaves the map either way: one too small for this call is dropped
    // before the larger one is allocated, so that the collector may free it meanwhile.
    let storage = idleStorage.get(model);
    idleStorage.delete(model);
    if (storage === undefined || storage.length < floats) storage = new Float32Array(floats);
    return new KvCache(storage, c.numHiddenLayers, capacity, batch, c.numKeyValueHeads, c.headDim);
  }

  /** Leaves the buffer for the next call, unless the model already keeps a larger one. */
  close(model: CausalLM): void {
    const idle = idleStorage.get(model);
    if (idle === undefined || idle.length < this.storage.length) {
      idleStorage.set(model, this.storage);
    }
  }

  feeds(): Feeds {
    const feeds: Feeds = {};
    const dims = [this.length, this.batch, this.kvHeads, this.headDim];
    const end = this.length * this.stride;
    this.keys.forEach((k, l) => {
      feeds[`past_key.${l}`] = tensor("float32", k.subarray(0, end), dims);
      feeds[`past_value.${l}`] = tensor("float32", this.values[l].subarray(0, end), dims);
    });
    return feeds;
  }

  /** Appends the `steps` new positions of every layer, from the graph's `present` output. */
  append(outputs: Record<string, { data: unknown }>, steps: number): void {
    const offset = this.length * this.stride;
    const present = outputs.present.data as Float32Array;
    const block = steps * this.stride;
    this.keys.forEach((k, l) => {
      k.set(present.subarray(2 * l * block, (2 * l + 1) * block), offset);
      this.values[l].set(present.subarray((2 * l + 1) * block, (2 * l + 2) * block), offset);
    });
    this.length += steps;
  }
}

function checkStop(row: RowState, options: GenerateOptions): void {
  if (!options.decode) return;
  const text = options.decode(row.tokens);
  row.text = text;
  for (const stop of options.stopStrings ?? []) {
    const at = stop === "" ? -1 : text.indexOf(stop);
    if (at >= 0) {
      row.text = text.slice(0, at);
      row.done = true;
      row.finishReason = "stop";
      return;
    }
  }
}

/** Generates a continuation for each prompt (token ids), all in one batch. */
export async function generate(
  model: CausalLM,
  prompts: number[][],
  options: GenerateOptions,
): Promise<Generation[]> {
  if (prompts.length === 0) return [];
  for (const p of prompts) {
    if (p.length === 0) throw new Error("generate: a prompt has no tokens; it needs at least BOS");
  }
  model.checkIds(prompts);
  const promptLength = Math.max(...prompts.map((p) => p.length));
  model.checkLength(promptLength + options.maxNewTokens, "prompt plus max new tokens");

  const session = await model.llamaSession({ output: "last-logits", kvCache: true });
  const cache = KvCache.open(model, promptLength + options.maxNewTokens, prompts.length);
  try {
    return await decode(session, cache, prompts, options);
  } finally {
    cache.close(model);
  }
}

/** Runs the prompt, then samples one token per row per step until every row is done. */
async function decode(
  session: Session,
  cache: KvCache,
  prompts: number[][],
  options: GenerateOptions,
): Promise<Generation[]> {
  const batch = prompts.length;
  const promptLength = Math.max(...prompts.map((p) => p.length));
  const rng = new Rng(options.seed);
  const pad = options.padTokenId ?? 0;
  const eos = new Set(options.eosTokenIds);
  const rows: RowState[] = prompts.map((p) => ({
    tokens: [],
    seen: [...p],
    done: false,
    finishReason: "length",
  }));

  // Prefill: left-padded prompts, positions counted from each row's first real token.
  const mask: number[][] = prompts.map((p) => [
    ...new Array<number>(promptLength - p.length).fill(0),
    ...new Array<number>(p.length).fill(1),
  ]);
  const nextPosition = prompts.map((p) => p.length);
  const promptIds = prompts.map((p) => [
    ...new Array<number>(promptLength - p.length).fill(pad),
    ...p,
  ]);
  const promptPositions = prompts.map((p) => [
    ...new Array<number>(promptLength - p.length).fill(0),
    ...p.map((_, i) => i),
  ]);

  // Greedy decoding without a repetition penalty takes the graph's argmax and does not fetch
  // the logits, which would copy vocab floats per row out of ORT at every step.
  const greedy = options.temperature <= 0 && options.repetitionPenalty === 1;
  const fetches =
    greedy && options.onOutputs === undefined
      ? session.outputNames.filter((name) => name !== "logits")
      : undefined;

  /** Runs the model on the next `ids` columns of every row and appends them to the cache. */
  const run = async (ids: number[][], positions: number[][], sampled: boolean) => {
    const width = ids[0].length;
    const end = cache.length + width;
    const feeds = {
      ...cache.feeds(),
      input_ids: int64Tensor(ids.flat(), [batch, width]),
      attention_mask: int64Tensor(
        mask.flatMap((m) => m.slice(0, end)),
        [batch, end],
      ),
      position_ids: int64Tensor(positions.flat(), [batch, width]),
    };
    const out = await session.run(feeds, fetches);
    const runMask = mask.map((m) => m.slice(cache.length, end));
    cache.append(out, width);
    options.onOutputs?.(out, runMask, sampled);
    return out;
  };

  // Long prompts go in several runs, so that the activations of one run stay small.
  const chunkTokens = options.prefillChunkTokens ?? 128;
  if (!Number.isFinite(chunkTokens) || chunkTokens < 1) {
    throw new Error(`generate: prefillChunkTokens must be a number >= 1, got ${chunkTokens}`);
  }
  const chunk = Math.max(1, Math.floor(chunkTokens / batch));
  let out: Record<string, { data: unknown }> = {};
  for (let start = 0; start < promptLength; start += chunk) {
    const stop = Math.min(promptLength, start + chunk);
    out = await run(
      promptIds.map((ids) => ids.slice(start, stop)),
      promptPositions.map((p) => p.slice(start, stop)),
      stop === promptLength,
    );
  }

  for (let step = 0; step < options.maxNewTokens; step++) {
    const argmax = out.next_token.data as BigInt64Array;
    const logits = greedy ? null : (out.logits.data as Float32Array);
    const vocab = logits === null ? 0 : logits.length / batch;
    const next: number[] = [];
    rows.forEach((row, r) => {
      if (row.done) {
        next.push(pad);
        return;
      }
      // A view: sampling may change the logits in place, and they are not read again.
      const id =
        logits === null
          ? Number(argmax[r])
          : sampleToken(logits.subarray(r * vocab, (r + 1) * vocab), row.seen, options, rng);
      next.push(id);
      if (eos.has(id)) {
        row.done = true;
        row.finishReason = "eos";
        return;
      }
      row.tokens.push(id);
      row.seen.push(id);
      options.onToken?.(r, id);
      checkStop(row, options);
    });
    if (rows.every((row) => row.done) || step === options.maxNewTokens - 1) break;

    mask.forEach((m) => m.push(1));
    out = await run(
      next.map((id) => [id]),
      nextPosition.map((p) => [p]),
      true,
    );
    nextPosition.forEach((p, r) => (nextPosition[r] = p + 1));
  }

  return rows.map((row) => ({
    tokens: row.tokens,
    finishReason: row.finishReason,
    ...(options.decode ? { text: row.text ?? options.decode(row.tokens) } : {}),
  }));
}
