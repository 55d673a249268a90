// LoRA adapters with the semantics and file format of Hugging Face PEFT, so that adapters
// trained here load in PEFT and adapters trained with PEFT load here.
//
// A LoRA module adds a low-rank update to a frozen linear layer W [out, in]:
//
//   y = W x + scale * B (A dropout(x)),   A [r, in], B [out, r]
//   scale = lora_alpha / r,  or lora_alpha / sqrt(r) with use_rslora (rank-stabilised LoRA)
//
// A PEFT adapter directory contains `adapter_config.json` and `adapter_model.safetensors`. The
// weights are named `base_model.model.<module path>.lora_A.weight` and `...lora_B.weight`, where
// the module path is the layer's name in the base model, e.g. `model.layers.3.mlp.down_proj`.
//
// Only plain LoRA on the decoder's linear layers is supported. Adapters that train biases, use
// DoRA, per-module rank or alpha patterns, or `modules_to_save` are rejected on load with an
// error that names the field.

import { randomBytes } from "node:crypto";
import {
  existsSync,
  mkdirSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { basename, dirname, join, resolve } from "node:path";

import { MidpoError } from "../errors.js";
import type { Rng } from "../generate/sampling.js";
import type { ModelConfig } from "../model/config.js";
import { weightSpecs } from "../model/llama.js";
import { SafetensorsFile, writeSafetensors } from "../model/safetensors.js";

export const ADAPTER_CONFIG_FILE = "adapter_config.json";
export const ADAPTER_WEIGHTS_FILE = "adapter_model.safetensors";

/** PEFT's `target_modules` value that selects every linear layer except the output layer. */
export const ALL_LINEAR = "all-linear";

// ---------------------------------------------------------------------------------------------
// Configuration

/** The LoRA settings of PEFT's `LoraConfig` that midpo implements, in camelCase. */
export interface LoraConfig {
  /** Rank of the update: A is [r, in] and B is [out, r]. */
  r: number;
  /** Numerator of the scale applied to B A x. */
  loraAlpha: number;
  /** Dropout probability on the input of A during training, in [0, 1). */
  loraDropout: number;
  /**
   * Modules to adapt, matched against module paths as PEFT matches them. A list entry matches a
   * path that equals it or ends with `.` + entry, so `down_proj` and `mlp.down_proj` both select
   * `model.layers.3.mlp.down_proj`. A string is a regular expression that must match the whole
   * path, except `"all-linear"`, which selects every decoder linear layer.
   */
  targetModules: readonly string[] | string;
  /** Scale by `loraAlpha / sqrt(r)` instead of `loraAlpha / r`. */
  useRslora: boolean;
  /** Hugging Face id or path of the base model, stored in `adapter_config.json`. */
  baseModelNameOrPath: string | null;
  /** Bias terms trained with the adapter: none, the PEFT default and the only value supported. */
  bias: "none";
}

/** Settings accepted by `createLoraConfig`. Absent ones take the defaults below. */
export interface LoraConfigOptions {
  r?: number;
  loraAlpha?: number;
  loraDropout?: number;
  targetModules?: readonly string[] | string;
  useRslora?: boolean;
  baseModelNameOrPath?: string | null;
  /** Only "none" is accepted. Typed as string so that unchecked input gets a clear error. */
  bias?: string;
}

/**
 * Defaults: the expert adapters of MidPO's reference setting (Qi et al., EMNLP 2025 Findings),
 * rank 16 and alpha 32 (scale 2) on `down_proj` without dropout. PEFT's own defaults differ
 * (r 8, alpha 8, and target modules chosen per architecture).
 */
const DEFAULT_LORA_OPTIONS = {
  r: 16,
  loraAlpha: 32,
  loraDropout: 0,
  targetModules: ["down_proj"],
  useRslora: false,
  baseModelNameOrPath: null,
  bias: "none",
} as const;

/** Fills in defaults and validates LoRA settings. Throws MidpoError on an invalid value. */
export function createLoraConfig(options: LoraConfigOptions = {}): LoraConfig {
  const merged = { ...DEFAULT_LORA_OPTIONS, ...options };
  const config: LoraConfig = {
    r: merged.r,
    loraAlpha: merged.loraAlpha,
    loraDropout: merged.loraDropout,
    targetModules: merged.targetModules,
    useRslora: merged.useRslora,
    baseModelNameOrPath: merged.baseModelNameOrPath,
    bias: merged.bias as "none",
  };
  validateLoraConfig(config, "LoRA config");
  return config;
}

/** Returns the factor that multiplies B A x. */
export function loraScale(config: LoraConfig): number {
  return config.useRslora ? config.loraAlpha / Math.sqrt(config.r) : config.loraAlpha / config.r;
}

/** Checks every setting. `where` starts each message (the file, or "LoRA config"). */
function validateLoraConfig(config: LoraConfig, where: string): void {
  validateScalarSettings(config, where);
  validateTargetModules(config.targetModules, where);
}

function validateScalarSettings(config: LoraConfig, where: string): void {
  const fail = (field: string, value: unknown, expected: string): MidpoError =>
    new MidpoError(`${where}: ${field} is ${JSON.stringify(value)}, expected ${expected}.`);

  if (!Number.isSafeInteger(config.r) || config.r <= 0) {
    throw fail("r", config.r, "a positive integer rank");
  }
  if (!(Number.isFinite(config.loraAlpha) && config.loraAlpha > 0)) {
    throw fail("lora_alpha", config.loraAlpha, "a positive number");
  }
  if (!(config.loraDropout >= 0 && config.loraDropout < 1)) {
    throw fail("lora_dropout", config.loraDropout, "a probability in [0, 1)");
  }
  if (config.bias !== "none") {
    throw fail(
      "bias",
      config.bias,
      `"none", because midpo does not train bias terms. Set bias to "none"`,
    );
  }
}

function validateTargetModules(targetModules: LoraConfig["targetModules"], where: string): void {
  if (typeof targetModules === "string") {
    compileTargetPattern(targetModules, where);
    return;
  }
  if (targetModules.length === 0) {
    throw new MidpoError(
      `${where}: target_modules is an empty list. Name at least one module, such as down_proj.`,
    );
  }
}

// ---------------------------------------------------------------------------------------------
// Modules

/** A linear layer of the base model that can carry a LoRA module. */
export interface LinearModule {
  /** Path in the base model without `.weight`, e.g. `model.layers.3.mlp.down_proj`. */
  name: string;
  inFeatures: number;
  outFeatures: number;
}

/** LoRA weights of one linear layer, row-major. */
export interface LoraModule {
  /** lora_A, [r, inFeatures]. */
  A: Float32Array;
  /** lora_B, [outFeatures, r]. */
  B: Float32Array;
  inFeatures: number;
  outFeatures: number;
}

export interface LoraAdapter {
  config: LoraConfig;
  /**
   * LoRA modules keyed by module path, in the base model's layer order (the order given to
   * `initLoraAdapter` or `loadLoraAdapter`, or numeric path order when loaded without one).
   */
  modules: Map<string, LoraModule>;
}

/**
 * Lists the decoder's linear layers (q/k/v/o_proj, gate/up/down_proj of every layer) with their
 * shapes. These are the layers the Llama graph lets a LoRA module replace. The embedding and
 * lm_head are not among them, as in PEFT's "all-linear".
 */
export function decoderLinearModules(config: ModelConfig): LinearModule[] {
  return weightSpecs(config)
    .filter(
      (spec) =>
        spec.name.startsWith("model.layers.") &&
        spec.name.endsWith(".weight") &&
        spec.shape.length === 2,
    )
    .map((spec) => ({
      name: spec.name.slice(0, -".weight".length),
      outFeatures: spec.shape[0],
      inFeatures: spec.shape[1],
    }));
}

/**
 * Returns the modules of `modelModules` that `targetModules` selects (see
 * `LoraConfig.targetModules`), in model order. Throws MidpoError when nothing matches, or when a
 * list entry matches no module. PEFT raises only in the first case, but an entry that matches
 * nothing is almost always a typo that would silently train fewer modules.
 */
export function targetModulesOf(
  modelModules: readonly LinearModule[],
  targetModules: LoraConfig["targetModules"],
): LinearModule[] {
  const selected = modelModules.filter((module) => matchesTarget(module.name, targetModules));
  const unmatched = unmatchedTargets(modelModules, targetModules, selected.length);
  if (unmatched.length > 0) {
    const available = [...new Set(modelModules.map((module) => shortName(module.name)))];
    throw new MidpoError(
      `LoRA target_modules ${JSON.stringify(unmatched)} match no linear layer of the model. ` +
        `Available module names: ${available.join(", ")}. Pick from those.`,
    );
  }
  return selected;
}

function unmatchedTargets(
  modelModules: readonly LinearModule[],
  targetModules: LoraConfig["targetModules"],
  selectedCount: number,
): string[] {
  if (typeof targetModules === "string") {
    return selectedCount === 0 ? [targetModules] : [];
  }
  return targetModules.filter(
    (entry) => !modelModules.some((module) => matchesTarget(module.name, [entry])),
  );
}

/** Tests a module path against `target_modules` with PEFT's `check_target_module_exists` rule. */
function matchesTarget(path: string, targetModules: LoraConfig["targetModules"]): boolean {
  if (targetModules === ALL_LINEAR) {
    return true;
  }
  if (typeof targetModules === "string") {
    return compileTargetPattern(targetModules, "LoRA config").test(path);
  }
  return targetModules.some((entry) => path === entry || path.endsWith(`.${entry}`));
}

/**
 * Compiles a `target_modules` string as PEFT uses it, with Python's `re.fullmatch`.
 * NOTE: the pattern runs as a JavaScript regular expression, which agrees with Python's on
 * ordinary patterns but rejects Python-only syntax such as `(?P<name>...)`.
 */
function compileTargetPattern(pattern: string, where: string): RegExp {
  try {
    return new RegExp(`^(?:${pattern})$`);
  } catch (error) {
    throw new MidpoError(
      `${where}: target_modules ${JSON.stringify(pattern)} is not a valid regular expression ` +
        `(${(error as Error).message}). Pass a list of module names such as ["down_proj"] instead.`,
    );
  }
}

function shortName(path: string): string {
  return path.slice(path.lastIndexOf(".") + 1);
}

// ---------------------------------------------------------------------------------------------
// Initialisation

/**
 * Creates an adapter for `modules` initialised as PEFT does with `init_lora_weights=True`: B is
 * zero, so the adapted model starts equal to the base model, and A is torch's
 * `kaiming_uniform_(a=sqrt(5))` on [r, in], which is uniform in (-1/sqrt(in), 1/sqrt(in)).
 * The values come from `rng`, module by module in the given order, so they are reproducible
 * per seed but differ from torch's generator.
 */
export function initLoraAdapter(
  config: LoraConfig,
  modules: readonly LinearModule[],
  rng: Rng,
): LoraAdapter {
  validateLoraConfig(config, "LoRA config");
  const adapterModules = new Map<string, LoraModule>();
  for (const module of modules) {
    // kaiming_uniform_ bound: gain * sqrt(3 / fan_in) with gain = sqrt(2 / (1 + a^2)) = sqrt(1/3).
    const bound = 1 / Math.sqrt(module.inFeatures);
    const A = new Float32Array(config.r * module.inFeatures);
    for (let i = 0; i < A.length; i++) {
      A[i] = (2 * rng.next() - 1) * bound;
    }
    const B = new Float32Array(module.outFeatures * config.r);
    adapterModules.set(module.name, {
      A,
      B,
      inFeatures: module.inFeatures,
      outFeatures: module.outFeatures,
    });
  }
  return { config, modules: adapterModules };
}

// ---------------------------------------------------------------------------------------------
// Saving

/** Returns the PEFT tensor name of a module's lora_A or lora_B weight. */
export function peftWeightName(modulePath: string, matrix: "A" | "B"): string {
  return `base_model.model.${modulePath}.lora_${matrix}.weight`;
}

/**
 * Writes `adapter_config.json` and `adapter_model.safetensors` (F32) into `dir`, as PEFT's
 * `save_pretrained` lays them out. A new directory is written under a temporary name and renamed
 * into place, so it appears complete or not at all. In an existing directory each file is
 * replaced atomically and other files are kept, but a crash between the two renames can leave
 * new weights beside the old config.
 */
export function saveLoraAdapter(dir: string, adapter: LoraAdapter): void {
  checkAdapterShapes(adapter);
  const target = resolve(dir);
  const configText = `${JSON.stringify(adapterConfigJson(adapter.config), null, 2)}\n`;

  if (existsSync(target)) {
    writeAdapterFiles(target, adapter, configText);
    return;
  }

  const staging = temporarySibling(target);
  try {
    mkdirSync(dirname(target), { recursive: true });
    mkdirSync(staging);
    writeAdapterFiles(staging, adapter, configText);
    renameSync(staging, target);
  } catch (error) {
    rmSync(staging, { recursive: true, force: true });
    throw writeError(target, error);
  }
}

function writeAdapterFiles(dir: string, adapter: LoraAdapter, configText: string): void {
  const tensors: Parameters<typeof writeSafetensors>[1] = {};
  for (const [name, module] of adapter.modules) {
    tensors[peftWeightName(name, "A")] = {
      dtype: "F32",
      shape: [adapter.config.r, module.inFeatures],
      data: module.A,
    };
    tensors[peftWeightName(name, "B")] = {
      dtype: "F32",
      shape: [module.outFeatures, adapter.config.r],
      data: module.B,
    };
  }
  writeSafetensors(join(dir, ADAPTER_WEIGHTS_FILE), tensors);

  // The config is written last, so in an existing directory a reader that gets the new config
  // also gets the new weights.
  const configPath = join(dir, ADAPTER_CONFIG_FILE);
  const temporary = temporarySibling(configPath);
  try {
    writeFileSync(temporary, configText, { flag: "wx" });
    renameSync(temporary, configPath);
  } catch (error) {
    rmSync(temporary, { force: true });
    throw writeError(configPath, error);
  }
}

/**
 * Returns the `adapter_config.json` contents. The keys are those PEFT's LoraConfig writes, with
 * PEFT's defaults for features midpo does not implement, in sorted order as PEFT writes them.
 * Keys that newer PEFT releases added (`lora_bias`, `exclude_modules`, ...) are left out, because
 * older releases pass every key to `LoraConfig(...)`, which raises on keys it does not know.
 */
function adapterConfigJson(config: LoraConfig): Record<string, unknown> {
  return {
    alpha_pattern: {},
    auto_mapping: null,
    base_model_name_or_path: config.baseModelNameOrPath,
    bias: "none",
    fan_in_fan_out: false,
    inference_mode: true,
    init_lora_weights: true,
    layer_replication: null,
    layers_pattern: null,
    layers_to_transform: null,
    loftq_config: {},
    lora_alpha: config.loraAlpha,
    lora_dropout: config.loraDropout,
    megatron_config: null,
    megatron_core: "megatron.core",
    modules_to_save: null,
    peft_type: "LORA",
    r: config.r,
    rank_pattern: {},
    revision: null,
    target_modules:
      typeof config.targetModules === "string" ? config.targetModules : [...config.targetModules],
    task_type: "CAUSAL_LM",
    use_dora: false,
    use_rslora: config.useRslora,
  };
}

/** Rejects an adapter whose arrays do not match its shapes, which is a bug in the caller. */
function checkAdapterShapes(adapter: LoraAdapter): void {
  const r = adapter.config.r;
  for (const [name, module] of adapter.modules) {
    if (module.A.length !== r * module.inFeatures) {
      throw new Error(
        `saveLoraAdapter: ${name}.lora_A has ${module.A.length} values, ` +
          `expected r * inFeatures = ${r} * ${module.inFeatures}`,
      );
    }
    if (module.B.length !== module.outFeatures * r) {
      throw new Error(
        `saveLoraAdapter: ${name}.lora_B has ${module.B.length} values, ` +
          `expected outFeatures * r = ${module.outFeatures} * ${r}`,
      );
    }
  }
}

function temporarySibling(path: string): string {
  const suffix = `${process.pid}.${randomBytes(4).toString("hex")}.tmp`;
  return join(dirname(path), `.${basename(path)}.${suffix}`);
}

function writeError(path: string, error: unknown): unknown {
  if (error instanceof MidpoError) {
    return error;
  }
  const code = (error as NodeJS.ErrnoException).code;
  if (code === undefined) {
    return error;
  }
  return new MidpoError(
    `Failed to write LoRA adapter ${path} (${code}). ` +
      `Check that the directory is writable and has free space.`,
  );
}

// ---------------------------------------------------------------------------------------------
// Loading

/**
 * Reads a PEFT LoRA adapter directory. With `expectedModules` (the base model's linear layers),
 * every adapted module must be one of them, with the same shape. Throws MidpoError naming the
 * file and value for missing files, unsupported PEFT features and mismatched shapes.
 */
export function loadLoraAdapter(
  dir: string,
  expectedModules?: readonly LinearModule[],
): LoraAdapter {
  const directory = resolve(dir);
  const configPath = requireAdapterFile(directory, ADAPTER_CONFIG_FILE);
  const weightsPath = requireAdapterFile(directory, ADAPTER_WEIGHTS_FILE);

  const json = readAdapterConfigJson(configPath);
  const { config, targetModulesGiven } = parseAdapterConfig(json, configPath);
  const file = SafetensorsFile.open(weightsPath);
  const names = groupLoraWeights(file);
  const modules = readLoraModules(file, names, config.r, expectedModules);

  if (targetModulesGiven) {
    checkModulesAreTargeted(configPath, config.targetModules, [...modules.keys()]);
  } else {
    // PEFT fills target_modules in before saving, so only hand-written configs omit it.
    config.targetModules = [...new Set([...modules.keys()].map(shortName))];
  }
  return { config, modules };
}

function requireAdapterFile(directory: string, name: string): string {
  const path = join(directory, name);
  if (statSync(path, { throwIfNoEntry: false })?.isFile()) {
    return path;
  }
  if (!existsSync(directory)) {
    throw new MidpoError(`LoRA adapter directory not found: ${directory}. Check the path.`);
  }
  const hasBin = name === ADAPTER_WEIGHTS_FILE && existsSync(join(directory, "adapter_model.bin"));
  const hint = hasBin
    ? ` It contains adapter_model.bin, a pickle that midpo does not read. Save the adapter ` +
      `again with PEFT's save_pretrained(safe_serialization=True).`
    : ` A PEFT adapter directory contains ${ADAPTER_CONFIG_FILE} and ${ADAPTER_WEIGHTS_FILE}.`;
  throw new MidpoError(`${name} not found in LoRA adapter directory ${directory}.${hint}`);
}

function readAdapterConfigJson(path: string): Record<string, unknown> {
  let json: unknown;
  try {
    json = JSON.parse(readFileSync(path, "utf8"));
  } catch (error) {
    throw new MidpoError(
      `Failed to read ${path}: ${(error as Error).message}. ` +
        `Fix the file or save the adapter again.`,
    );
  }
  if (typeof json !== "object" || json === null || Array.isArray(json)) {
    throw new MidpoError(`${path}: expected a JSON object, got ${describeValue(json)}.`);
  }
  return json as Record<string, unknown>;
}

/** A PEFT field that midpo accepts only at its PEFT default, and why. */
interface UnsupportedField {
  key: string;
  isDefault: (value: unknown) => boolean;
  reason: string;
}

const isEmpty = (value: unknown): boolean =>
  value === undefined ||
  value === null ||
  (Array.isArray(value) && value.length === 0) ||
  (typeof value === "object" && value !== null && Object.keys(value).length === 0);

const UNSUPPORTED_FIELDS: UnsupportedField[] = [
  {
    key: "use_dora",
    isDefault: (value) => value === undefined || value === false,
    reason: "DoRA adds magnitude vectors that midpo does not implement",
  },
  {
    key: "fan_in_fan_out",
    isDefault: (value) => value === undefined || value === false,
    reason: "it stores transposed weights for GPT-2 style Conv1D layers, not Llama linear layers",
  },
  {
    key: "bias",
    isDefault: (value) => value === undefined || value === null || value === "none",
    reason: "the adapter trains bias terms, which midpo does not apply",
  },
  {
    key: "lora_bias",
    isDefault: (value) => value === undefined || value === false,
    reason: "the adapter has a bias on lora_B, which midpo does not apply",
  },
  {
    key: "rank_pattern",
    isDefault: isEmpty,
    reason: "midpo needs one rank for every module",
  },
  {
    key: "alpha_pattern",
    isDefault: isEmpty,
    reason: "midpo needs one lora_alpha for every module",
  },
  {
    key: "modules_to_save",
    isDefault: isEmpty,
    reason:
      "the adapter contains fully trained copies of other modules, which midpo does not apply",
  },
  {
    key: "layer_replication",
    isDefault: isEmpty,
    reason: "it changes the base model's layer stack",
  },
];

function parseAdapterConfig(
  json: Record<string, unknown>,
  path: string,
): { config: LoraConfig; targetModulesGiven: boolean } {
  const peftType = json.peft_type;
  if (peftType !== "LORA") {
    throw new MidpoError(
      `${path}: peft_type is ${describeValue(peftType)}, but midpo reads only LoRA adapters ` +
        `(peft_type "LORA"). Pass the directory of a LoRA adapter.`,
    );
  }
  for (const field of UNSUPPORTED_FIELDS) {
    if (!field.isDefault(json[field.key])) {
      throw new MidpoError(
        `${path}: ${field.key} is ${describeValue(json[field.key])}, which midpo does not support ` +
          `because ${field.reason}. Use an adapter trained without ${field.key}.`,
      );
    }
  }

  // PEFT's LoraConfig defaults apply to absent keys: r 8, lora_alpha 8, lora_dropout 0.
  const config: LoraConfig = {
    r: numberField(json, "r", 8, path),
    loraAlpha: numberField(json, "lora_alpha", 8, path),
    loraDropout: numberField(json, "lora_dropout", 0, path),
    targetModules: targetModulesField(json.target_modules, path),
    useRslora: booleanField(json, "use_rslora", path),
    baseModelNameOrPath: stringOrNullField(json, "base_model_name_or_path", path),
    bias: "none",
  };
  validateScalarSettings(config, path);
  const targetModulesGiven = json.target_modules !== undefined && json.target_modules !== null;
  if (targetModulesGiven) {
    validateTargetModules(config.targetModules, path);
  }
  return { config, targetModulesGiven };
}

function numberField(
  json: Record<string, unknown>,
  key: string,
  fallback: number,
  path: string,
): number {
  const value = json[key] ?? fallback;
  if (typeof value !== "number") {
    throw new MidpoError(`${path}: ${key} is ${describeValue(value)}, expected a number.`);
  }
  return value;
}

function booleanField(json: Record<string, unknown>, key: string, path: string): boolean {
  const value = json[key] ?? false;
  if (typeof value !== "boolean") {
    throw new MidpoError(`${path}: ${key} is ${describeValue(value)}, expected true or false.`);
  }
  return value;
}

function stringOrNullField(
  json: Record<string, unknown>,
  key: string,
  path: string,
): string | null {
  const value = json[key] ?? null;
  if (value !== null && typeof value !== "string") {
    throw new MidpoError(`${path}: ${key} is ${describeValue(value)}, expected a string or null.`);
  }
  return value;
}

/** Returns the list or pattern, or an empty list when absent (filled in from the weights). */
function targetModulesField(value: unknown, path: string): readonly string[] | string {
  if (value === undefined || value === null) {
    return [];
  }
  const isStringList = Array.isArray(value) && value.every((entry) => typeof entry === "string");
  if (typeof value !== "string" && !isStringList) {
    throw new MidpoError(
      `${path}: target_modules is ${describeValue(value)}, expected a list of module names or a ` +
        `regular expression string.`,
    );
  }
  return value as readonly string[] | string;
}

/** Tensor names of each module's lora_A and lora_B, keyed by module path. */
type LoraWeightNames = Map<string, { A?: string; B?: string }>;

/**
 * Groups the tensors of an adapter file by module. PEFT strips the adapter name when it saves,
 * but files written by other tools may keep it (`...lora_A.default.weight`), so both are read.
 */
function groupLoraWeights(file: SafetensorsFile): LoraWeightNames {
  const pattern = /^base_model\.model\.(.+)\.lora_([AB])(?:\.[^.]+)?\.weight$/;
  const groups: LoraWeightNames = new Map();
  for (const name of file.names()) {
    const match = pattern.exec(name);
    if (match === null) {
      throw new MidpoError(
        `${file.path}: tensor "${name}" is not a LoRA weight of the form ` +
          `base_model.model.<module>.lora_A.weight or .lora_B.weight. The adapter uses a ` +
          `PEFT feature that midpo does not support (DoRA, embedding LoRA, modules_to_save).`,
      );
    }
    const module = match[1];
    const matrix = match[2] as "A" | "B";
    const group = groups.get(module) ?? {};
    if (group[matrix] !== undefined) {
      throw new MidpoError(
        `${file.path}: module ${module} has two lora_${matrix} tensors, "${group[matrix]}" and ` +
          `"${name}". The file contains more than one adapter. Save each adapter separately.`,
      );
    }
    group[matrix] = name;
    groups.set(module, group);
  }
  if (groups.size === 0) {
    throw new MidpoError(`${file.path} contains no LoRA weights. Save the adapter again.`);
  }
  return groups;
}

function readLoraModules(
  file: SafetensorsFile,
  groups: LoraWeightNames,
  r: number,
  expectedModules: readonly LinearModule[] | undefined,
): Map<string, LoraModule> {
  const expected = expectedModules && new Map(expectedModules.map((m) => [m.name, m]));
  const modules = new Map<string, LoraModule>();
  for (const [module, names] of groups) {
    const nameA = requireWeightName(file.path, module, names, "A");
    const nameB = requireWeightName(file.path, module, names, "B");
    const [inFeatures, outFeatures] = loraShape(file, module, nameA, nameB, r);
    if (expected !== undefined) {
      checkAgainstModel(file.path, module, inFeatures, outFeatures, expected);
    }
    modules.set(module, {
      A: file.readFloat32(nameA),
      B: file.readFloat32(nameB),
      inFeatures,
      outFeatures,
    });
  }
  return sortByModelOrder(modules, expectedModules);
}

function requireWeightName(
  path: string,
  module: string,
  names: { A?: string; B?: string },
  matrix: "A" | "B",
): string {
  const name = names[matrix];
  if (name === undefined) {
    throw new MidpoError(
      `${path}: module ${module} has no lora_${matrix} weight ` +
        `(${peftWeightName(module, matrix)}). The file is incomplete. Save the adapter again.`,
    );
  }
  return name;
}

/** Checks that A is [r, in] and B is [out, r], and returns [in, out]. */
function loraShape(
  file: SafetensorsFile,
  module: string,
  nameA: string,
  nameB: string,
  r: number,
): [number, number] {
  const shapeA = file.info(nameA).shape;
  const shapeB = file.info(nameB).shape;
  if (shapeA.length !== 2 || shapeB.length !== 2 || shapeA[0] !== r || shapeB[1] !== r) {
    throw new MidpoError(
      `${file.path}: module ${module} has lora_A [${shapeA.join(", ")}] and lora_B ` +
        `[${shapeB.join(", ")}], expected [r, in] and [out, r] with r = ${r} from ` +
        `${ADAPTER_CONFIG_FILE}. The config and the weights come from different adapters.`,
    );
  }
  return [shapeA[1], shapeB[0]];
}

function checkAgainstModel(
  path: string,
  module: string,
  inFeatures: number,
  outFeatures: number,
  expected: Map<string, LinearModule>,
): void {
  const linear = expected.get(module);
  if (linear === undefined) {
    throw new MidpoError(
      `${path}: the adapter has weights for module ${module}, which is not a linear layer of ` +
        `the base model. The adapter was trained on another model architecture; load it with ` +
        `the base model named in its ${ADAPTER_CONFIG_FILE}.`,
    );
  }
  if (linear.inFeatures !== inFeatures || linear.outFeatures !== outFeatures) {
    throw new MidpoError(
      `${path}: module ${module} adapts a [${outFeatures}, ${inFeatures}] layer, but the base ` +
        `model's layer is [${linear.outFeatures}, ${linear.inFeatures}]. The adapter was ` +
        `trained on another model size; load it with the base model named in its ` +
        `${ADAPTER_CONFIG_FILE}.`,
    );
  }
}

function checkModulesAreTargeted(
  path: string,
  targetModules: LoraConfig["targetModules"],
  modules: string[],
): void {
  const stray = modules.find((module) => !matchesTarget(module, targetModules));
  if (stray !== undefined) {
    throw new MidpoError(
      `${path}: target_modules ${describeValue(targetModules)} does not select module ${stray}, ` +
        `which has weights in ${ADAPTER_WEIGHTS_FILE}. The config and the weights come from ` +
        `different adapters.`,
    );
  }
}

/**
 * Orders modules as the base model lists them. Without the model's list, orders paths with
 * numbers compared by value, so layer 2 comes before layer 10.
 */
function sortByModelOrder(
  modules: Map<string, LoraModule>,
  modelModules: readonly LinearModule[] | undefined,
): Map<string, LoraModule> {
  if (modelModules === undefined) {
    const paths = [...modules.keys()].sort((a, b) => a.localeCompare(b, "en", { numeric: true }));
    return new Map(paths.map((path) => [path, modules.get(path) as LoraModule]));
  }
  const sorted = new Map<string, LoraModule>();
  for (const { name } of modelModules) {
    const module = modules.get(name);
    if (module !== undefined) {
      sorted.set(name, module);
    }
  }
  return sorted;
}

function describeValue(value: unknown): string {
  const text = value === undefined ? "missing" : JSON.stringify(value);
  return text.length > 80 ? `${text.slice(0, 77)}...` : text;
}
