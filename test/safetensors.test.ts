import {
  closeSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
  writeSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";

import { MidpoError } from "../src/errors.js";
import {
  SafetensorsFile,
  writeSafetensors,
  type SafetensorsTensor,
} from "../src/model/safetensors.js";
import {
  SAFETENSORS_INDEX_FILE,
  SAFETENSORS_SINGLE_FILE,
  SafetensorsCheckpoint,
} from "../src/model/safetensors-checkpoint.js";

let dir: string;

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), "midpo-safetensors-"));
});

afterEach(() => {
  rmSync(dir, { recursive: true, force: true });
});

/** Encodes a safetensors file by hand: u64 little-endian header length, JSON, then `data`. */
function encodeByHand(header: unknown, data: number[], headerLength?: bigint): Uint8Array {
  const json = new TextEncoder().encode(JSON.stringify(header));
  const bytes = new Uint8Array(8 + json.length + data.length);
  new DataView(bytes.buffer).setBigUint64(0, headerLength ?? BigInt(json.length), true);
  bytes.set(json, 8);
  bytes.set(data, 8 + json.length);
  return bytes;
}

/** Splits 16-bit values into little-endian byte pairs. */
function u16Bytes(values: number[]): number[] {
  return values.flatMap((value) => [value & 0xff, value >> 8]);
}

function u32Bytes(values: number[]): number[] {
  return values.flatMap((value) => [0, 8, 16, 24].map((shift) => (value >>> shift) & 0xff));
}

function writeBytes(name: string, bytes: Uint8Array | string): string {
  const path = join(dir, name);
  writeFileSync(path, bytes);
  return path;
}

/** Runs `action` and returns the MidpoError it throws. Anything else fails the test. */
function midpoErrorOf(action: () => unknown): MidpoError {
  try {
    action();
  } catch (error) {
    expect(error).toBeInstanceOf(MidpoError);
    return error as MidpoError;
  }
  throw new Error("expected a MidpoError, but nothing was thrown");
}

const oneTensorHeader = (entry: unknown) => ({ weight: entry });

describe("SafetensorsFile reading a hand-encoded file", () => {
  const f16Bits = [0x3c00, 0xc000, 0x0001, 0x03ff, 0x7c00, 0xfbff];
  const bf16Bits = [0x3f80, 0xc040, 0x0001, 0xff80];
  const f32Bits = [0x3f800000, 0x3dcccccd];
  const i64Bytes = [5, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff];
  const data = [...u16Bytes(f16Bits), ...u16Bytes(bf16Bits), ...u32Bytes(f32Bits), ...i64Bytes];
  const header = {
    __metadata__: { format: "pt", note: "hand-written" },
    half: { dtype: "F16", shape: [2, 3], data_offsets: [0, 12] },
    brain: { dtype: "BF16", shape: [4], data_offsets: [12, 20] },
    single: { dtype: "F32", shape: [2], data_offsets: [20, 28] },
    ids: { dtype: "I64", shape: [2], data_offsets: [28, 44] },
  };

  function openHandFile(): { path: string; file: SafetensorsFile } {
    const path = writeBytes("hand.safetensors", encodeByHand(header, data));
    return { path, file: SafetensorsFile.open(path) };
  }

  it("lists names, dtypes, shapes and metadata", () => {
    const { file } = openHandFile();
    expect(file.names()).toEqual(["half", "brain", "single", "ids"]);
    expect(file.info("half").dtype).toBe("F16");
    expect(file.info("half").shape).toEqual([2, 3]);
    expect(file.info("ids").dtype).toBe("I64");
    expect(file.metadata).toEqual({ format: "pt", note: "hand-written" });
  });

  it("reports absolute byte offsets", () => {
    const { path, file } = openHandFile();
    const dataStart = 8 + JSON.stringify(header).length;
    const brain = file.info("brain");
    expect(file.headerLength).toBe(JSON.stringify(header).length);
    expect(brain.byteOffset).toBe(dataStart + 12);
    expect(brain.byteLength).toBe(8);
    expect(brain.file).toBe(path);
    const raw = readFileSync(path).subarray(brain.byteOffset, brain.byteOffset + 2);
    expect([...raw]).toEqual([0x80, 0x3f]);
  });

  it("widens F16 including subnormals and infinities", () => {
    const { file } = openHandFile();
    const values = file.readFloat32("half");
    expect(values).toBeInstanceOf(Float32Array);
    expect([...values]).toEqual([1, -2, 2 ** -24, 1023 * 2 ** -24, Infinity, -65504]);
  });

  it("widens BF16 including subnormals", () => {
    const { file } = openHandFile();
    expect([...file.readFloat32("brain")]).toEqual([1, -3, 2 ** -133, -Infinity]);
  });

  it("reads F32 unchanged", () => {
    const { file } = openHandFile();
    const values = file.readFloat32("single", [2]);
    expect(values[0]).toBe(1);
    expect(values[1]).toBe(Math.fround(0.1));
  });

  it("reads I64 as BigInt64Array", () => {
    const { file } = openHandFile();
    const tensor = file.readTensor("ids");
    expect(tensor.dtype).toBe("I64");
    expect(tensor.data).toBeInstanceOf(BigInt64Array);
    expect([...(tensor.data as BigInt64Array)]).toEqual([5n, -1n]);
  });

  it("reads F16 raw bits with readTensor", () => {
    const { file } = openHandFile();
    const tensor = file.readTensor("half");
    expect(tensor.data).toBeInstanceOf(Uint16Array);
    expect([...tensor.data]).toEqual(f16Bits);
  });

  it("rejects readFloat32 of an integer tensor", () => {
    const { path, file } = openHandFile();
    const error = midpoErrorOf(() => file.readFloat32("ids"));
    expect(error.message).toContain(path);
    expect(error.message).toContain('"ids"');
    expect(error.message).toContain("I64");
  });
});

describe("writeSafetensors round trip", () => {
  const tensors: Record<string, SafetensorsTensor> = {
    "model.embed_tokens.weight": {
      dtype: "F32",
      shape: [2, 3],
      data: Float32Array.of(0.5, -1, 3.25, 1e-30, -0, 7),
    },
    "model.norm.weight": { dtype: "BF16", shape: [3], data: Float32Array.of(1, -2.5, 0.1) },
    "lm_head.weight": { dtype: "F16", shape: [2], data: Uint16Array.of(0x3c00, 0xc000) },
    "rounded.f16": { dtype: "F16", shape: [2], data: Float32Array.of(1 / 3, 70000) },
    position_ids: { dtype: "I64", shape: [1, 2], data: BigInt64Array.of(3n, -4n) },
    counts: { dtype: "I32", shape: [2], data: Int32Array.of(-7, 2 ** 31 - 1) },
    mask: { dtype: "U8", shape: [3], data: Uint8Array.of(0, 1, 255) },
    scalar: { dtype: "F64", shape: [], data: Float64Array.of(Math.PI) },
    empty: { dtype: "F32", shape: [0, 4], data: new Float32Array(0) },
  };

  function writeAndOpen(metadata?: Record<string, string>): SafetensorsFile {
    const path = join(dir, "out.safetensors");
    writeSafetensors(path, tensors, metadata);
    return SafetensorsFile.open(path);
  }

  it("reads back every tensor", () => {
    const file = writeAndOpen();
    expect(file.names().sort()).toEqual(Object.keys(tensors).sort());
    expect([...file.readFloat32("model.embed_tokens.weight", [2, 3])]).toEqual([
      0.5,
      -1,
      3.25,
      Math.fround(1e-30),
      -0,
      7,
    ]);
    expect([...file.readFloat32("lm_head.weight")]).toEqual([1, -2]);
    expect([...(file.readTensor("position_ids").data as BigInt64Array)]).toEqual([3n, -4n]);
    expect([...file.readTensor("counts").data]).toEqual([-7, 2 ** 31 - 1]);
    expect([...file.readTensor("mask").data]).toEqual([0, 1, 255]);
    expect(file.readTensor("scalar").shape).toEqual([]);
    expect([...file.readTensor("scalar").data]).toEqual([Math.PI]);
    expect(file.info("empty").shape).toEqual([0, 4]);
    expect(file.readFloat32("empty").length).toBe(0);
  });

  it("rounds Float32Array input for F16 and BF16", () => {
    const file = writeAndOpen();
    expect([...file.readTensor("model.norm.weight").data]).toEqual([0x3f80, 0xc020, 0x3dcd]);
    expect([...file.readTensor("rounded.f16").data]).toEqual([0x3555, 0x7c00]);
  });

  it("adds format pt to metadata", () => {
    expect(writeAndOpen().metadata).toEqual({ format: "pt" });
    expect(writeAndOpen({ base_model: "tiny" }).metadata).toEqual({
      format: "pt",
      base_model: "tiny",
    });
    expect(writeAndOpen({ format: "np" }).metadata).toEqual({ format: "np" });
  });

  it("aligns the data section and each tensor", () => {
    const file = writeAndOpen();
    expect(file.headerLength % 8).toBe(0);
    for (const name of file.names()) {
      const info = file.info(name);
      const elementBytes =
        info.byteLength /
        Math.max(
          1,
          info.shape.reduce((a, b) => a * b, 1),
        );
      expect((info.byteOffset - 8 - file.headerLength) % (elementBytes || 1)).toBe(0);
    }
  });

  it("replaces an existing file and leaves no temporary file", () => {
    const path = join(dir, "out.safetensors");
    writeFileSync(path, "old contents");
    writeSafetensors(path, { x: { dtype: "F32", shape: [1], data: Float32Array.of(2) } });
    expect(readdirSync(dir)).toEqual(["out.safetensors"]);
    expect([...SafetensorsFile.open(path).readFloat32("x")]).toEqual([2]);
  });

  it("rejects a missing output directory without leftovers", () => {
    const path = join(dir, "missing", "out.safetensors");
    const error = midpoErrorOf(() =>
      writeSafetensors(path, { x: { dtype: "F32", shape: [1], data: Float32Array.of(2) } }),
    );
    expect(error.message).toContain(path);
    expect(error.message).toContain("ENOENT");
    expect(readdirSync(dir)).toEqual([]);
  });

  it("rejects data that does not match dtype or shape", () => {
    const path = join(dir, "bad.safetensors");
    expect(() =>
      writeSafetensors(path, { x: { dtype: "F32", shape: [3], data: Float32Array.of(1, 2) } }),
    ).toThrow(/"x" has 2 elements, but shape \[3\] needs 3/);
    expect(() =>
      writeSafetensors(path, { x: { dtype: "I32", shape: [1], data: Float32Array.of(1) } }),
    ).toThrow(/"x" of dtype I32 needs a Int32Array, got a Float32Array/);
    expect(readdirSync(dir)).toEqual([]);
  });
});

describe("SafetensorsFile above 2 GiB", () => {
  it("reads a tensor stored past the 2 GiB mark", () => {
    // A sparse file: only the header and the last tensor occupy disk blocks.
    const gap = 2 ** 31 + 4096;
    const header = {
      padding: { dtype: "U8", shape: [gap], data_offsets: [0, gap] },
      tail: { dtype: "BF16", shape: [2], data_offsets: [gap, gap + 4] },
    };
    const path = writeBytes("large.safetensors", encodeByHand(header, []));
    const dataStart = 8 + JSON.stringify(header).length;
    const fd = openSync(path, "r+");
    writeSync(fd, Uint8Array.of(...u16Bytes([0x3f80, 0x4040])), 0, 4, dataStart + gap);
    closeSync(fd);

    const file = SafetensorsFile.open(path);
    expect(file.info("tail").byteOffset).toBe(dataStart + gap);
    expect([...file.readFloat32("tail", [2])]).toEqual([1, 3]);
  });
});

describe("SafetensorsFile errors", () => {
  it("names a missing file", () => {
    const path = join(dir, "absent.safetensors");
    const error = midpoErrorOf(() => SafetensorsFile.open(path));
    expect(error.message).toContain(path);
    expect(error.message).toContain("not found");
  });

  it("rejects a directory", () => {
    const error = midpoErrorOf(() => SafetensorsFile.open(dir));
    expect(error.message).toContain(dir);
    expect(error.message).toContain("not a regular file");
  });

  it("rejects a file shorter than 8 bytes", () => {
    const path = writeBytes("short.safetensors", Uint8Array.of(1, 2, 3, 4, 5));
    const error = midpoErrorOf(() => SafetensorsFile.open(path));
    expect(error.message).toContain(path);
    expect(error.message).toContain("5 bytes");
  });

  it("rejects a header length beyond the file", () => {
    const path = writeBytes("long.safetensors", encodeByHand({}, [], 1000n));
    const error = midpoErrorOf(() => SafetensorsFile.open(path));
    expect(error.message).toContain(path);
    expect(error.message).toContain("header length 1000");
    expect(error.message).toContain("2 bytes");
  });

  it("rejects a header that is not JSON", () => {
    const bytes = new Uint8Array(8 + 5);
    new DataView(bytes.buffer).setBigUint64(0, 5n, true);
    bytes.set(new TextEncoder().encode("{nope"), 8);
    const path = writeBytes("garbage.safetensors", bytes);
    const error = midpoErrorOf(() => SafetensorsFile.open(path));
    expect(error.message).toContain(path);
    expect(error.message).toContain("not valid UTF-8 JSON");
  });

  it("rejects a header that is not an object", () => {
    const path = writeBytes("array.safetensors", encodeByHand([1, 2], []));
    const error = midpoErrorOf(() => SafetensorsFile.open(path));
    expect(error.message).toContain(path);
    expect(error.message).toContain("[1,2]");
  });

  it("rejects non-string metadata", () => {
    const path = writeBytes("meta.safetensors", encodeByHand({ __metadata__: { step: 3 } }, []));
    const error = midpoErrorOf(() => SafetensorsFile.open(path));
    expect(error.message).toContain(path);
    expect(error.message).toContain('{"step":3}');
  });

  const badEntries: [string, unknown, string][] = [
    ["unknown dtype", { dtype: "Q4", shape: [1], data_offsets: [0, 1] }, '"Q4"'],
    ["missing dtype", { shape: [1], data_offsets: [0, 4] }, "dtype nothing"],
    ["negative dimension", { dtype: "F32", shape: [-1], data_offsets: [0, 4] }, "[-1]"],
    ["fractional dimension", { dtype: "F32", shape: [1.5], data_offsets: [0, 4] }, "[1.5]"],
    ["reversed offsets", { dtype: "F32", shape: [1], data_offsets: [4, 0] }, "[4,0]"],
    ["one offset", { dtype: "F32", shape: [1], data_offsets: [4] }, "[4]"],
    ["size mismatch", { dtype: "F32", shape: [2], data_offsets: [0, 4] }, "needs 8"],
    ["entry not an object", "F32", '"F32"'],
  ];
  for (const [label, entry, value] of badEntries) {
    it(`rejects tensor entry with ${label}`, () => {
      const path = writeBytes("entry.safetensors", encodeByHand(oneTensorHeader(entry), [0, 0]));
      const error = midpoErrorOf(() => SafetensorsFile.open(path));
      expect(error.message).toContain(path);
      expect(error.message).toContain('"weight"');
      expect(error.message).toContain(value);
    });
  }

  it("rejects data offsets past the end as truncated", () => {
    const entry = { dtype: "F32", shape: [4], data_offsets: [0, 16] };
    const path = writeBytes("cut.safetensors", encodeByHand(oneTensorHeader(entry), [0, 0, 0]));
    const error = midpoErrorOf(() => SafetensorsFile.open(path));
    expect(error.message).toContain(path);
    expect(error.message).toContain("truncated");
    expect(error.message).toContain("byte 16");
    expect(error.message).toContain("only 3 bytes");
  });

  it("suggests close names for a missing tensor", () => {
    const path = join(dir, "model.safetensors");
    const layer = (name: string): [string, SafetensorsTensor] => [
      name,
      { dtype: "F32", shape: [1], data: Float32Array.of(0) },
    ];
    writeSafetensors(
      path,
      Object.fromEntries([
        layer("model.layers.0.self_attn.q_proj.weight"),
        layer("model.layers.0.self_attn.k_proj.weight"),
        layer("model.layers.0.mlp.up_proj.weight"),
        layer("model.norm.weight"),
        layer("lm_head.weight"),
      ]),
    );
    const error = midpoErrorOf(() =>
      SafetensorsFile.open(path).info("model.layers.0.self_attn.v_proj.weight"),
    );
    expect(error.message).toContain(path);
    expect(error.message).toContain('"model.layers.0.self_attn.v_proj.weight" not found');
    expect(error.message).toContain(
      'Closest names: "model.layers.0.self_attn.k_proj.weight", ' +
        '"model.layers.0.self_attn.q_proj.weight", "model.layers.0.mlp.up_proj.weight"',
    );
  });

  it("rejects a shape mismatch", () => {
    const path = join(dir, "model.safetensors");
    writeSafetensors(path, { w: { dtype: "F32", shape: [2, 3], data: new Float32Array(6) } });
    const error = midpoErrorOf(() => SafetensorsFile.open(path).readFloat32("w", [3, 2]));
    expect(error.message).toContain(path);
    expect(error.message).toContain("shape [2, 3], expected [3, 2]");
  });
});

describe("SafetensorsCheckpoint", () => {
  const f32 = (...values: number[]): SafetensorsTensor => ({
    dtype: "F32",
    shape: [values.length],
    data: Float32Array.from(values),
  });

  function writeShardedCheckpoint(weightMap?: Record<string, string>): void {
    writeSafetensors(join(dir, "model-00001-of-00002.safetensors"), {
      "model.embed_tokens.weight": f32(1, 2),
      "model.norm.weight": f32(3),
    });
    writeSafetensors(join(dir, "model-00002-of-00002.safetensors"), {
      "lm_head.weight": { dtype: "BF16", shape: [2], data: Uint16Array.of(0x4000, 0xbf80) },
    });
    const index = {
      metadata: { total_size: 16 },
      weight_map: weightMap ?? {
        "model.embed_tokens.weight": "model-00001-of-00002.safetensors",
        "model.norm.weight": "model-00001-of-00002.safetensors",
        "lm_head.weight": "model-00002-of-00002.safetensors",
      },
    };
    writeFileSync(join(dir, SAFETENSORS_INDEX_FILE), JSON.stringify(index));
  }

  it("opens a single-file checkpoint directory", () => {
    writeSafetensors(join(dir, SAFETENSORS_SINGLE_FILE), { a: f32(4, 5) });
    const checkpoint = SafetensorsCheckpoint.open(dir);
    expect(checkpoint.directory).toBe(dir);
    expect(checkpoint.names()).toEqual(["a"]);
    expect([...checkpoint.readFloat32("a", [2])]).toEqual([4, 5]);
  });

  it("opens a single file given by path", () => {
    const path = join(dir, "adapter_model.safetensors");
    writeSafetensors(path, { "base_model.model.lora_A.weight": f32(1) });
    const checkpoint = SafetensorsCheckpoint.open(path);
    expect(checkpoint.names()).toEqual(["base_model.model.lora_A.weight"]);
    expect(checkpoint.info("base_model.model.lora_A.weight").file).toBe(path);
  });

  it("reads tensors from every shard", () => {
    writeShardedCheckpoint();
    const checkpoint = SafetensorsCheckpoint.open(dir);
    expect(checkpoint.names()).toEqual([
      "model.embed_tokens.weight",
      "model.norm.weight",
      "lm_head.weight",
    ]);
    expect(checkpoint.files.length).toBe(2);
    expect([...checkpoint.readFloat32("model.embed_tokens.weight", [2])]).toEqual([1, 2]);
    expect([...checkpoint.readFloat32("lm_head.weight", [2])]).toEqual([2, -1]);
    expect(checkpoint.info("lm_head.weight").file).toBe(
      join(dir, "model-00002-of-00002.safetensors"),
    );
    expect(checkpoint.readTensor("model.norm.weight").dtype).toBe("F32");
  });

  it("prefers model.safetensors over the index", () => {
    writeShardedCheckpoint();
    writeSafetensors(join(dir, SAFETENSORS_SINGLE_FILE), { only: f32(9) });
    expect(SafetensorsCheckpoint.open(dir).names()).toEqual(["only"]);
  });

  it("names a shard missing from disk", () => {
    writeShardedCheckpoint({
      "model.norm.weight": "model-00001-of-00002.safetensors",
      "lm_head.weight": "model-00003-of-00003.safetensors",
    });
    const error = midpoErrorOf(() => SafetensorsCheckpoint.open(dir));
    expect(error.message).toContain(join(dir, SAFETENSORS_INDEX_FILE));
    expect(error.message).toContain('"model-00003-of-00003.safetensors"');
    expect(error.message).toContain('"lm_head.weight"');
  });

  it("rejects an index entry its shard lacks", () => {
    writeShardedCheckpoint({ "lm_head.weight": "model-00001-of-00002.safetensors" });
    const error = midpoErrorOf(() => SafetensorsCheckpoint.open(dir));
    expect(error.message).toContain(join(dir, "model-00001-of-00002.safetensors"));
    expect(error.message).toContain('"lm_head.weight"');
  });

  it("rejects an index that is not JSON", () => {
    writeBytes(SAFETENSORS_INDEX_FILE, "{ weight_map");
    const error = midpoErrorOf(() => SafetensorsCheckpoint.open(dir));
    expect(error.message).toContain(join(dir, SAFETENSORS_INDEX_FILE));
  });

  it("rejects an index without a weight_map", () => {
    writeBytes(SAFETENSORS_INDEX_FILE, JSON.stringify({ weight_map: ["a"] }));
    const error = midpoErrorOf(() => SafetensorsCheckpoint.open(dir));
    expect(error.message).toContain(join(dir, SAFETENSORS_INDEX_FILE));
    expect(error.message).toContain('["a"]');
  });

  it("reports a directory without weights", () => {
    writeFileSync(join(dir, "adapter_model.safetensors"), "");
    const error = midpoErrorOf(() => SafetensorsCheckpoint.open(dir));
    expect(error.message).toContain(dir);
    expect(error.message).toContain(SAFETENSORS_SINGLE_FILE);
    expect(error.message).toContain("adapter_model.safetensors");
  });

  it("reports a missing directory", () => {
    const missing = join(dir, "nowhere");
    const error = midpoErrorOf(() => SafetensorsCheckpoint.open(missing));
    expect(error.message).toContain(missing);
    expect(error.message).toContain("not found");
  });

  it("suggests close names for a missing tensor", () => {
    writeShardedCheckpoint();
    const error = midpoErrorOf(() => SafetensorsCheckpoint.open(dir).info("model.norm.weights"));
    expect(error.message).toContain(dir);
    expect(error.message).toContain('"model.norm.weights" not found');
    expect(error.message).toContain('Closest names: "model.norm.weight"');
  });

  it("rejects a shape mismatch in a shard", () => {
    writeShardedCheckpoint();
    const checkpoint = SafetensorsCheckpoint.open(dir);
    const error = midpoErrorOf(() => checkpoint.readFloat32("lm_head.weight", [1, 2]));
    expect(error.message).toContain("model-00002-of-00002.safetensors");
    expect(error.message).toContain("shape [2], expected [1, 2]");
  });

  it("reads shards from a subdirectory", () => {
    mkdirSync(join(dir, "weights"));
    writeSafetensors(join(dir, "weights", "part.safetensors"), { a: f32(1) });
    writeBytes(
      SAFETENSORS_INDEX_FILE,
      JSON.stringify({ weight_map: { a: "weights/part.safetensors" } }),
    );
    expect([...SafetensorsCheckpoint.open(dir).readFloat32("a")]).toEqual([1]);
  });
});
