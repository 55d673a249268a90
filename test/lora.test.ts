import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";

import { MidpoError } from "../src/errors.js";
import { Rng } from "../src/generate/sampling.js";
import { loadConfig } from "../src/model/load-config.js";
import { SafetensorsFile } from "../src/model/safetensors.js";
import {
  ADAPTER_CONFIG_FILE,
  ADAPTER_WEIGHTS_FILE,
  createLoraConfig,
  decoderLinearModules,
  initLoraAdapter,
  loadLoraAdapter,
  loraScale,
  peftWeightName,
  saveLoraAdapter,
  targetModulesOf,
  type LinearModule,
} from "../src/train/lora.js";

let dir: string;

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), "midpo-lora-"));
});

afterEach(() => {
  rmSync(dir, { recursive: true, force: true });
});

/** hidden 64, intermediate 96, 2 layers, 8 query heads on 2 KV heads of width 8. */
const modelModules = decoderLinearModules(
  loadConfig(new URL("./fixtures/tiny/llama-gqa", import.meta.url).pathname),
);

const DOWN_PROJ_0 = "model.layers.0.mlp.down_proj";

/**
 * Returns adapter_config.json contents for r 4, alpha 8 on down_proj in the layout of recent PEFT
 * releases, with keys that midpo does not write (eva_config, exclude_modules, lora_bias).
 */
function peftConfigJson(overrides: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    alpha_pattern: {},
    auto_mapping: null,
    base_model_name_or_path: "tiny/llama-gqa",
    bias: "none",
    eva_config: null,
    exclude_modules: null,
    fan_in_fan_out: false,
    inference_mode: true,
    init_lora_weights: true,
    layer_replication: null,
    layers_pattern: null,
    layers_to_transform: null,
    loftq_config: {},
    lora_alpha: 8,
    lora_bias: false,
    lora_dropout: 0.05,
    megatron_config: null,
    megatron_core: "megatron.core",
    modules_to_save: null,
    peft_type: "LORA",
    r: 4,
    rank_pattern: {},
    revision: null,
    target_modules: ["down_proj"],
    task_type: "CAUSAL_LM",
    use_dora: false,
    use_rslora: false,
    ...overrides,
  };
}

interface HandTensor {
  name: string;
  dtype: "F32" | "F16";
  shape: number[];
  /** Float values for F32, IEEE half-precision bit patterns for F16. */
  values: number[];
}

/**
 * Encodes a safetensors file byte by byte (u64 little-endian header length, JSON header, data),
 * without the project's writer.
 */
function encodeSafetensors(tensors: HandTensor[]): Uint8Array {
  const header: Record<string, unknown> = { __metadata__: { format: "pt" } };
  const chunks: Uint8Array[] = [];
  let offset = 0;
  for (const tensor of tensors) {
    const data =
      tensor.dtype === "F32"
        ? new Uint8Array(Float32Array.from(tensor.values).buffer)
        : new Uint8Array(Uint16Array.from(tensor.values).buffer);
    header[tensor.name] = {
      dtype: tensor.dtype,
      shape: tensor.shape,
      data_offsets: [offset, offset + data.length],
    };
    chunks.push(data);
    offset += data.length;
  }

  const json = new TextEncoder().encode(JSON.stringify(header));
  const bytes = new Uint8Array(8 + json.length + offset);
  new DataView(bytes.buffer).setBigUint64(0, BigInt(json.length), true);
  bytes.set(json, 8);
  let position = 8 + json.length;
  for (const chunk of chunks) {
    bytes.set(chunk, position);
    position += chunk.length;
  }
  return bytes;
}

function writeHandAdapter(
  config: Record<string, unknown> | string,
  tensors: HandTensor[],
  adapterDir = join(dir, "adapter"),
): string {
  mkdirSync(adapterDir, { recursive: true });
  const text = typeof config === "string" ? config : JSON.stringify(config, null, 2);
  writeFileSync(join(adapterDir, ADAPTER_CONFIG_FILE), text);
  writeFileSync(join(adapterDir, ADAPTER_WEIGHTS_FILE), encodeSafetensors(tensors));
  return adapterDir;
}

/** Values 0, 1, 2, ... times `step`, for recognisable tensors. */
function ramp(count: number, step: number): number[] {
  return Array.from({ length: count }, (_, i) => i * step);
}

/** Returns lora_A [r, 96] and lora_B [64, r] of layer 0's down_proj with PEFT's key names. */
function downProjTensors(r = 4, keyInfix = ""): HandTensor[] {
  const prefix = `base_model.model.${DOWN_PROJ_0}`;
  return [
    {
      name: `${prefix}.lora_A${keyInfix}.weight`,
      dtype: "F32",
      shape: [r, 96],
      values: ramp(r * 96, 0.01),
    },
    {
      name: `${prefix}.lora_B${keyInfix}.weight`,
      dtype: "F32",
      shape: [64, r],
      values: ramp(64 * r, -0.5),
    },
  ];
}

function expectLoadError(adapterDir: string, pattern: RegExp, modules = modelModules): void {
  let error: unknown;
  try {
    loadLoraAdapter(adapterDir, modules);
  } catch (caught) {
    error = caught;
  }
  expect(error).toBeInstanceOf(MidpoError);
  expect((error as Error).message).toMatch(pattern);
}

describe("LoRA config", () => {
  it("defaults to the MidPO expert setting", () => {
    const config = createLoraConfig();
    expect(config.r).toBe(16);
    expect(config.loraAlpha).toBe(32);
    expect(config.loraDropout).toBe(0);
    expect(config.targetModules).toEqual(["down_proj"]);
    expect(config.useRslora).toBe(false);
    expect(config.bias).toBe("none");
    expect(config.baseModelNameOrPath).toBeNull();
  });

  it("loraScale is alpha / r", () => {
    expect(loraScale(createLoraConfig())).toBe(2);
  });

  it("loraScale with rsLoRA is alpha / sqrt(r)", () => {
    expect(loraScale(createLoraConfig({ useRslora: true }))).toBe(8);
  });

  it("rejects invalid settings", () => {
    expect(() => createLoraConfig({ bias: "all" })).toThrow(MidpoError);
    expect(() => createLoraConfig({ bias: "lora_only" })).toThrow(/bias is "lora_only"/);
    expect(() => createLoraConfig({ r: 0 })).toThrow(/r is 0, expected a positive integer/);
    expect(() => createLoraConfig({ r: 2.5 })).toThrow(/r is 2.5/);
    expect(() => createLoraConfig({ loraAlpha: -1 })).toThrow(/lora_alpha is -1/);
    expect(() => createLoraConfig({ loraDropout: 1 })).toThrow(/lora_dropout is 1/);
    expect(() => createLoraConfig({ targetModules: [] })).toThrow(/empty list/);
    expect(() => createLoraConfig({ targetModules: "(" })).toThrow(/not a valid regular/);
  });
});

describe("decoderLinearModules", () => {
  it("lists seven projections per layer", () => {
    expect(modelModules).toHaveLength(14);
    expect(modelModules.map((module) => module.name).slice(0, 7)).toEqual([
      "model.layers.0.self_attn.q_proj",
      "model.layers.0.self_attn.k_proj",
      "model.layers.0.self_attn.v_proj",
      "model.layers.0.self_attn.o_proj",
      "model.layers.0.mlp.gate_proj",
      "model.layers.0.mlp.up_proj",
      "model.layers.0.mlp.down_proj",
    ]);
  });

  it("gives in and out features", () => {
    const byName = new Map(modelModules.map((module) => [module.name, module]));
    expect(byName.get("model.layers.1.self_attn.k_proj")).toEqual({
      name: "model.layers.1.self_attn.k_proj",
      inFeatures: 64,
      outFeatures: 16,
    });
    expect(byName.get(DOWN_PROJ_0)?.inFeatures).toBe(96);
    expect(byName.get(DOWN_PROJ_0)?.outFeatures).toBe(64);
  });
});

describe("targetModulesOf", () => {
  const names = (modules: LinearModule[]): string[] => modules.map((module) => module.name);

  it("matches the last component", () => {
    expect(names(targetModulesOf(modelModules, ["down_proj"]))).toEqual([
      "model.layers.0.mlp.down_proj",
      "model.layers.1.mlp.down_proj",
    ]);
  });

  it("matches dotted suffixes and full paths", () => {
    const selected = names(
      targetModulesOf(modelModules, ["mlp.down_proj", "model.layers.1.self_attn.q_proj"]),
    );
    expect(selected).toEqual([
      "model.layers.0.mlp.down_proj",
      "model.layers.1.self_attn.q_proj",
      "model.layers.1.mlp.down_proj",
    ]);
  });

  it("does not match partial components", () => {
    expect(() => targetModulesOf(modelModules, ["proj"])).toThrow(MidpoError);
  });

  it("matches a regex against the whole path", () => {
    const selected = names(targetModulesOf(modelModules, String.raw`model\.layers\.1\..*_proj`));
    expect(selected).toHaveLength(7);
    expect(selected.every((name) => name.startsWith("model.layers.1."))).toBe(true);
    expect(() => targetModulesOf(modelModules, "down_proj")).toThrow(/match no linear layer/);
  });

  it("selects everything for all-linear", () => {
    expect(targetModulesOf(modelModules, "all-linear")).toHaveLength(14);
  });

  it("names unmatched entries and available names", () => {
    expect(() => targetModulesOf(modelModules, ["down_proj", "dwn_proj"])).toThrow(
      /\["dwn_proj"\] match no linear layer/,
    );
    expect(() => targetModulesOf(modelModules, ["c_attn"])).toThrow(
      /Available module names: q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj/,
    );
  });
});

describe("initLoraAdapter", () => {
  const wide: LinearModule = {
    name: "model.layers.0.mlp.down_proj",
    inFeatures: 1024,
    outFeatures: 8,
  };

  it("sets B to exactly zero", () => {
    const adapter = initLoraAdapter(createLoraConfig(), [wide], new Rng(1));
    const module = adapter.modules.get(wide.name);
    expect(module?.B.length).toBe(8 * 16);
    expect(module?.B.every((value) => value === 0)).toBe(true);
  });

  it("draws A uniformly within 1/sqrt(in)", () => {
    const adapter = initLoraAdapter(createLoraConfig(), [wide], new Rng(7));
    const A = adapter.modules.get(wide.name)?.A ?? new Float32Array();
    const bound = 1 / Math.sqrt(1024);
    expect(A.length).toBe(16 * 1024);

    let maxAbs = 0;
    let sum = 0;
    let sumOfSquares = 0;
    const bins = new Array<number>(8).fill(0);
    for (const value of A) {
      maxAbs = Math.max(maxAbs, Math.abs(value));
      sum += value;
      sumOfSquares += value * value;
      bins[Math.min(7, Math.floor(((value + bound) / (2 * bound)) * 8))] += 1;
    }
    expect(maxAbs).toBeLessThanOrEqual(bound);
    expect(maxAbs).toBeGreaterThan(0.99 * bound);

    // Uniform(-b, b): mean 0 and variance b^2 / 3. With 16384 draws the standard error of the
    // mean is about 0.0045 b, and each of the 8 bins expects 2048 +- 42.
    expect(Math.abs(sum / A.length)).toBeLessThan(0.02 * bound);
    expect(sumOfSquares / A.length / ((bound * bound) / 3)).toBeCloseTo(1, 1);
    for (const count of bins) {
      expect(Math.abs(count - 2048)).toBeLessThan(200);
    }
  });

  it("is reproducible per seed", () => {
    const first = initLoraAdapter(createLoraConfig(), modelModules, new Rng(3));
    const second = initLoraAdapter(createLoraConfig(), modelModules, new Rng(3));
    const third = initLoraAdapter(createLoraConfig(), modelModules, new Rng(4));
    expect(second.modules.get(DOWN_PROJ_0)?.A).toEqual(first.modules.get(DOWN_PROJ_0)?.A);
    expect(third.modules.get(DOWN_PROJ_0)?.A).not.toEqual(first.modules.get(DOWN_PROJ_0)?.A);
  });

  it("keeps the given module order", () => {
    const targets = targetModulesOf(modelModules, ["q_proj", "down_proj"]);
    const adapter = initLoraAdapter(createLoraConfig(), targets, new Rng(1));
    expect([...adapter.modules.keys()]).toEqual(targets.map((module) => module.name));
  });
});

describe("saveLoraAdapter and loadLoraAdapter", () => {
  function trainedAdapter() {
    const config = createLoraConfig({
      r: 4,
      loraAlpha: 16,
      loraDropout: 0.1,
      targetModules: ["q_proj", "down_proj"],
      useRslora: true,
      baseModelNameOrPath: "tiny/llama-gqa",
    });
    const targets = targetModulesOf(modelModules, config.targetModules);
    const adapter = initLoraAdapter(config, targets, new Rng(11));
    // Give B non-zero values, as after training, so the round trip checks both matrices.
    const rng = new Rng(12);
    for (const module of adapter.modules.values()) {
      module.B.forEach((_, i) => (module.B[i] = rng.next() - 0.5));
    }
    return adapter;
  }

  it("round trip keeps config and weights", () => {
    const adapter = trainedAdapter();
    const out = join(dir, "nested", "expert");
    saveLoraAdapter(out, adapter);
    const loaded = loadLoraAdapter(out, modelModules);

    expect(loaded.config).toEqual(adapter.config);
    expect([...loaded.modules.keys()]).toEqual([...adapter.modules.keys()]);
    for (const [name, module] of adapter.modules) {
      const copy = loaded.modules.get(name);
      expect(copy?.A, name).toEqual(module.A);
      expect(copy?.B, name).toEqual(module.B);
      expect(copy?.inFeatures, name).toBe(module.inFeatures);
      expect(copy?.outFeatures, name).toBe(module.outFeatures);
    }
  });

  it("writes PEFT's config fields", () => {
    const out = join(dir, "expert");
    saveLoraAdapter(out, trainedAdapter());
    const json = JSON.parse(readFileSync(join(out, ADAPTER_CONFIG_FILE), "utf8"));

    expect(json.peft_type).toBe("LORA");
    expect(json.task_type).toBe("CAUSAL_LM");
    expect(json.r).toBe(4);
    expect(json.lora_alpha).toBe(16);
    expect(json.lora_dropout).toBe(0.1);
    expect(json.target_modules).toEqual(["q_proj", "down_proj"]);
    expect(json.use_rslora).toBe(true);
    expect(json.bias).toBe("none");
    expect(json.fan_in_fan_out).toBe(false);
    expect(json.init_lora_weights).toBe(true);
    expect(json.base_model_name_or_path).toBe("tiny/llama-gqa");
    expect(json.modules_to_save).toBeNull();
    expect(json.inference_mode).toBe(true);
    expect(json.revision).toBeNull();
    expect(json.use_dora).toBe(false);
    expect(json.rank_pattern).toEqual({});
    expect(json.alpha_pattern).toEqual({});
    expect(Object.keys(json)).toEqual([...Object.keys(json)].sort());
  });

  it("writes PEFT's tensor names as F32", () => {
    const out = join(dir, "expert");
    saveLoraAdapter(out, trainedAdapter());
    const file = SafetensorsFile.open(join(out, ADAPTER_WEIGHTS_FILE));

    expect(file.names()).toHaveLength(8);
    const nameA = "base_model.model.model.layers.0.mlp.down_proj.lora_A.weight";
    const nameB = "base_model.model.model.layers.0.mlp.down_proj.lora_B.weight";
    expect(peftWeightName(DOWN_PROJ_0, "A")).toBe(nameA);
    expect(file.info(nameA).dtype).toBe("F32");
    expect(file.info(nameA).shape).toEqual([4, 96]);
    expect(file.info(nameB).shape).toEqual([64, 4]);
    expect(file.metadata).toEqual({ format: "pt" });
  });

  it("leaves no temporary files", () => {
    saveLoraAdapter(join(dir, "expert"), trainedAdapter());
    expect(readdirSync(dir)).toEqual(["expert"]);
    expect(readdirSync(join(dir, "expert")).sort()).toEqual([
      ADAPTER_CONFIG_FILE,
      ADAPTER_WEIGHTS_FILE,
    ]);
  });

  it("overwrites an existing directory in place", () => {
    const out = join(dir, "checkpoint");
    mkdirSync(out);
    writeFileSync(join(out, "trainer_state.json"), "{}");
    saveLoraAdapter(out, initLoraAdapter(createLoraConfig({ r: 2 }), modelModules, new Rng(1)));
    saveLoraAdapter(out, trainedAdapter());

    expect(existsSync(join(out, "trainer_state.json"))).toBe(true);
    expect(loadLoraAdapter(out, modelModules).config.r).toBe(4);
    expect(readdirSync(out).sort()).toEqual([
      ADAPTER_CONFIG_FILE,
      ADAPTER_WEIGHTS_FILE,
      "trainer_state.json",
    ]);
  });

  it("rejects an adapter with inconsistent arrays", () => {
    const adapter = trainedAdapter();
    adapter.modules.get(DOWN_PROJ_0)!.A = new Float32Array(3);
    expect(() => saveLoraAdapter(join(dir, "bad"), adapter)).toThrow(/lora_A has 3 values/);
    expect(existsSync(join(dir, "bad"))).toBe(false);
  });
});

describe("loadLoraAdapter with PEFT files", () => {
  it("reads a hand-written PEFT adapter", () => {
    const adapterDir = writeHandAdapter(peftConfigJson(), downProjTensors());
    const adapter = loadLoraAdapter(adapterDir, modelModules);

    expect(adapter.config.r).toBe(4);
    expect(adapter.config.loraAlpha).toBe(8);
    expect(adapter.config.loraDropout).toBe(0.05);
    expect(adapter.config.baseModelNameOrPath).toBe("tiny/llama-gqa");
    expect(loraScale(adapter.config)).toBe(2);
    expect([...adapter.modules.keys()]).toEqual([DOWN_PROJ_0]);

    const module = adapter.modules.get(DOWN_PROJ_0);
    expect(module?.inFeatures).toBe(96);
    expect(module?.outFeatures).toBe(64);
    expect(Array.from(module?.A ?? [])).toEqual(Array.from(Float32Array.from(ramp(384, 0.01))));
    expect(Array.from(module?.B ?? [])).toEqual(ramp(256, -0.5));
  });

  it("accepts adapter names and F16 weights", () => {
    // 0x3c00 = 1.0, 0x3800 = 0.5, 0xc000 = -2.0 in IEEE half precision.
    const prefix = "base_model.model.model.layers.1.self_attn.k_proj";
    const tensors: HandTensor[] = [
      {
        name: `${prefix}.lora_A.default.weight`,
        dtype: "F16",
        shape: [1, 64],
        values: new Array(64).fill(0x3c00),
      },
      {
        name: `${prefix}.lora_B.default.weight`,
        dtype: "F16",
        shape: [16, 1],
        values: [0x3800, 0xc000, ...new Array(14).fill(0)],
      },
    ];
    const adapterDir = writeHandAdapter(
      peftConfigJson({ r: 1, target_modules: ["k_proj"] }),
      tensors,
    );
    const module = loadLoraAdapter(adapterDir, modelModules).modules.get(
      "model.layers.1.self_attn.k_proj",
    );

    expect(module?.A.every((value) => value === 1)).toBe(true);
    expect(module?.B[0]).toBe(0.5);
    expect(module?.B[1]).toBe(-2);
  });

  it("fills in absent target_modules", () => {
    const config = peftConfigJson();
    delete config.target_modules;
    const adapter = loadLoraAdapter(writeHandAdapter(config, downProjTensors()), modelModules);
    expect(adapter.config.targetModules).toEqual(["down_proj"]);
  });

  it("accepts a regex target_modules", () => {
    const config = peftConfigJson({ target_modules: String.raw`.*\.mlp\.(down|up)_proj` });
    const adapter = loadLoraAdapter(writeHandAdapter(config, downProjTensors()), modelModules);
    expect(adapter.config.targetModules).toBe(String.raw`.*\.mlp\.(down|up)_proj`);
  });

  it("orders layers numerically without a model", () => {
    const tensors = [10, 2].flatMap((layer): HandTensor[] => {
      const prefix = `base_model.model.model.layers.${layer}.mlp.down_proj`;
      return [
        { name: `${prefix}.lora_A.weight`, dtype: "F32", shape: [4, 3], values: ramp(12, 1) },
        { name: `${prefix}.lora_B.weight`, dtype: "F32", shape: [5, 4], values: ramp(20, 1) },
      ];
    });
    const adapter = loadLoraAdapter(writeHandAdapter(peftConfigJson(), tensors));
    expect([...adapter.modules.keys()]).toEqual([
      "model.layers.2.mlp.down_proj",
      "model.layers.10.mlp.down_proj",
    ]);
    expect(adapter.modules.get("model.layers.2.mlp.down_proj")?.inFeatures).toBe(3);
    expect(adapter.modules.get("model.layers.2.mlp.down_proj")?.outFeatures).toBe(5);
  });
});

describe("loadLoraAdapter errors", () => {
  it("names a missing directory", () => {
    expectLoadError(join(dir, "absent"), /LoRA adapter directory not found: .*absent/);
  });

  it("names a missing config file", () => {
    const adapterDir = writeHandAdapter(peftConfigJson(), downProjTensors());
    rmSync(join(adapterDir, ADAPTER_CONFIG_FILE));
    expectLoadError(adapterDir, /adapter_config\.json not found in LoRA adapter directory/);
  });

  it("points from adapter_model.bin to safetensors", () => {
    const adapterDir = writeHandAdapter(peftConfigJson(), downProjTensors());
    rmSync(join(adapterDir, ADAPTER_WEIGHTS_FILE));
    expectLoadError(adapterDir, /adapter_model\.safetensors not found/);
    writeFileSync(join(adapterDir, "adapter_model.bin"), "pickle");
    expectLoadError(adapterDir, /safe_serialization=True/);
  });

  it("rejects invalid JSON", () => {
    expectLoadError(
      writeHandAdapter("{ r: 4", downProjTensors()),
      /Failed to read .*adapter_config/,
    );
    expectLoadError(writeHandAdapter("[1, 2]", downProjTensors()), /expected a JSON object/);
  });

  it("rejects other PEFT methods", () => {
    const config = peftConfigJson({ peft_type: "PREFIX_TUNING" });
    expectLoadError(writeHandAdapter(config, downProjTensors()), /peft_type is "PREFIX_TUNING"/);
  });

  const unsupported: [string, unknown, RegExp][] = [
    ["use_dora", true, /use_dora is true.*DoRA/],
    ["bias", "all", /bias is "all".*bias terms/],
    ["fan_in_fan_out", true, /fan_in_fan_out is true.*Conv1D/],
    ["lora_bias", true, /lora_bias is true/],
    ["rank_pattern", { "model.layers.0.mlp.down_proj": 8 }, /rank_pattern is .*one rank/],
    ["alpha_pattern", { down_proj: 4 }, /alpha_pattern is .*one lora_alpha/],
    ["modules_to_save", ["lm_head"], /modules_to_save is \["lm_head"\]/],
    ["layer_replication", [[0, 2]], /layer_replication is/],
  ];
  for (const [key, value, pattern] of unsupported) {
    it(`rejects ${key}`, () => {
      const config = peftConfigJson({ [key]: value });
      expectLoadError(writeHandAdapter(config, downProjTensors()), pattern);
    });
  }

  it("rejects mistyped fields", () => {
    const cases: [Record<string, unknown>, RegExp][] = [
      [{ r: "4" }, /r is "4", expected a number/],
      [{ r: 0 }, /r is 0, expected a positive integer/],
      [{ use_rslora: "yes" }, /use_rslora is "yes", expected true or false/],
      [{ target_modules: [1] }, /target_modules is \[1\]/],
      [{ base_model_name_or_path: 3 }, /base_model_name_or_path is 3/],
    ];
    for (const [override, pattern] of cases) {
      const adapterDir = writeHandAdapter(peftConfigJson(override), downProjTensors());
      expectLoadError(adapterDir, pattern);
    }
  });

  it("rejects a module missing from the model", () => {
    const tensors = downProjTensors().map((tensor) => ({
      ...tensor,
      name: tensor.name.replace("layers.0", "layers.5"),
    }));
    expectLoadError(
      writeHandAdapter(peftConfigJson(), tensors),
      /model\.layers\.5\.mlp\.down_proj, which is not a linear layer of the base model/,
    );
  });

  it("rejects a shape unlike the model's", () => {
    const wider = modelModules.map((module) =>
      module.name === DOWN_PROJ_0 ? { ...module, inFeatures: 128 } : module,
    );
    expectLoadError(
      writeHandAdapter(peftConfigJson(), downProjTensors()),
      /adapts a \[64, 96\] layer, but the base model's layer is \[64, 128\]/,
      wider,
    );
  });

  it("rejects a rank unlike the config's", () => {
    const adapterDir = writeHandAdapter(peftConfigJson({ r: 8 }), downProjTensors(4));
    expectLoadError(adapterDir, /lora_A \[4, 96\].*with r = 8/);
  });

  it("rejects a missing lora_B", () => {
    const adapterDir = writeHandAdapter(peftConfigJson(), downProjTensors().slice(0, 1));
    expectLoadError(adapterDir, /has no lora_B weight/);
  });

  it("rejects DoRA and other tensors", () => {
    const tensors: HandTensor[] = [
      ...downProjTensors(),
      {
        name: `base_model.model.${DOWN_PROJ_0}.lora_magnitude_vector`,
        dtype: "F32",
        shape: [64],
        values: new Array(64).fill(1),
      },
    ];
    expectLoadError(
      writeHandAdapter(peftConfigJson(), tensors),
      /lora_magnitude_vector" is not a LoRA weight/,
    );
  });

  it("rejects two adapters in one file", () => {
    const tensors = [...downProjTensors(4), ...downProjTensors(4, ".other")];
    expectLoadError(writeHandAdapter(peftConfigJson(), tensors), /has two lora_A tensors/);
  });

  it("rejects weights outside target_modules", () => {
    const config = peftConfigJson({ target_modules: ["q_proj"] });
    expectLoadError(
      writeHandAdapter(config, downProjTensors()),
      /does not select module model\.layers\.0\.mlp\.down_proj/,
    );
  });

  it("rejects a file without LoRA weights", () => {
    expectLoadError(writeHandAdapter(peftConfigJson(), []), /contains no LoRA weights/);
  });
});
