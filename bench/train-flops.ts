// Estimated floating-point operations of the training benchmarks' work, for model FLOP
// utilisation (achieved FLOP/s over the matmul rate of the same process). Only matrix products
// are counted (2 FLOPs per multiply-add); norms, softmax, log-softmax and elementwise ops are
// left out, so the estimate is a lower bound.
//
// The usual 6·N·T for a training step assumes every weight gets a gradient. With frozen weights
// the backward pass still propagates activation gradients through every layer (about 2·N·T)
// but computes weight gradients only for the trainable ones (2·N_train·T). Attention products
// are counted over the full S x S square of each row, because both implementations compute
// the masked square.

import type { ModelConfig } from "../src/model/config.js";
import type { RouterShape } from "../src/midpo/router.js";
import { routerParams } from "../src/midpo/router.js";

export interface FlopEstimate {
  /** FLOPs of one timed run. */
  flops: number;
  /** The formula with its terms, for the report. */
  formula: string;
  terms: Record<string, number>;
}

/** Decoder matmul weights per token: q, k, v, o, gate, up and down of every layer. */
export function decoderLinearParams(c: ModelConfig): number {
  const q = c.numAttentionHeads * c.headDim;
  const kv = c.numKeyValueHeads * c.headDim;
  const attention = c.hiddenSize * (q + 2 * kv) + q * c.hiddenSize;
  const mlp = 3 * c.hiddenSize * c.intermediateSize;
  return c.numHiddenLayers * (attention + mlp);
}

/** QKᵀ and probs·V per token: 4 · layers · S · heads · head_dim, S the padded row width. */
function attentionFlopsPerToken(c: ModelConfig, width: number): number {
  return 4 * c.numHiddenLayers * width * c.numAttentionHeads * c.headDim;
}

/** LoRA weights of rank r on down_proj in every layer: r · (intermediate + hidden) each. */
export function loraParams(c: ModelConfig, r: number): number {
  return c.numHiddenLayers * r * (c.intermediateSize + c.hiddenSize);
}

export function routerParamCount(shape: RouterShape): number {
  return routerParams(shape).reduce((n, p) => n + p.dims.reduce((a, b) => a * b, 1), 0);
}

/**
 * Estimates the FLOPs of a preference step over `tokens` = rows x width positions. `extra` is
 * the matmul weights in the forward path besides the base model (LoRA branches, experts,
 * router), and `trainable` of them get weight gradients. With `withReference`, the base
 * model's forward pass is added.
 */
export function preferenceStepFlops(
  c: ModelConfig,
  tokens: number,
  width: number,
  extra: number,
  trainable: number,
  withReference: boolean,
): FlopEstimate {
  // The tied (or separate) lm_head is a vocab x hidden matmul at every position.
  const n = decoderLinearParams(c) + c.vocabSize * c.hiddenSize;
  const a = attentionFlopsPerToken(c, width);
  const forward = 2 * (n + extra) * tokens + a * tokens;
  const backward = 2 * (n + extra) * tokens + 2 * a * tokens + 2 * trainable * tokens;
  const reference = withReference ? 2 * n * tokens + a * tokens : 0;
  const formula =
    "forward 2·(N + N_extra)·T + A·T; backward ≈ 2·(N + N_extra)·T + 2·A·T + 2·N_train·T" +
    (withReference ? "; reference forward 2·N·T + A·T" : "") +
    "; N = decoder linear weights + lm_head" +
    ", A = 4·layers·S·heads·head_dim";
  return {
    flops: forward + backward + reference,
    formula,
    terms: { N: n, N_extra: extra, N_train: trainable, T: tokens, S: width, A: a },
  };
}

/** End scores of `tokens` positions: the backbone without lm_head; the head is negligible. */
export function scoreFlops(c: ModelConfig, tokens: number, width: number): FlopEstimate {
  const n = decoderLinearParams(c);
  const a = attentionFlopsPerToken(c, width);
  return {
    flops: 2 * n * tokens + a * tokens,
    formula:
      "2·N·T + A·T; N = decoder linear weights (no lm_head)" + ", A = 4·layers·S·heads·head_dim",
    terms: { N: n, T: tokens, S: width, A: a },
  };
}
