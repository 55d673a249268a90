import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";

import { MidpoError } from "../src/errors.js";
import { loadConfig, parseConfig } from "../src/model/load-config.js";

const SOURCE = "/checkpoints/tiny/config.json";

/** The required keys of a small Llama. Tests add or override the keys they exercise. */
const minimal = {
  vocab_size: 320,
  hidden_size: 64,
  intermediate_size: 160,
  num_hidden_layers: 2,
  num_attention_heads: 4,
};

function llama(extra: Record<string, unknown> = {}): Record<string, unknown> {
  return { architectures: ["LlamaForCausalLM"], ...minimal, ...extra };
}

// MistralConfig and Qwen2Config default num_key_value_heads to 8 and 32, which cannot divide
// the 4 heads of `minimal`, so their builders set it.

function mistral(extra: Record<string, unknown> = {}): Record<string, unknown> {
  return { architectures: ["MistralForCausalLM"], ...minimal, num_key_value_heads: 2, ...extra };
}

function qwen2(extra: Record<string, unknown> = {}): Record<string, unknown> {
  return { architectures: ["Qwen2ForCausalLM"], ...minimal, num_key_value_heads: 2, ...extra };
}

function without(json: Record<string, unknown>, key: string): Record<string, unknown> {
  const copy = { ...json };
  delete copy[key];
  return copy;
}

/** Returns the MidpoError that parsing `json` throws, and fails the test if it succeeds. */
function parseError(json: unknown): MidpoError {
  try {
    parseConfig(json, SOURCE);
  } catch (error) {
    expect(error).toBeInstanceOf(MidpoError);
    return error as MidpoError;
  }
  throw new Error("expected parseConfig to throw a MidpoError");
}

describe("parseConfig with real checkpoint configs", () => {
  it("reads a Llama 3.2 config with llama3 RoPE", () => {
    const config = parseConfig(
      {
        architectures: ["LlamaForCausalLM"],
        attention_bias: false,
        bos_token_id: 128000,
        eos_token_id: [128001, 128008, 128009],
        head_dim: 64,
        hidden_act: "silu",
        hidden_size: 2048,
        intermediate_size: 8192,
        max_position_embeddings: 131072,
        mlp_bias: false,
        model_type: "llama",
        num_attention_heads: 32,
        num_hidden_layers: 16,
        num_key_value_heads: 8,
        rms_norm_eps: 1e-5,
        rope_scaling: {
          factor: 32.0,
          high_freq_factor: 4.0,
          low_freq_factor: 1.0,
          original_max_position_embeddings: 8192,
          rope_type: "llama3",
        },
        rope_theta: 500000.0,
        tie_word_embeddings: true,
        torch_dtype: "bfloat16",
        vocab_size: 128256,
      },
      SOURCE,
    );
    expect(config).toEqual({
      architecture: "LlamaForCausalLM",
      vocabSize: 128256,
      hiddenSize: 2048,
      intermediateSize: 8192,
      numHiddenLayers: 16,
      numAttentionHeads: 32,
      numKeyValueHeads: 8,
      headDim: 64,
      rmsNormEps: 1e-5,
      ropeTheta: 500000,
      ropeScaling: {
        type: "llama3",
        factor: 32,
        lowFreqFactor: 1,
        highFreqFactor: 4,
        originalMaxPositionEmbeddings: 8192,
      },
      maxPositionEmbeddings: 131072,
      slidingWindow: null,
      tieWordEmbeddings: true,
      attentionQkvBias: false,
      attentionOutBias: false,
      mlpBias: false,
      hiddenAct: "silu",
      bosTokenId: 128000,
      eosTokenIds: [128001, 128008, 128009],
      padTokenId: null,
    });
  });

  it("reads a Mistral 7B v0.1 config", () => {
    const config = parseConfig(
      {
        architectures: ["MistralForCausalLM"],
        bos_token_id: 1,
        eos_token_id: 2,
        hidden_act: "silu",
        hidden_size: 4096,
        intermediate_size: 14336,
        max_position_embeddings: 32768,
        model_type: "mistral",
        num_attention_heads: 32,
        num_hidden_layers: 32,
        num_key_value_heads: 8,
        rms_norm_eps: 1e-5,
        rope_theta: 10000.0,
        sliding_window: 4096,
        tie_word_embeddings: false,
        vocab_size: 32000,
      },
      SOURCE,
    );
    expect(config.architecture).toBe("MistralForCausalLM");
    expect(config.headDim).toBe(128);
    expect(config.numKeyValueHeads).toBe(8);
    expect(config.slidingWindow).toBe(4096);
    expect(config.maxPositionEmbeddings).toBe(32768);
    expect(config.ropeScaling).toBeNull();
    expect(config.eosTokenIds).toEqual([2]);
    expect(config.attentionQkvBias).toBe(false);
  });

  it("reads a Qwen2 0.5B config", () => {
    const config = parseConfig(
      {
        architectures: ["Qwen2ForCausalLM"],
        attention_dropout: 0.0,
        bos_token_id: 151643,
        eos_token_id: 151645,
        hidden_act: "silu",
        hidden_size: 896,
        intermediate_size: 4864,
        max_position_embeddings: 32768,
        max_window_layers: 21,
        model_type: "qwen2",
        num_attention_heads: 14,
        num_hidden_layers: 24,
        num_key_value_heads: 2,
        rms_norm_eps: 1e-6,
        rope_theta: 1000000.0,
        sliding_window: 32768,
        tie_word_embeddings: true,
        use_sliding_window: false,
        vocab_size: 151936,
      },
      SOURCE,
    );
    expect(config.architecture).toBe("Qwen2ForCausalLM");
    expect(config.headDim).toBe(64);
    expect(config.numKeyValueHeads).toBe(2);
    expect(config.slidingWindow).toBeNull();
    expect(config.tieWordEmbeddings).toBe(true);
    expect(config.attentionQkvBias).toBe(true);
    expect(config.attentionOutBias).toBe(false);
    expect(config.mlpBias).toBe(false);
    expect(config.bosTokenId).toBe(151643);
    expect(config.eosTokenIds).toEqual([151645]);
  });
});

describe("parseConfig defaults", () => {
  it("applies Llama defaults", () => {
    const config = parseConfig(llama(), SOURCE);
    expect(config.numKeyValueHeads).toBe(4);
    expect(config.headDim).toBe(16);
    expect(config.ropeTheta).toBe(10000);
    expect(config.rmsNormEps).toBe(1e-6);
    expect(config.maxPositionEmbeddings).toBe(2048);
    expect(config.tieWordEmbeddings).toBe(false);
    expect(config.ropeScaling).toBeNull();
    expect(config.hiddenAct).toBe("silu");
    expect(config.bosTokenId).toBe(1);
    expect(config.eosTokenIds).toEqual([2]);
    expect(config.padTokenId).toBeNull();
    expect(config.slidingWindow).toBeNull();
  });

  it("applies Mistral defaults", () => {
    const json = without(mistral({ num_attention_heads: 8 }), "num_key_value_heads");
    const config = parseConfig(json, SOURCE);
    expect(config.numKeyValueHeads).toBe(8);
    expect(config.headDim).toBe(8);
    expect(config.maxPositionEmbeddings).toBe(131072);
    expect(config.slidingWindow).toBe(4096);
    expect(config.bosTokenId).toBe(1);
    expect(config.eosTokenIds).toEqual([2]);
    expect(config.rmsNormEps).toBe(1e-6);
  });

  it("applies Qwen2 defaults", () => {
    const json = without(
      qwen2({ num_attention_heads: 32, hidden_size: 256 }),
      "num_key_value_heads",
    );
    const config = parseConfig(json, SOURCE);
    expect(config.numKeyValueHeads).toBe(32);
    expect(config.maxPositionEmbeddings).toBe(32768);
    expect(config.slidingWindow).toBeNull();
    expect(config.bosTokenId).toBeNull();
    expect(config.eosTokenIds).toEqual([]);
    expect(config.tieWordEmbeddings).toBe(false);
  });

  it("treats null num_key_value_heads as num_attention_heads", () => {
    expect(parseConfig(mistral({ num_key_value_heads: null }), SOURCE).numKeyValueHeads).toBe(4);
    expect(parseConfig(qwen2({ num_key_value_heads: null }), SOURCE).numKeyValueHeads).toBe(4);
  });

  it("keeps an explicit head_dim", () => {
    const config = parseConfig(llama({ head_dim: 32 }), SOURCE);
    expect(config.headDim).toBe(32);
    expect(parseConfig(mistral({ head_dim: null }), SOURCE).headDim).toBe(16);
  });

  it("accepts eos_token_id as number, list or null", () => {
    expect(parseConfig(llama({ eos_token_id: 7 }), SOURCE).eosTokenIds).toEqual([7]);
    expect(parseConfig(llama({ eos_token_id: [7, 9] }), SOURCE).eosTokenIds).toEqual([7, 9]);
    expect(parseConfig(llama({ eos_token_id: null }), SOURCE).eosTokenIds).toEqual([]);
    expect(parseConfig(llama({ bos_token_id: null }), SOURCE).bosTokenId).toBeNull();
    expect(parseConfig(llama({ pad_token_id: 0 }), SOURCE).padTokenId).toBe(0);
  });

  it("falls back to model_type without architectures", () => {
    const withoutArchitectures = (modelType: string) => ({
      model_type: modelType,
      ...minimal,
      num_key_value_heads: 2,
    });
    expect(parseConfig(withoutArchitectures("llama"), SOURCE).architecture).toBe(
      "LlamaForCausalLM",
    );
    expect(parseConfig(withoutArchitectures("mistral"), SOURCE).architecture).toBe(
      "MistralForCausalLM",
    );
    expect(parseConfig(withoutArchitectures("qwen2"), SOURCE).architecture).toBe(
      "Qwen2ForCausalLM",
    );
  });
});

describe("parseConfig biases", () => {
  it("puts Llama attention_bias on q, k, v and o", () => {
    const config = parseConfig(llama({ attention_bias: true }), SOURCE);
    expect(config.attentionQkvBias).toBe(true);
    expect(config.attentionOutBias).toBe(true);
    expect(config.mlpBias).toBe(false);
  });

  it("reads Llama mlp_bias", () => {
    expect(parseConfig(llama({ mlp_bias: true }), SOURCE).mlpBias).toBe(true);
  });

  it("ignores bias keys on Mistral", () => {
    const config = parseConfig(mistral({ attention_bias: true, mlp_bias: true }), SOURCE);
    expect(config.attentionQkvBias).toBe(false);
    expect(config.attentionOutBias).toBe(false);
    expect(config.mlpBias).toBe(false);
  });

  it("always biases Qwen2 q, k and v only", () => {
    const config = parseConfig(qwen2({ attention_bias: false }), SOURCE);
    expect(config.attentionQkvBias).toBe(true);
    expect(config.attentionOutBias).toBe(false);
  });
});

describe("parseConfig sliding window", () => {
  it("follows Mistral sliding_window", () => {
    expect(parseConfig(mistral({ sliding_window: null }), SOURCE).slidingWindow).toBeNull();
    expect(parseConfig(mistral({ sliding_window: 8192 }), SOURCE).slidingWindow).toBe(8192);
  });

  it("needs use_sliding_window on Qwen2", () => {
    const off = qwen2({ sliding_window: 1024, use_sliding_window: false, max_window_layers: 0 });
    expect(parseConfig(off, SOURCE).slidingWindow).toBeNull();
    const on = qwen2({ sliding_window: 1024, use_sliding_window: true, max_window_layers: 1 });
    expect(parseConfig(on, SOURCE).slidingWindow).toBe(1024);
  });

  it("ignores Qwen2 window when no layer uses it", () => {
    // Layers from max_window_layers on use the window, so with 2 layers and the default 28, none do.
    const defaultLayers = qwen2({ use_sliding_window: true });
    expect(parseConfig(defaultLayers, SOURCE).slidingWindow).toBeNull();
    const allFull = qwen2({ use_sliding_window: true, max_window_layers: 2 });
    expect(parseConfig(allFull, SOURCE).slidingWindow).toBeNull();
  });

  it("reads Qwen2 layer_types", () => {
    const sliding = qwen2({
      use_sliding_window: true,
      sliding_window: 512,
      layer_types: ["full_attention", "sliding_attention"],
    });
    expect(parseConfig(sliding, SOURCE).slidingWindow).toBe(512);
    const full = qwen2({
      use_sliding_window: true,
      max_window_layers: 0,
      layer_types: ["full_attention", "full_attention"],
    });
    expect(parseConfig(full, SOURCE).slidingWindow).toBeNull();
  });

  it("defaults the Qwen2 window to 4096", () => {
    const config = parseConfig(qwen2({ use_sliding_window: true, max_window_layers: 0 }), SOURCE);
    expect(config.slidingWindow).toBe(4096);
  });

  it("has no window on Llama", () => {
    expect(parseConfig(llama({ sliding_window: 256 }), SOURCE).slidingWindow).toBeNull();
  });
});

describe("parseConfig rope_scaling", () => {
  it("treats null and default as no scaling", () => {
    expect(parseConfig(llama({ rope_scaling: null }), SOURCE).ropeScaling).toBeNull();
    const defaultType = llama({ rope_scaling: { rope_type: "default" } });
    expect(parseConfig(defaultType, SOURCE).ropeScaling).toBeNull();
  });

  it("reads linear scaling under type or rope_type", () => {
    const legacy = llama({ rope_scaling: { type: "linear", factor: 2 } });
    expect(parseConfig(legacy, SOURCE).ropeScaling).toEqual({ type: "linear", factor: 2 });
    const current = llama({ rope_scaling: { rope_type: "linear", factor: 4 } });
    expect(parseConfig(current, SOURCE).ropeScaling).toEqual({ type: "linear", factor: 4 });
  });

  it("reads transformers 5 rope_parameters", () => {
    const plain = llama({ rope_parameters: { rope_type: "default", rope_theta: 500000 } });
    expect(parseConfig(plain, SOURCE).ropeTheta).toBe(500000);
    expect(parseConfig(plain, SOURCE).ropeScaling).toBeNull();
    const scaled = llama({
      rope_parameters: {
        rope_type: "llama3",
        rope_theta: 500000,
        factor: 8,
        low_freq_factor: 1,
        high_freq_factor: 4,
        original_max_position_embeddings: 8192,
      },
    });
    expect(parseConfig(scaled, SOURCE).ropeScaling).toEqual({
      type: "llama3",
      factor: 8,
      lowFreqFactor: 1,
      highFreqFactor: 4,
      originalMaxPositionEmbeddings: 8192,
    });
  });
});

describe("parseConfig errors", () => {
  function expectMessage(json: unknown, ...parts: string[]): void {
    const message = parseError(json).message;
    expect(message).toContain(SOURCE);
    for (const part of parts) {
      expect(message).toContain(part);
    }
  }

  it("rejects an unsupported architecture", () => {
    expectMessage(
      llama({ architectures: ["GPT2LMHeadModel"] }),
      '"architectures[0]" is "GPT2LMHeadModel"',
      "LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM",
    );
  });

  it("rejects a score model as a causal LM", () => {
    expectMessage(
      llama({ architectures: ["LlamaForSequenceClassification"] }),
      '"architectures[0]" is "LlamaForSequenceClassification", a score model',
      "LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM",
      "`midpo score`",
    );
  });

  it("rejects an unsupported model_type", () => {
    expectMessage({ model_type: "gpt2", ...minimal }, '"model_type" is "gpt2"', "llama, mistral");
  });

  it("rejects a config without architecture", () => {
    expectMessage({ ...minimal }, '"architectures"', '"model_type"', "LlamaForCausalLM");
  });

  it("rejects a missing size key", () => {
    expectMessage(without(llama(), "hidden_size"), '"hidden_size" is missing');
  });

  it("rejects invalid sizes", () => {
    expectMessage(llama({ hidden_size: -64 }), '"hidden_size" is -64', "positive integer");
    expectMessage(llama({ vocab_size: 10.5 }), '"vocab_size" is 10.5', "positive integer");
    expectMessage(llama({ num_hidden_layers: "2" }), '"num_hidden_layers" is "2"');
    expectMessage(llama({ rms_norm_eps: 0 }), '"rms_norm_eps" is 0', "greater than 0");
  });

  it("lists every invalid key", () => {
    expectMessage(
      llama({ hidden_size: 0, intermediate_size: null }),
      '"hidden_size" is 0',
      '"intermediate_size" is null',
    );
  });

  it("rejects an invalid eos_token_id", () => {
    expectMessage(llama({ eos_token_id: [2, "eos"] }), '"eos_token_id" is [2,"eos"]', "token id");
  });

  it("rejects a hidden_act other than silu", () => {
    expectMessage(llama({ hidden_act: "gelu" }), '"hidden_act" is "gelu"', "silu");
  });

  it("rejects key-value heads that do not divide heads", () => {
    expectMessage(llama({ num_key_value_heads: 3 }), '"num_key_value_heads" is 3', "divide");
  });

  it("names the default when it cannot divide heads", () => {
    expectMessage(
      without(mistral(), "num_key_value_heads"),
      '"num_key_value_heads" is 8',
      "mistral default",
    );
  });

  it("rejects hidden_size not divisible by heads", () => {
    expectMessage(
      llama({ hidden_size: 66 }),
      '"hidden_size" is 66',
      "num_attention_heads 4",
      "head_dim",
    );
  });

  it("rejects an odd head_dim", () => {
    expectMessage(llama({ head_dim: 15 }), '"head_dim" is 15', "even");
  });

  it("rejects a config that is not an object", () => {
    expectMessage([1, 2], "[1,2]");
  });

  for (const ropeType of ["dynamic", "yarn", "longrope"]) {
    it(`rejects ${ropeType} RoPE scaling`, () => {
      expectMessage(
        llama({ rope_scaling: { rope_type: ropeType, factor: 2 } }),
        `"rope_scaling.rope_type" is "${ropeType}"`,
        "default, linear, llama3",
      );
    });
  }

  it("names the legacy type key", () => {
    expectMessage(llama({ rope_scaling: { type: "dynamic", factor: 2 } }), '"rope_scaling.type"');
  });

  it("rejects rope_scaling without a type", () => {
    expectMessage(llama({ rope_scaling: { factor: 2 } }), '"rope_scaling.rope_type" is missing');
  });

  it("rejects a non-positive factor", () => {
    const zero = llama({ rope_scaling: { type: "linear", factor: 0 } });
    expectMessage(zero, '"rope_scaling.factor" is 0', "greater than 0");
    const negative = llama({ rope_scaling: { type: "linear", factor: -2 } });
    expectMessage(negative, '"rope_scaling.factor" is -2');
  });

  it("rejects linear scaling without factor", () => {
    const missing = llama({ rope_scaling: { type: "linear" } });
    expectMessage(missing, '"rope_scaling.factor" is missing', "linear");
  });

  it("rejects llama3 scaling without a key", () => {
    const incomplete = llama({
      rope_scaling: { rope_type: "llama3", factor: 8, low_freq_factor: 1, high_freq_factor: 4 },
    });
    expectMessage(incomplete, '"rope_scaling.original_max_position_embeddings" is missing');
  });

  it("rejects llama3 high_freq_factor not above low", () => {
    const inverted = llama({
      rope_scaling: {
        rope_type: "llama3",
        factor: 8,
        low_freq_factor: 4,
        high_freq_factor: 4,
        original_max_position_embeddings: 8192,
      },
    });
    expectMessage(inverted, '"rope_scaling.high_freq_factor" is 4', "low_freq_factor 4");
  });

  it("rejects rope_scaling that is not an object", () => {
    expectMessage(llama({ rope_scaling: "linear" }), '"rope_scaling" is "linear"', "object");
  });
});

describe("loadConfig", () => {
  let dir: string;

  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), "midpo-config-"));
  });

  afterEach(() => {
    rmSync(dir, { recursive: true, force: true });
  });

  it("reads config.json from a directory or a path", () => {
    writeFileSync(join(dir, "config.json"), JSON.stringify(qwen2()));
    expect(loadConfig(dir).architecture).toBe("Qwen2ForCausalLM");
    expect(loadConfig(join(dir, "config.json")).architecture).toBe("Qwen2ForCausalLM");
  });

  it("names the file in validation errors", () => {
    const path = join(dir, "config.json");
    writeFileSync(path, JSON.stringify(llama({ hidden_act: "relu" })));
    expect(() => loadConfig(dir)).toThrow(MidpoError);
    expect(() => loadConfig(dir)).toThrow(`${path}: "hidden_act" is "relu"`);
  });

  it("reports a missing config.json", () => {
    expect(() => loadConfig(dir)).toThrow(MidpoError);
    expect(() => loadConfig(dir)).toThrow(`Model config not found: ${join(dir, "config.json")}`);
  });

  it("reports invalid JSON", () => {
    const path = join(dir, "config.json");
    writeFileSync(path, '{"architectures": [');
    expect(() => loadConfig(path)).toThrow(MidpoError);
    expect(() => loadConfig(path)).toThrow(`${path} is not valid JSON`);
  });
});
