// Model configuration: the subset of a Hugging Face `config.json` that the Llama-family
// forward pass needs, normalised so that the graph code never looks at raw JSON.

/** RoPE frequency scaling, as `rope_scaling` in `config.json` spells it. */
export type RopeScaling =
  | { type: "linear"; factor: number }
  | {
      type: "llama3";
      factor: number;
      lowFreqFactor: number;
      highFreqFactor: number;
      originalMaxPositionEmbeddings: number;
    };

/** The `architectures[0]` values that midpo can run. Their defaults are in `load-config.ts`. */
export const SUPPORTED_ARCHITECTURES = [
  "LlamaForCausalLM",
  "MistralForCausalLM",
  "Qwen2ForCausalLM",
] as const;

export type Architecture = (typeof SUPPORTED_ARCHITECTURES)[number];

export interface ModelConfig {
  architecture: Architecture;
  vocabSize: number;
  hiddenSize: number;
  intermediateSize: number;
  numHiddenLayers: number;
  numAttentionHeads: number;
  numKeyValueHeads: number;
  /** Per-head width; `hidden_size / num_attention_heads` when `head_dim` is absent. */
  headDim: number;
  rmsNormEps: number;
  ropeTheta: number;
  ropeScaling: RopeScaling | null;
  maxPositionEmbeddings: number;
  /**
   * Sliding-window attention width in tokens, or null when every layer attends to all earlier
   * positions. midpo implements full causal attention only, which equals sliding-window attention
   * for sequences of at most this many tokens, so the forward pass must reject longer ones.
   */
  slidingWindow: number | null;
  tieWordEmbeddings: boolean;
  /** Bias on q_proj, k_proj and v_proj: always on Qwen2, never on Mistral, `attention_bias` on Llama. */
  attentionQkvBias: boolean;
  /** Bias on o_proj: `attention_bias` on Llama, never on Mistral or Qwen2. */
  attentionOutBias: boolean;
  /** Bias on gate_proj, up_proj and down_proj: `mlp_bias` on Llama, never on Mistral or Qwen2. */
  mlpBias: boolean;
  hiddenAct: "silu";
  bosTokenId: number | null;
  eosTokenIds: number[];
  padTokenId: number | null;
}
