// Loading a Hugging Face `config.json` into ModelConfig.
//
// Absent keys get the defaults that transformers' LlamaConfig, MistralConfig and Qwen2Config
// apply, and the per-architecture rules of their attention and MLP modules (which projections
// carry a bias, when sliding-window attention is on). The five size keys (vocab_size,
// hidden_size, intermediate_size, num_hidden_layers, num_attention_heads) are required: their
// transformers defaults describe a 7B model, and a checkpoint that omits them is more likely
// incomplete than 7B-sized.

import { readFileSync, statSync } from "node:fs";
import { join, resolve } from "node:path";
import { z } from "zod";

import { MidpoError } from "../errors.js";
import {
  SUPPORTED_ARCHITECTURES,
  type Architecture,
  type ModelConfig,
  type RopeScaling,
} from "./config.js";

/** `rope_type` values that midpo implements. "default" means no scaling. */
export const SUPPORTED_ROPE_TYPES = ["default", "linear", "llama3"] as const;

const POSITIVE_INTEGER = "must be a positive integer";
const POSITIVE_NUMBER = "must be a number greater than 0";

const positiveInteger = z
  .number({ error: POSITIVE_INTEGER })
  .int({ error: POSITIVE_INTEGER })
  .positive({ error: POSITIVE_INTEGER });

const nonNegativeInteger = z
  .number({ error: "must be a non-negative integer" })
  .int({ error: "must be a non-negative integer" })
  .nonnegative({ error: "must be a non-negative integer" });

const positiveNumber = z.number({ error: POSITIVE_NUMBER }).positive({ error: POSITIVE_NUMBER });

const boolean = z.boolean({ error: "must be true or false" });

const tokenIds = z.union([nonNegativeInteger, z.array(nonNegativeInteger)], {
  error: "must be a token id, a list of token ids, or null",
});

/** Both the legacy `rope_scaling` and the newer `rope_parameters` object. */
const ropeSchema = z.looseObject(
  {
    rope_type: z.string({ error: "must be a string" }).optional(),
    type: z.string({ error: "must be a string" }).optional(),
    rope_theta: positiveNumber.optional(),
    factor: positiveNumber.optional(),
    low_freq_factor: positiveNumber.optional(),
    high_freq_factor: positiveNumber.optional(),
    original_max_position_embeddings: positiveInteger.optional(),
  },
  { error: "must be an object or null" },
);

type RopeJson = z.infer<typeof ropeSchema>;

const configSchema = z.looseObject({
  architectures: z.array(z.string(), { error: "must be a list of strings" }).optional(),
  model_type: z.string({ error: "must be a string" }).optional(),
  vocab_size: positiveInteger,
  hidden_size: positiveInteger,
  intermediate_size: positiveInteger,
  num_hidden_layers: positiveInteger,
  num_attention_heads: positiveInteger,
  num_key_value_heads: positiveInteger.nullish(),
  head_dim: positiveInteger.nullish(),
  hidden_act: z.string({ error: "must be a string" }).optional(),
  rms_norm_eps: positiveNumber.optional(),
  rope_theta: positiveNumber.optional(),
  rope_scaling: ropeSchema.nullish(),
  rope_parameters: ropeSchema.nullish(),
  max_position_embeddings: positiveInteger.optional(),
  tie_word_embeddings: boolean.optional(),
  attention_bias: boolean.optional(),
  mlp_bias: boolean.optional(),
  sliding_window: positiveInteger.nullish(),
  use_sliding_window: boolean.optional(),
  max_window_layers: nonNegativeInteger.optional(),
  layer_types: z.array(z.string(), { error: "must be a list of strings" }).nullish(),
  bos_token_id: nonNegativeInteger.nullish(),
  eos_token_id: tokenIds.nullish(),
  pad_token_id: nonNegativeInteger.nullish(),
});

type ConfigJson = z.infer<typeof configSchema>;

interface Biases {
  qkv: boolean;
  out: boolean;
  mlp: boolean;
}

/** Per-architecture defaults and module rules, as the transformers classes define them. */
interface ArchitectureRules {
  modelType: string;
  /** Value for an absent `num_key_value_heads`, or null to use `num_attention_heads`. */
  defaultNumKeyValueHeads: number | null;
  defaultMaxPositionEmbeddings: number;
  defaultBosTokenId: number | null;
  defaultEosTokenId: number | null;
  biases(json: ConfigJson): Biases;
  slidingWindow(json: ConfigJson): number | null;
}

/** Default of `sliding_window` in MistralConfig and Qwen2Config when the key is absent. */
const DEFAULT_SLIDING_WINDOW = 4096;

/** Default of Qwen2's `max_window_layers`: layers from this index on use the sliding window. */
const DEFAULT_QWEN2_MAX_WINDOW_LAYERS = 28;

const ARCHITECTURE_RULES: Record<Architecture, ArchitectureRules> = {
  LlamaForCausalLM: {
    modelType: "llama",
    defaultNumKeyValueHeads: null,
    defaultMaxPositionEmbeddings: 2048,
    defaultBosTokenId: 1,
    defaultEosTokenId: 2,
    biases: (json) => ({
      qkv: json.attention_bias ?? false,
      out: json.attention_bias ?? false,
      mlp: json.mlp_bias ?? false,
    }),
    slidingWindow: () => null,
  },
  MistralForCausalLM: {
    modelType: "mistral",
    defaultNumKeyValueHeads: 8,
    defaultMaxPositionEmbeddings: 4096 * 32,
    defaultBosTokenId: 1,
    defaultEosTokenId: 2,
    // MistralAttention and MistralMLP build every projection with bias=False, whatever the config.
    biases: () => ({ qkv: false, out: false, mlp: false }),
    slidingWindow: (json) =>
      json.sliding_window === undefined ? DEFAULT_SLIDING_WINDOW : json.sliding_window,
  },
  Qwen2ForCausalLM: {
    modelType: "qwen2",
    defaultNumKeyValueHeads: 32,
    defaultMaxPositionEmbeddings: 32768,
    defaultBosTokenId: null,
    defaultEosTokenId: null,
    // Qwen2Attention hard-codes bias=True on q/k/v and bias=False on o_proj.
    biases: () => ({ qkv: true, out: false, mlp: false }),
    slidingWindow: qwen2SlidingWindow,
  },
};

/**
 * Returns Qwen2's window when any layer uses it. Qwen2Config applies `sliding_window` only with
 * `use_sliding_window`, and then only to layers marked "sliding_attention" in `layer_types` or,
 * without that list, to layers from `max_window_layers` on.
 */
function qwen2SlidingWindow(json: ConfigJson): number | null {
  if (json.use_sliding_window !== true) {
    return null;
  }
  const window = json.sliding_window === undefined ? DEFAULT_SLIDING_WINDOW : json.sliding_window;
  if (window === null) {
    return null;
  }
  const anyLayerSliding =
    json.layer_types != null
      ? json.layer_types.includes("sliding_attention")
      : (json.max_window_layers ?? DEFAULT_QWEN2_MAX_WINDOW_LAYERS) < json.num_hidden_layers;
  return anyLayerSliding ? window : null;
}

// ---------------------------------------------------------------------------------------------

/**
 * Reads `config.json` from a checkpoint directory (or from the given file) and returns the
 * normalised ModelConfig. Throws MidpoError naming the file, key and value on invalid input.
 */
export function loadConfig(path: string): ModelConfig {
  const absolutePath = resolve(path);
  const isDirectory = statSync(absolutePath, { throwIfNoEntry: false })?.isDirectory() ?? false;
  const file = isDirectory ? join(absolutePath, "config.json") : absolutePath;

  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code ?? String(error);
    throw new MidpoError(
      code === "ENOENT"
        ? `Model config not found: ${file}. Pass a checkpoint directory that contains config.json.`
        : `Failed to read model config ${file} (${code}). Check that it is a readable file.`,
    );
  }

  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (error) {
    throw new MidpoError(
      `${file} is not valid JSON (${(error as Error).message}). ` +
        `Fix the file or download the checkpoint again.`,
    );
  }
  return parseConfig(json, file);
}

/**
 * Validates parsed `config.json` contents and returns the normalised ModelConfig. `source`
 * names the file in error messages.
 */
export function parseConfig(json: unknown, source: string): ModelConfig {
  const parsed = configSchema.safeParse(json);
  if (!parsed.success) {
    throw schemaError(json, source, parsed.error);
  }
  const config = parsed.data;

  const architecture = resolveArchitecture(config, source);
  const rules = ARCHITECTURE_RULES[architecture];
  const hiddenAct = config.hidden_act ?? "silu";
  if (hiddenAct !== "silu") {
    throw configError(source, "hidden_act", hiddenAct, `is not supported (only "silu" is)`);
  }

  const numKeyValueHeads = resolveNumKeyValueHeads(config, rules, source);
  const headDim = resolveHeadDim(config, source);
  const maxPositionEmbeddings =
    config.max_position_embeddings ?? rules.defaultMaxPositionEmbeddings;
  const biases = rules.biases(config);

  // rms_norm_eps 1e-6, rope_theta 10000 and untied embeddings are the defaults of all three
  // transformers config classes.
  return {
    architecture,
    vocabSize: config.vocab_size,
    hiddenSize: config.hidden_size,
    intermediateSize: config.intermediate_size,
    numHiddenLayers: config.num_hidden_layers,
    numAttentionHeads: config.num_attention_heads,
    numKeyValueHeads,
    headDim,
    rmsNormEps: config.rms_norm_eps ?? 1e-6,
    ropeTheta: config.rope_parameters?.rope_theta ?? config.rope_theta ?? 10000,
    ropeScaling: resolveRopeScaling(config, source),
    maxPositionEmbeddings,
    slidingWindow: rules.slidingWindow(config),
    tieWordEmbeddings: config.tie_word_embeddings ?? false,
    attentionQkvBias: biases.qkv,
    attentionOutBias: biases.out,
    mlpBias: biases.mlp,
    hiddenAct,
    bosTokenId: config.bos_token_id === undefined ? rules.defaultBosTokenId : config.bos_token_id,
    eosTokenIds: resolveEosTokenIds(config, rules),
    padTokenId: config.pad_token_id ?? null,
  };
}

function resolveArchitecture(config: ConfigJson, source: string): Architecture {
  const supported = SUPPORTED_ARCHITECTURES.join(", ");
  const listed = config.architectures?.[0];
  if (listed !== undefined) {
    const match = SUPPORTED_ARCHITECTURES.find((name) => name === listed);
    if (match === undefined && /For(SequenceClassification|Score)$/.test(listed)) {
      throw new MidpoError(
        `${source}: "architectures[0]" is ${JSON.stringify(listed)}, a score model, where a ` +
          `causal language model (${supported}) is needed. Pass the base or SFT model here; ` +
          `score models go to \`midpo score\`, --reward and --cost`,
      );
    }
    if (match === undefined) {
      throw configError(source, "architectures[0]", listed, `is not supported (${supported})`);
    }
    return match;
  }

  const modelType = config.model_type;
  const match = SUPPORTED_ARCHITECTURES.find(
    (name) => ARCHITECTURE_RULES[name].modelType === modelType,
  );
  if (match !== undefined) {
    return match;
  }
  const modelTypes = SUPPORTED_ARCHITECTURES.map((name) => ARCHITECTURE_RULES[name].modelType);
  if (modelType !== undefined) {
    throw configError(
      source,
      "model_type",
      modelType,
      `is not supported (${modelTypes.join(", ")}), and "architectures" is absent`,
    );
  }
  throw new MidpoError(
    `${source}: neither "architectures" nor "model_type" is set, so the model architecture is ` +
      `unknown. Add "architectures": ["<one of ${supported}>"] to the file.`,
  );
}

function resolveNumKeyValueHeads(
  config: ConfigJson,
  rules: ArchitectureRules,
  source: string,
): number {
  const heads = config.num_attention_heads;
  // transformers treats an explicit null as "same as num_attention_heads" in all three classes.
  const fromDefault = config.num_key_value_heads === undefined;
  const kvHeads = fromDefault
    ? (rules.defaultNumKeyValueHeads ?? heads)
    : (config.num_key_value_heads ?? heads);
  if (heads % kvHeads !== 0) {
    const origin = fromDefault ? ` (the ${rules.modelType} default, as the key is absent)` : "";
    throw configError(
      source,
      "num_key_value_heads",
      kvHeads,
      `must divide num_attention_heads ${heads}${origin}`,
    );
  }
  return kvHeads;
}

function resolveHeadDim(config: ConfigJson, source: string): number {
  const headDim = config.head_dim ?? config.hidden_size / config.num_attention_heads;
  if (config.head_dim == null && !Number.isInteger(headDim)) {
    throw configError(
      source,
      "hidden_size",
      config.hidden_size,
      `is not divisible by num_attention_heads ${config.num_attention_heads}; ` +
        `set head_dim explicitly`,
    );
  }
  if (headDim % 2 !== 0) {
    // RoPE rotates pairs of channels within each head.
    throw configError(source, "head_dim", headDim, "must be even for rotary position embeddings");
  }
  return headDim;
}

function resolveEosTokenIds(config: ConfigJson, rules: ArchitectureRules): number[] {
  const eos = config.eos_token_id === undefined ? rules.defaultEosTokenId : config.eos_token_id;
  if (eos === null) {
    return [];
  }
  return typeof eos === "number" ? [eos] : eos;
}

/**
 * Reads RoPE scaling from `rope_parameters` (transformers 5) or, when that is absent, from
 * `rope_scaling`. The type comes from `rope_type`, or from the older `type`.
 */
function resolveRopeScaling(config: ConfigJson, source: string): RopeScaling | null {
  const key = config.rope_parameters != null ? "rope_parameters" : "rope_scaling";
  const rope: RopeJson | null | undefined = config[key];
  if (rope == null) {
    return null;
  }

  const typeField = rope.rope_type === undefined && rope.type !== undefined ? "type" : "rope_type";
  const typeKey = `${key}.${typeField}`;
  const ropeType = rope[typeField];
  const supported = SUPPORTED_ROPE_TYPES.join(", ");
  if (ropeType === undefined) {
    if (key === "rope_parameters") {
      return null;
    }
    throw configError(source, typeKey, undefined, `must be one of ${supported}`);
  }
  if (ropeType === "default") {
    return null;
  }
  if (ropeType === "linear") {
    return { type: "linear", factor: requireRopeKey(rope, key, "factor", source) };
  }
  if (ropeType === "llama3") {
    return llama3Scaling(rope, key, source);
  }
  throw configError(source, typeKey, ropeType, `is not supported (${supported})`);
}

function llama3Scaling(rope: RopeJson, key: string, source: string): RopeScaling {
  const lowFreqFactor = requireRopeKey(rope, key, "low_freq_factor", source);
  const highFreqFactor = requireRopeKey(rope, key, "high_freq_factor", source);
  if (highFreqFactor <= lowFreqFactor) {
    // The llama3 ramp divides by high_freq_factor - low_freq_factor.
    throw configError(
      source,
      `${key}.high_freq_factor`,
      highFreqFactor,
      `must be greater than low_freq_factor ${lowFreqFactor}`,
    );
  }
  return {
    type: "llama3",
    factor: requireRopeKey(rope, key, "factor", source),
    lowFreqFactor,
    highFreqFactor,
    originalMaxPositionEmbeddings: requireRopeKey(
      rope,
      key,
      "original_max_position_embeddings",
      source,
    ),
  };
}

function requireRopeKey(
  rope: RopeJson,
  key: string,
  field: "factor" | "low_freq_factor" | "high_freq_factor" | "original_max_position_embeddings",
  source: string,
): number {
  const value = rope[field];
  if (value === undefined) {
    const ropeType = rope.rope_type ?? rope.type;
    throw configError(source, `${key}.${field}`, undefined, `is required for ${ropeType} scaling`);
  }
  return value;
}

// ---------------------------------------------------------------------------------------------
// Error messages: file, key, value, then what to do

function configError(source: string, key: string, value: unknown, problem: string): MidpoError {
  return new MidpoError(`${source}: ${describeKey(key, value)} ${problem}. ${FIX_HINT}`);
}

const FIX_HINT = "Fix the value in config.json or download the checkpoint again.";

function describeKey(key: string, value: unknown): string {
  if (value === undefined) {
    return `"${key}" is missing and`;
  }
  const text = JSON.stringify(value);
  const truncated = text.length > 80 ? `${text.slice(0, 77)}...` : text;
  return `"${key}" is ${truncated}, which`;
}

function schemaError(json: unknown, source: string, error: z.ZodError): MidpoError {
  if (typeof json !== "object" || json === null || Array.isArray(json)) {
    return new MidpoError(`${source}: expected a JSON object, got ${JSON.stringify(json)}.`);
  }
  const lines = error.issues.map((issue) => {
    const key = formatPath(issue.path);
    const value = valueAt(json, issue.path);
    const subject = value === undefined ? `"${key}" is missing and` : describeKey(key, value);
    return `  ${subject} ${issue.message}`;
  });
  return new MidpoError(`${source} is invalid:\n${lines.join("\n")}\n${FIX_HINT}`);
}

function formatPath(path: readonly PropertyKey[]): string {
  return path
    .map((part, i) =>
      typeof part === "number" ? `[${part}]` : `${i > 0 ? "." : ""}${String(part)}`,
    )
    .join("");
}

function valueAt(root: unknown, path: readonly PropertyKey[]): unknown {
  let value = root;
  for (const part of path) {
    if (typeof value !== "object" || value === null) {
      return undefined;
    }
    value = (value as Record<PropertyKey, unknown>)[part];
  }
  return value;
}
