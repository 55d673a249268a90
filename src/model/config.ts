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

export type Architecture = "LlamaForCausalLM" | "MistralForCausalLM" | "Qwen2ForCausalLM";

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
  tieWordEmbeddings: boolean;
  /** Bias on q_proj, k_proj and v_proj (always true for Qwen2, `attention_bias` otherwise). */
  attentionQkvBias: boolean;
  /** Bias on o_proj (`attention_bias` on Llama; never on Qwen2). */
  attentionOutBias: boolean;
  /** Bias on gate_proj, up_proj and down_proj (`mlp_bias` on Llama). */
  mlpBias: boolean;
  hiddenAct: "silu";
  bosTokenId: number | null;
  eosTokenIds: number[];
  padTokenId: number | null;
}
