// Converter from llama2.c checkpoints (Karpathy's `run.c` format, e.g. stories260K.bin) to
// the Hugging Face layout: config.json plus model.safetensors.
//
// The .bin file is a header of seven int32 values (dim, hidden_dim, n_layers, n_heads,
// n_kv_heads, vocab_size, seq_len; a negative vocab_size means the classifier is stored
// separately) followed by float32 arrays: token embeddings, attention RMSNorm weights of all
// layers, wq, wk, wv, wo, FFN RMSNorm weights, w1, w2, w3, the final RMSNorm weight, the
// precomputed RoPE tables (skipped), and the classifier when not shared.

import { mkdirSync, readFileSync, renameSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { MidpoError } from "../errors.js";
import { writeSafetensors, type SafetensorsTensor } from "./safetensors.js";

export interface Llama2cHeader {
  dim: number;
  hiddenDim: number;
  nLayers: number;
  nHeads: number;
  nKvHeads: number;
  vocabSize: number;
  seqLen: number;
  sharedClassifier: boolean;
}

const HEADER_BYTES = 7 * 4;

/**
 * Reorders the rows of a q or k projection from llama2.c's RoPE, which rotates interleaved
 * pairs (x[2i], x[2i+1]), to transformers' `rotate_half`, which pairs x[i] with x[i + d/2]:
 * within each head, row 2i moves to i and row 2i+1 to i + d/2.
 */
export function permuteForRotateHalf(
  w: Float32Array,
  heads: number,
  rows: number,
  cols: number,
): Float32Array {
  const headDim = rows / heads;
  const half = headDim / 2;
  const out = new Float32Array(w.length);
  for (let h = 0; h < heads; h++) {
    for (let i = 0; i < half; i++) {
      for (const parity of [0, 1]) {
        const src = h * headDim + 2 * i + parity;
        const dst = h * headDim + i + parity * half;
        out.set(w.subarray(src * cols, (src + 1) * cols), dst * cols);
      }
    }
  }
  return out;
}

/** Files that are easily mistaken for llama2.c checkpoints, by their first 4 bytes. */
const KNOWN_FORMATS: Record<string, string> = {
  GGUF: "a GGUF file (llama.cpp)",
  "24ka": "in llama2.c's versioned export format (version 1 or 2)",
  "PK\u0003\u0004": "a zip archive (a PyTorch .pt or .pth checkpoint)",
};

export function readLlama2cHeader(bytes: Buffer, path: string): Llama2cHeader {
  if (bytes.length < HEADER_BYTES) {
    throw new MidpoError(`${path} is ${bytes.length} bytes, too short for a llama2.c header`);
  }
  const magic = bytes.subarray(0, 4).toString("latin1");
  const known = KNOWN_FORMATS[magic];
  if (known !== undefined) {
    throw new MidpoError(
      magic === "24ka"
        ? `${path} is ${known}. midpo converts the original format only: export the ` +
            `model again with llama2.c's export.py --version 0.`
        : `${path} is ${known}, not a llama2.c checkpoint. midpo reads Hugging Face model ` +
            `directories (config.json and safetensors) and converts llama2.c .bin files only.`,
    );
  }
  const v = (i: number) => bytes.readInt32LE(i * 4);
  const header: Llama2cHeader = {
    dim: v(0),
    hiddenDim: v(1),
    nLayers: v(2),
    nHeads: v(3),
    nKvHeads: v(4),
    vocabSize: Math.abs(v(5)),
    seqLen: v(6),
    sharedClassifier: v(5) > 0,
  };
  const positive = [header.dim, header.hiddenDim, header.nLayers, header.nHeads, header.nKvHeads];
  if (positive.some((x) => x <= 0) || header.dim % header.nHeads !== 0 || header.seqLen <= 0) {
    throw new MidpoError(
      `${path} does not look like a llama2.c checkpoint: its first 28 bytes read as dim ` +
        `${header.dim}, ${header.nLayers} layers, ${header.nHeads} heads and sequence length ` +
        `${header.seqLen}. Pass the .bin file that llama2.c's export wrote (version 0 format).`,
    );
  }
  return header;
}

/** Converts `binPath` into a Hugging Face model directory `outDir`; returns the header. */
export function convertLlama2c(binPath: string, outDir: string): Llama2cHeader {
  let bytes: Buffer;
  try {
    bytes = readFileSync(binPath);
  } catch (error) {
    throw new MidpoError(`cannot read llama2.c checkpoint ${binPath}: ${(error as Error).message}`);
  }
  const h = readLlama2cHeader(bytes, binPath);
  const headDim = h.dim / h.nHeads;
  const kvDim = h.nKvHeads * headDim;
  const floats = new Float32Array(
    bytes.buffer.slice(bytes.byteOffset + HEADER_BYTES, bytes.byteOffset + bytes.length),
  );

  let offset = 0;
  const take = (n: number) => {
    if (offset + n > floats.length) {
      throw new MidpoError(
        `${binPath} is truncated: expected at least ${(offset + n) * 4 + HEADER_BYTES} bytes`,
      );
    }
    const out = floats.slice(offset, offset + n);
    offset += n;
    return out;
  };
  const perLayer = (n: number) => Array.from({ length: h.nLayers }, () => take(n));

  const embed = take(h.vocabSize * h.dim);
  const attnNorm = perLayer(h.dim);
  const wq = perLayer(h.dim * h.dim);
  const wk = perLayer(kvDim * h.dim);
  const wv = perLayer(kvDim * h.dim);
  const wo = perLayer(h.dim * h.dim);
  const ffnNorm = perLayer(h.dim);
  const w1 = perLayer(h.hiddenDim * h.dim);
  const w2 = perLayer(h.dim * h.hiddenDim);
  const w3 = perLayer(h.hiddenDim * h.dim);
  const finalNorm = take(h.dim);
  take(h.seqLen * (headDim / 2) * 2); // precomputed RoPE cos and sin tables
  const classifier = h.sharedClassifier ? null : take(h.vocabSize * h.dim);

  const f32 = (data: Float32Array, shape: number[]): SafetensorsTensor => ({
    dtype: "F32",
    shape,
    data,
  });
  const tensors: Record<string, SafetensorsTensor> = {
    "model.embed_tokens.weight": f32(embed, [h.vocabSize, h.dim]),
    "model.norm.weight": f32(finalNorm, [h.dim]),
  };
  for (let l = 0; l < h.nLayers; l++) {
    const p = `model.layers.${l}`;
    tensors[`${p}.input_layernorm.weight`] = f32(attnNorm[l], [h.dim]);
    tensors[`${p}.self_attn.q_proj.weight`] = f32(
      permuteForRotateHalf(wq[l], h.nHeads, h.dim, h.dim),
      [h.dim, h.dim],
    );
    tensors[`${p}.self_attn.k_proj.weight`] = f32(
      permuteForRotateHalf(wk[l], h.nKvHeads, kvDim, h.dim),
      [kvDim, h.dim],
    );
    tensors[`${p}.self_attn.v_proj.weight`] = f32(wv[l], [kvDim, h.dim]);
    tensors[`${p}.self_attn.o_proj.weight`] = f32(wo[l], [h.dim, h.dim]);
    tensors[`${p}.post_attention_layernorm.weight`] = f32(ffnNorm[l], [h.dim]);
    tensors[`${p}.mlp.gate_proj.weight`] = f32(w1[l], [h.hiddenDim, h.dim]);
    tensors[`${p}.mlp.down_proj.weight`] = f32(w2[l], [h.dim, h.hiddenDim]);
    tensors[`${p}.mlp.up_proj.weight`] = f32(w3[l], [h.hiddenDim, h.dim]);
  }
  if (classifier !== null) tensors["lm_head.weight"] = f32(classifier, [h.vocabSize, h.dim]);

  // llama2.c's run.c uses RMSNorm eps 1e-5, RoPE theta 10000, BOS 1 and EOS 2.
  const config = {
    architectures: ["LlamaForCausalLM"],
    model_type: "llama",
    hidden_size: h.dim,
    intermediate_size: h.hiddenDim,
    num_hidden_layers: h.nLayers,
    num_attention_heads: h.nHeads,
    num_key_value_heads: h.nKvHeads,
    vocab_size: h.vocabSize,
    max_position_embeddings: h.seqLen,
    rms_norm_eps: 1e-5,
    rope_theta: 10000,
    hidden_act: "silu",
    tie_word_embeddings: h.sharedClassifier,
    bos_token_id: 1,
    eos_token_id: 2,
    torch_dtype: "float32",
  };
  mkdirSync(outDir, { recursive: true });
  writeSafetensors(join(outDir, "model.safetensors"), tensors);
  const configPath = join(outDir, "config.json");
  writeFileSync(`${configPath}.tmp`, JSON.stringify(config, null, 2) + "\n");
  renameSync(`${configPath}.tmp`, configPath);
  return h;
}
