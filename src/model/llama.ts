// The Llama-family decoder (Llama, Mistral, Qwen2) as a graph, following transformers'
// modeling code: RMSNorm, rotary embeddings with `rotate_half`, grouped-query attention,
// a SiLU-gated MLP, and an optional KV cache.
//
// Weights are graph inputs named as in the Hugging Face checkpoint and bound once per
// session, or, for inference from a float32 checkpoint, external-data initializers that ORT
// maps from the file (`mappedWeights`). Measured with ORT 1.31 on 2 cores: a 30-layer MLP chain runs at the same speed
// with weights as initializers or as inputs, but initializers add 0.6-0.9 s to session
// creation per 318 MB and get copied for pre-packing, while inputs wrap the loaded buffers
// without a copy, need no 2 GB protobuf workaround, and let several graphs (scoring,
// generation, training) share one copy of the weights. Linear layers multiply by the stored
// [out, in] matrix with FusedMatMul(transB), which measured as fast as MatMul on a
// pre-transposed copy (155 vs 151 GFLOP/s at 1024 rows, 13 vs 11 at one row).

import { Graph, Tensor, type FileRange } from "../graph/graph.js";
import * as op from "../graph/ops.js";
import type { DType } from "../graph/types.js";
import type { ModelConfig } from "./config.js";
import { ropeInverseFrequencies } from "./rope.js";

export type LlamaOutput =
  /**
   * Logits at the last position, [batch, vocab] (prompts are left-padded for this), and
   * `next_token` [batch], their argmax, for greedy decoding without fetching the logits.
   */
  | "last-logits"
  /** log p(input_ids[t] | input_ids[<t]) for t = 1..seq-1, [batch, seq - 1]. */
  | "token-logprobs"
  /**
   * The same at chosen positions only: input `logit_positions` [batch, picked] lists, per
   * row, positions t (0..seq-2) whose next token's log-probability is requested, and output
   * `token_logprobs` [batch, picked] contains log p(input_ids[t + 1] | input_ids[<=t]). Training
   * steps pass the response positions, so the lm_head never runs over prompt or padding.
   */
  | "position-logprobs"
  /** The final-normed hidden states, [batch, seq, hidden]. */
  | "hidden"
  /**
   * The final-normed hidden state at one position per row, [batch, hidden]: input
   * `last_token_mask` [batch, seq] marks it with a 1 (a row of zeros picks position 0). The
   * last layer computes its queries, attention output and MLP at that position only. Its
   * keys and values, and the `present` output, still cover every position.
   */
  | "end-hidden";

export interface LlamaGraphOptions {
  output: LlamaOutput;
  /**
   * Adds past_key.N/past_value.N inputs and a `present` output with the new entries of every
   * layer (see `kvCacheLayout`).
   */
  kvCache?: boolean;
  /** float64 runs the whole model in double precision (gradient checks). */
  dtype?: "float32" | "float64";
  /** Replaces the default linear layer of chosen modules (LoRA, routers). */
  linear?: LinearOverride;
  /**
   * The graph will be differentiated. RMSNorm then squares with Mul instead of Pow. ORT fuses
   * the Pow pattern into one kernel, but not in a training graph, whose backward pass reads
   * the intermediate values. Unfused, Pow(x, 2) and an Add took 0.28 ms on [4, 256, 576],
   * against 0.15 ms for Mul(x, x) and the same Add (ORT 1.31, 2 cores).
   */
  forGradients?: boolean;
  /** lm_head rows per slice of the log-prob outputs of inference graphs; see lmHeadSlices. */
  vocabSliceRows?: number;
  /**
   * Weights that stay in their checkpoint file: float32 values at the given byte ranges,
   * which become external-data initializers that ORT maps from the file, instead of graph
   * inputs. Applies to float32 graphs only.
   */
  mappedWeights?: ReadonlyMap<string, FileRange>;
}

/**
 * Computes a module's output in place of `x @ weight^T + bias`. `name` is the module's
 * Hugging Face path without `.weight`, e.g. `model.layers.3.mlp.down_proj`.
 */
export type LinearOverride = (name: string, x: Tensor, base: (x: Tensor) => Tensor) => Tensor;

/**
 * The KV cache crosses the session boundary as [past, batch, kvHeads, headDim] per layer:
 * inputs `past_key.N` and `past_value.N`, and the new entries of all layers come back in one
 * output `present` [2 * layers, seq, batch, kvHeads, headDim], with the key of layer N at 2N
 * and its value at 2N + 1. With the position axis first, the entries for positions < past
 * are one contiguous prefix of a preallocated buffer, so the caller feeds a subarray view
 * and appends each step's new entries with one copy per layer, instead of copying the whole
 * cache out of and back into ORT at every step.
 */
export const kvCacheLayout = "[position, batch, kv_head, head_dim]";

export interface WeightSpec {
  name: string;
  shape: number[];
}

/**
 * Every tensor the checkpoint must contain, with its shape. Score models have no lm_head,
 * so `withLmHead` false leaves it out.
 */
export function weightSpecs(c: ModelConfig, withLmHead = true): WeightSpec[] {
  const h = c.hiddenSize;
  const q = c.numAttentionHeads * c.headDim;
  const kv = c.numKeyValueHeads * c.headDim;
  const specs: WeightSpec[] = [{ name: "model.embed_tokens.weight", shape: [c.vocabSize, h] }];
  for (let i = 0; i < c.numHiddenLayers; i++) {
    const p = `model.layers.${i}`;
    const linear = (name: string, out: number, inp: number, bias: boolean) => {
      specs.push({ name: `${p}.${name}.weight`, shape: [out, inp] });
      if (bias) specs.push({ name: `${p}.${name}.bias`, shape: [out] });
    };
    specs.push({ name: `${p}.input_layernorm.weight`, shape: [h] });
    linear("self_attn.q_proj", q, h, c.attentionQkvBias);
    linear("self_attn.k_proj", kv, h, c.attentionQkvBias);
    linear("self_attn.v_proj", kv, h, c.attentionQkvBias);
    linear("self_attn.o_proj", h, q, c.attentionOutBias);
    specs.push({ name: `${p}.post_attention_layernorm.weight`, shape: [h] });
    linear("mlp.gate_proj", c.intermediateSize, h, c.mlpBias);
    linear("mlp.up_proj", c.intermediateSize, h, c.mlpBias);
    linear("mlp.down_proj", h, c.intermediateSize, c.mlpBias);
  }
  specs.push({ name: "model.norm.weight", shape: [h] });
  if (withLmHead && !c.tieWordEmbeddings)
    specs.push({ name: "lm_head.weight", shape: [c.vocabSize, h] });
  return specs;
}

class LlamaBuilder {
  readonly g = new Graph("llama");
  /** Shapes of the checkpoint's weights; each becomes a graph tensor when first used. */
  private readonly specs = new Map<string, number[]>();
  private readonly weights = new Map<string, Tensor>();
  private readonly dtype: DType;

  constructor(
    private readonly c: ModelConfig,
    private readonly options: LlamaGraphOptions,
  ) {
    this.dtype = options.dtype ?? "float32";
    for (const spec of weightSpecs(c, options.output !== "hidden")) {
      this.specs.set(spec.name, spec.shape);
    }
  }

  private mappedFile(name: string): FileRange | undefined {
    return this.dtype === "float32" ? this.options.mappedWeights?.get(name) : undefined;
  }

  /**
   * The graph tensor of a checkpoint weight: an input, or an external-data initializer when
   * the weight is mapped. Created on first use, so that a graph contains only the weights it
   * reads (ORT warns about unused initializers).
   */
  weight(name: string): Tensor {
    let w = this.weights.get(name);
    if (w === undefined) {
      const shape = this.specs.get(name);
      if (shape === undefined) throw new Error(`llama graph: no weight ${name}`);
      const file = this.mappedFile(name);
      w =
        file === undefined
          ? this.g.input(name, this.dtype, shape)
          : this.g.externalInitializer(name, "float32", shape, file);
      this.weights.set(name, w);
    }
    return w;
  }

  scalar(value: number): Tensor {
    return op.scalar(this.g, value, this.dtype);
  }

  /** x @ W^T + b for the module `name`, through the caller's override when there is one. */
  linear(name: string, x: Tensor): Tensor {
    const base = (input: Tensor) => {
      const y = op.matmulTransB(input, this.weight(`${name}.weight`));
      const bias = `${name}.bias`;
      return this.specs.has(bias) ? op.add(y, this.weight(bias)) : y;
    };
    return this.options.linear ? this.options.linear(name, x, base) : base(x);
  }

  /**
   * x / sqrt(mean(x^2) + eps) * w, in inference graphs written in the pattern that ORT fuses
   * into one kernel (see `forGradients`).
   */
  rmsNorm(x: Tensor, weightName: string): Tensor {
    const square = this.options.forGradients ? op.mul(x, x) : op.pow(x, this.scalar(2));
    const meanSquare = op.reduceMean(square, [-1], true);
    const rms = op.sqrt(op.add(meanSquare, this.scalar(this.c.rmsNormEps)));
    return op.mul(op.div(x, rms), this.weight(weightName));
  }

  /** cos and sin of position * inv_freq, duplicated over both halves: [batch, 1, seq, D]. */
  rotaryTables(positionIds: Tensor): { cos: Tensor; sin: Tensor } {
    const invFreq = ropeInverseFrequencies(this.c);
    const half = invFreq.length;
    // Like transformers, the angle is formed in float32 from float32 inverse frequencies.
    const inv = op.constant(
      this.g,
      "float32",
      [1, 1, half],
      Array.from(Float32Array.from(invFreq)),
    );
    const pos = op.unsqueeze(op.cast(positionIds, "float32"), [2]); // [B, S, 1]
    const freqs = op.mul(pos, inv); // [B, S, D/2]
    const emb = op.unsqueeze(op.concat([freqs, freqs], -1), [1]); // [B, 1, S, D]
    return {
      cos: op.cast(op.cos(emb), this.dtype),
      sin: op.cast(op.sin(emb), this.dtype),
    };
  }

  /**
   * x * cos + rotate_half(x) * sin, where rotate_half(x) = [-x2, x1] over the head dim is the
   * product with a constant signed permutation matrix: one small MatMul forward and one
   * backward. Slicing, negating and concatenating the halves, with the gradients of those
   * ops, took about twice as long in a profiled DPO step.
   */
  applyRotary(x: Tensor, cos: Tensor, sin: Tensor): Tensor {
    return op.add(op.mul(x, cos), op.mul(op.matmul(x, this.rotateHalfMatrix()), sin));
  }

  private rotateHalf: Tensor | null = null;

  /** R [D, D] with (x R)[j] = -x[j + D/2] for j < D/2 and x[j - D/2] otherwise. */
  private rotateHalfMatrix(): Tensor {
    if (this.rotateHalf === null) {
      const d = this.c.headDim;
      const half = d / 2;
      const r = new Array<number>(d * d).fill(0);
      for (let j = 0; j < half; j++) {
        r[(j + half) * d + j] = -1;
        r[j * d + j + half] = 1;
      }
      this.rotateHalf = op.constant(this.g, this.dtype, [d, d], r);
    }
    return this.rotateHalf;
  }

  /**
   * The additive attention mask: 0 where query s may attend to key t, i.e. t is not padding
   * and t <= past + s, and -1e30 elsewhere. Shape [batch, 1, 1, seq, total] to broadcast over
   * heads. A large negative number instead of -inf keeps rows with no visible key (left
   * padding) finite: they become uniform and are ignored downstream. Adding a bias passes
   * gradients through unchanged, where selecting with Where on the scores needs a second
   * Where over the scores in the backward pass.
   */
  attentionBias(inputIds: Tensor, attentionMask: Tensor): Tensor {
    const g = this.g;
    const toScalar = (t: Tensor) => op.reshape(t, []);
    const seq = toScalar(op.shapeOf(inputIds, 1, 2));
    const total = toScalar(op.shapeOf(attentionMask, 1, 2));
    const zero = op.scalar(g, 0, "int64");
    const one = op.scalar(g, 1, "int64");
    const past = op.sub(total, seq);

    const queryIdx = op.unsqueeze(op.add(op.range(zero, seq, one), past), [1]); // [S, 1]
    const keyIdx = op.unsqueeze(op.range(zero, total, one), [0]); // [1, T]
    const causal = op.lessOrEqual(keyIdx, queryIdx); // [S, T]
    const notPad = op.unsqueeze(op.cast(attentionMask, "bool"), [1, 2, 3]); // [B, 1, 1, 1, T]
    return op.where(op.and(notPad, causal), this.scalar(0), this.scalar(-1e30));
  }

  /**
   * Self-attention of layer `layer` over the normed input `x`. With `query`, the queries come
   * from other rows than the keys and values (see endHidden), and `bias` must fit them.
   */
  attention(
    layer: number,
    x: Tensor,
    rope: { cos: Tensor; sin: Tensor },
    bias: Tensor,
    cacheOut: Tensor[],
    query?: { x: Tensor; rope: { cos: Tensor; sin: Tensor } },
  ): Tensor {
    const c = this.c;
    const p = `model.layers.${layer}.self_attn`;
    const heads = c.numAttentionHeads;
    const kvHeads = c.numKeyValueHeads;
    const groups = heads / kvHeads;
    const d = c.headDim;

    const toHeads = (t: Tensor, n: number) =>
      op.transpose(op.reshape(t, [0, 0, n, d]), [0, 2, 1, 3]);
    let q = toHeads(this.linear(`${p}.q_proj`, query?.x ?? x), heads); // [B, H, S, D]
    let k = toHeads(this.linear(`${p}.k_proj`, x), kvHeads); // [B, KV, S, D]
    let v = toHeads(this.linear(`${p}.v_proj`, x), kvHeads);
    const queryRope = query?.rope ?? rope;
    q = this.applyRotary(q, queryRope.cos, queryRope.sin);
    k = this.applyRotary(k, rope.cos, rope.sin);

    if (this.options.kvCache) {
      // Cache entries cross the boundary position-first; see kvCacheLayout.
      const pastK = this.g.input(`past_key.${layer}`, this.dtype, ["past", "batch", kvHeads, d]);
      const pastV = this.g.input(`past_value.${layer}`, this.dtype, ["past", "batch", kvHeads, d]);
      const newK = op.transpose(k, [2, 0, 1, 3]); // [S, B, KV, D]
      const newV = op.transpose(v, [2, 0, 1, 3]);
      cacheOut.push(newK, newV);
      k = op.transpose(op.concat([pastK, newK], 0), [1, 2, 0, 3]); // [B, KV, T, D]
      v = op.transpose(op.concat([pastV, newV], 0), [1, 2, 0, 3]);
    }

    // Grouped-query attention without repeating K and V: queries are grouped per KV head
    // as [B, KV, G, S, D] and K, V broadcast over the group axis.
    const qg = op.reshape(op.mul(q, this.scalar(1 / Math.sqrt(d))), [0, kvHeads, groups, -1, d]);
    const kg = op.unsqueeze(k, [2]); // [B, KV, 1, T, D]
    const vg = op.unsqueeze(v, [2]);
    const scores = op.matmulTransB(qg, kg); // [B, KV, G, S, T]
    const probs = op.softmax(op.add(scores, bias), -1);
    const ctx = op.matmul(probs, vg); // [B, KV, G, S, D]
    const merged = op.reshape(op.transpose(op.reshape(ctx, [0, heads, -1, d]), [0, 2, 1, 3]), [
      0,
      0,
      heads * d,
    ]);
    return this.linear(`${p}.o_proj`, merged);
  }

  mlp(layer: number, x: Tensor): Tensor {
    const p = `model.layers.${layer}.mlp`;
    const gate = this.linear(`${p}.gate_proj`, x);
    const up = this.linear(`${p}.up_proj`, x);
    const h = op.mul(op.mul(gate, op.sigmoid(gate)), up); // SiLU(gate) * up
    return this.linear(`${p}.down_proj`, h);
  }

  build(): Graph {
    const g = this.g;
    const c = this.c;
    const inputIds = g.input("input_ids", "int64", ["batch", "seq"]);
    const attentionMask = g.input("attention_mask", "int64", ["batch", "total"]);
    const positionIds = g.input("position_ids", "int64", ["batch", "seq"]);

    const rope = this.rotaryTables(positionIds);
    const bias = this.attentionBias(inputIds, attentionMask);
    const cacheOut: Tensor[] = [];

    // A tied table is read through the lm_head slices when the graph has them, so that the
    // table has one ORT mapping (see lmHeadRows).
    let x =
      c.tieWordEmbeddings && this.usesHeadSlices()
        ? this.gatherHeadRows(inputIds)
        : op.gather(this.weight("model.embed_tokens.weight"), inputIds, 0); // [B, S, H]
    const endOnly = this.options.output === "end-hidden";
    for (let i = 0; i < c.numHiddenLayers - (endOnly ? 1 : 0); i++) {
      const attn = this.attention(
        i,
        this.rmsNorm(x, `model.layers.${i}.input_layernorm.weight`),
        rope,
        bias,
        cacheOut,
      );
      x = op.add(x, attn);
      x = op.add(
        x,
        this.mlp(i, this.rmsNorm(x, `model.layers.${i}.post_attention_layernorm.weight`)),
      );
    }

    if (endOnly) {
      g.output(
        "hidden",
        this.endHidden(x, { inputIds, attentionMask, positionIds }, rope, cacheOut),
      );
    } else {
      this.addOutputs(x, inputIds);
    }
    // One output instead of two per layer, so that a decode step hands one buffer back to
    // JavaScript instead of two per layer.
    if (cacheOut.length > 0) {
      g.output(
        "present",
        op.concat(
          cacheOut.map((t) => op.unsqueeze(t, [0])),
          0,
        ),
      );
    }
    return g;
  }

  /**
   * The last layer and the final norm at the position that `last_token_mask` marks in each
   * row, from the last layer's input `x` [B, S, H]: [B, H]. Keys and values cover every
   * position, as later runs on the KV cache need them.
   */
  private endHidden(
    x: Tensor,
    inputs: { inputIds: Tensor; attentionMask: Tensor; positionIds: Tensor },
    rope: { cos: Tensor; sin: Tensor },
    cacheOut: Tensor[],
  ): Tensor {
    const g = this.g;
    const c = this.c;
    const layer = c.numHiddenLayers - 1;
    const lastMask = g.input("last_token_mask", this.dtype, ["batch", "seq"]);
    const end = op.argMax(lastMask, 1); // [B]

    const flat = op.unsqueeze(op.add(this.rowStarts(inputs.inputIds), end), [1]); // [B, 1]
    const pick = (t: Tensor) => op.gather(op.reshape(t, [-1, c.hiddenSize]), flat, 0); // [B, 1, H]
    const endPositions = op.gather(op.reshape(inputs.positionIds, [-1]), flat, 0); // [B, 1]

    // The end query attends to key t when t is not padding and t <= past + end.
    const zero = op.scalar(g, 0, "int64");
    const one = op.scalar(g, 1, "int64");
    const seq = op.reshape(op.shapeOf(inputs.inputIds, 1, 2), []);
    const total = op.reshape(op.shapeOf(inputs.attentionMask, 1, 2), []);
    const keyIdx = op.unsqueeze(op.range(zero, total, one), [0]); // [1, T]
    const queryIdx = op.unsqueeze(op.add(end, op.sub(total, seq)), [1]); // [B, 1]
    const causal = op.lessOrEqual(keyIdx, queryIdx); // [B, T]
    const visible = op.and(op.cast(inputs.attentionMask, "bool"), causal);
    const bias = op.reshape(
      op.where(visible, this.scalar(0), this.scalar(-1e30)),
      [0, 1, 1, 1, -1],
    ); // [B, 1, 1, 1, T]

    const p = `model.layers.${layer}`;
    const normed = this.rmsNorm(x, `${p}.input_layernorm.weight`);
    const attn = this.attention(layer, normed, rope, bias, cacheOut, {
      x: pick(normed),
      rope: this.rotaryTables(endPositions),
    });
    let h = op.add(pick(x), attn); // [B, 1, H]
    h = op.add(h, this.mlp(layer, this.rmsNorm(h, `${p}.post_attention_layernorm.weight`)));
    return op.reshape(this.rmsNorm(h, "model.norm.weight"), [-1, c.hiddenSize]);
  }

  /**
   * Returns b * S for each row b of `inputIds` [B, S]: where row b starts in tensors
   * flattened to [B * S, ...]. [B], int64.
   */
  private rowStarts(inputIds: Tensor): Tensor {
    const g = this.g;
    const seq = op.shapeOf(inputIds, 1, 2); // [1]
    const rows = op.reshape(op.shapeOf(inputIds, 0, 1), []);
    const zero = op.scalar(g, 0, "int64");
    const one = op.scalar(g, 1, "int64");
    return op.mul(op.range(zero, rows, one), seq);
  }

  private lmHeadWeight(): Tensor {
    return this.weight(lmHeadWeightName(this.c));
  }

  private lmHead(h: Tensor): Tensor {
    return op.matmulTransB(h, this.lmHeadWeight());
  }

  /**
   * log p(target) = logit[target] - logsumexp(logits) for hidden states [..., H] before the
   * final norm and target ids [...]. The target's logit is the dot product of the normed
   * hidden state with the target's lm_head row, so its gradient is a small gather, where
   * picking it out of the logits would need a zero-filled scatter as large as the logits.
   * Inference graphs take the logsumexp over the vocabulary one slice of lm_head rows at a
   * time (see `lmHeadSlices`). ORT frees each slice's logits after its reduction and reuses
   * the memory for the next, so only one slice's logits exist at once.
   */
  private logprobHead(hidden: Tensor, targets: Tensor): Tensor {
    const normed = this.rmsNorm(hidden, "model.norm.weight");
    if (!this.usesHeadSlices()) {
      const targetRows = op.gather(this.lmHeadWeight(), targets, 0); // [..., H]
      const picked = op.reduceSum(op.mul(normed, targetRows), [-1], false);
      const logits = op.matmulTransB(normed, this.lmHeadWeight()); // [..., V]
      return op.sub(picked, op.reduceLogSumExp(logits, [-1], false));
    }

    const picked = op.reduceSum(op.mul(normed, this.gatherHeadRows(targets)), [-1], false);
    const parts = this.lmHeadRows().map(
      (s) => op.reduceLogSumExp(op.matmulTransB(normed, s.rows), [-1], true), // [..., 1]
    );
    const lse = op.reduceLogSumExp(op.concat(parts, -1), [-1], false);
    return op.sub(picked, lse);
  }

  /** Log-prob outputs of inference graphs read the lm_head in slices (see lmHeadSlices). */
  private usesHeadSlices(): boolean {
    const output = this.options.output;
    return (
      (output === "token-logprobs" || output === "position-logprobs") &&
      this.options.forGradients !== true
    );
  }

  private headSlices: { start: number; rows: Tensor }[] | null = null;

  /**
   * Creates the lm_head slices: graph inputs `lm_head.rows.<k>` that callers bind to views of
   * the weight, or, for a weight left in its file, external-data initializers over the
   * slices' byte ranges. ORT maps each initializer on its own. A graph that also read the
   * whole weight would therefore have the file's pages in memory twice.
   */
  private lmHeadRows(): { start: number; rows: Tensor }[] {
    if (this.headSlices === null) {
      const h = this.c.hiddenSize;
      const file = this.mappedFile(lmHeadWeightName(this.c));
      this.headSlices = lmHeadSlices(this.c, this.options.vocabSliceRows).map((slice, k) => {
        const name = `${LM_HEAD_SLICE}${k}`;
        const shape = [slice.end - slice.start, h];
        const rows =
          file === undefined
            ? this.g.input(name, this.dtype, shape)
            : this.g.externalInitializer(name, "float32", shape, {
                path: file.path,
                offset: file.offset + slice.start * h * 4,
                length: shape[0] * h * 4,
              });
        return { start: slice.start, rows };
      });
    }
    return this.headSlices;
  }

  /**
   * Rows `ids` of the lm_head weight, [...ids, H], gathered from its slices: each slice
   * gathers at the ids clamped into its range, and the slice that contains an id supplies its
   * row. The extra gathers cost little next to the products with the slices.
   */
  private gatherHeadRows(ids: Tensor): Tensor {
    const g = this.g;
    let rows: Tensor | null = null;
    for (const s of this.lmHeadRows()) {
      const count = s.rows.shape[0] as number;
      const local = op.sub(ids, op.scalar(g, s.start, "int64"));
      const clamped = op.min(
        op.max(local, op.scalar(g, 0, "int64")),
        op.scalar(g, count - 1, "int64"),
      );
      const part = op.gather(s.rows, clamped, 0);
      rows =
        rows === null
          ? part
          : op.where(
              op.unsqueeze(op.greaterOrEqual(local, op.scalar(g, 0, "int64")), [-1]),
              part,
              rows,
            );
    }
    return rows!;
  }

  private addOutputs(x: Tensor, inputIds: Tensor): void {
    const g = this.g;
    switch (this.options.output) {
      case "hidden":
        g.output("hidden", this.rmsNorm(x, "model.norm.weight"));
        return;
      case "last-logits": {
        // Only the last position's logits are needed to sample: normalising and projecting
        // one position instead of all of them saves most of the lm_head cost on prompts.
        const last = op.slice(x, [1], [-1], [2 ** 62]); // [B, 1, H]
        const logits = op.reshape(this.lmHead(this.rmsNorm(last, "model.norm.weight")), [0, -1]);
        g.output("logits", logits);
        g.output("next_token", op.argMax(logits, -1));
        return;
      }
      case "token-logprobs": {
        // Positions 0..S-2 predict tokens 1..S-1; cutting the hidden states before the lm_head
        // avoids copying the largest tensor of the model.
        const hidden = op.slice(x, [1], [0], [-1]); // [B, S-1, H]
        const targets = op.slice(inputIds, [1], [1], [2 ** 62]); // [B, S-1]
        g.output("token_logprobs", this.logprobHead(hidden, targets));
        return;
      }
      case "position-logprobs": {
        const positions = g.input("logit_positions", "int64", ["batch", "picked"]);
        const one = op.scalar(g, 1, "int64");
        const flat = op.add(positions, op.unsqueeze(this.rowStarts(inputIds), [1])); // [B, P]
        const hidden = op.gather(op.reshape(x, [-1, this.c.hiddenSize]), flat, 0); // [B, P, H]
        const targets = op.gather(op.reshape(inputIds, [-1]), op.add(flat, one), 0); // [B, P]
        g.output("token_logprobs", this.logprobHead(hidden, targets));
        return;
      }
    }
  }
}

/** Name of the weight the lm_head multiplies by: the embedding table when they are tied. */
export function lmHeadWeightName(config: ModelConfig): string {
  return config.tieWordEmbeddings ? "model.embed_tokens.weight" : "lm_head.weight";
}

/** Name prefix of the graph inputs that hold slices of lm_head rows; see lmHeadSlices. */
export const LM_HEAD_SLICE = "lm_head.rows.";

/** Default lm_head rows per slice in inference log-prob graphs: 8 MiB of logits per 512 positions. */
const SLICE_ROWS = 4096;

/**
 * Splits the vocabulary into the slices of lm_head rows (ids [start, end)) that inference
 * log-prob graphs take as inputs `lm_head.rows.<k>`, in order. Callers bind each to a view
 * of the lm_head weight (`model.embed_tokens.weight` when tied), which costs no copy.
 */
export function lmHeadSlices(
  config: ModelConfig,
  sliceRows = SLICE_ROWS,
): { start: number; end: number }[] {
  if (!Number.isInteger(sliceRows) || sliceRows < 1) {
    throw new Error(`lm_head slices: rows per slice must be an integer >= 1, got ${sliceRows}`);
  }
  const count = Math.ceil(config.vocabSize / sliceRows);
  const size = Math.ceil(config.vocabSize / count);
  return Array.from({ length: count }, (_, k) => ({
    start: k * size,
    end: Math.min(config.vocabSize, (k + 1) * size),
  }));
}

/** Builds the decoder graph for `config`. Inputs: input_ids, attention_mask, position_ids
 *  (all int64), the weights by checkpoint name, and the KV cache when enabled. */
export function buildLlamaGraph(config: ModelConfig, options: LlamaGraphOptions): Graph {
  return new LlamaBuilder(config, options).build();
}
