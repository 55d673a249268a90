// Reading and writing safetensors files and sharded Hugging Face checkpoints.
//
// Layout of a file (github.com/huggingface/safetensors, README "Format"): an unsigned 64-bit
// little-endian header length N, N bytes of UTF-8 JSON mapping each tensor name to
// `{ dtype, shape, data_offsets: [begin, end] }` plus an optional `__metadata__` map of strings,
// then the data section. Offsets count from the start of the data section; data is row-major
// and little-endian.
//
// Checkpoint directories and shard indexes are handled in safetensors-checkpoint.ts.
//
// Checkpoints reach tens of GB and `fs.readFileSync` fails above 2 GiB, so a reader parses the
// header once and then reads each tensor's bytes at its file position. The I/O is synchronous
// because weights are loaded before any other work starts.

import {
  closeSync,
  fstatSync,
  fsyncSync,
  openSync,
  readSync,
  renameSync,
  unlinkSync,
  writeSync,
} from "node:fs";
import { endianness } from "node:os";
import { basename, dirname, join, resolve } from "node:path";
import { randomBytes } from "node:crypto";

import { MidpoError } from "../errors.js";
import {
  bfloat16BitsToFloat32,
  float16BitsToFloat32,
  float32ToBfloat16Bits,
  float32ToFloat16Bits,
} from "./float16.js";

/** Bytes per element of each dtype name that the safetensors format defines. */
const DTYPE_BYTES = {
  F64: 8,
  F32: 4,
  F16: 2,
  BF16: 2,
  I64: 8,
  U64: 8,
  I32: 4,
  U32: 4,
  I16: 2,
  U16: 2,
  I8: 1,
  U8: 1,
  BOOL: 1,
  F8_E4M3: 1,
  F8_E5M2: 1,
} as const;

export type SafetensorsDtype = keyof typeof DTYPE_BYTES;

const DTYPE_NAMES = Object.keys(DTYPE_BYTES) as SafetensorsDtype[];

/** Header size limit of the safetensors reference implementation, which this reader shares. */
const MAX_HEADER_BYTES = 100_000_000;

/** Largest single read or write. Node 20's fs.readSync and fs.writeSync reject 2 GiB or more. */
const MAX_IO_CHUNK_BYTES = 1 << 30;

/** Location of one tensor: its file, dtype, shape and byte range. */
export interface TensorInfo {
  name: string;
  /** Absolute path of the file that contains the tensor. */
  file: string;
  dtype: SafetensorsDtype;
  shape: number[];
  /**
   * Absolute position of the first byte in the file (8 + header length + `data_offsets[0]`),
   * the `offset` that an ONNX external-data initializer needs.
   */
  byteOffset: number;
  byteLength: number;
}

/**
 * Element storage for each dtype: F16 and BF16 as Uint16Array bit patterns, BOOL and the FP8
 * formats as Uint8Array bytes.
 */
export type TensorArray =
  | Float64Array
  | Float32Array
  | Uint16Array
  | BigInt64Array
  | BigUint64Array
  | Int32Array
  | Uint32Array
  | Int16Array
  | Int8Array
  | Uint8Array;

type TensorArrayConstructor = { new (buffer: ArrayBuffer): TensorArray; readonly name: string };

const ARRAY_TYPES: Record<SafetensorsDtype, TensorArrayConstructor> = {
  F64: Float64Array,
  F32: Float32Array,
  F16: Uint16Array,
  BF16: Uint16Array,
  I64: BigInt64Array,
  U64: BigUint64Array,
  I32: Int32Array,
  U32: Uint32Array,
  I16: Int16Array,
  U16: Uint16Array,
  I8: Int8Array,
  U8: Uint8Array,
  BOOL: Uint8Array,
  F8_E4M3: Uint8Array,
  F8_E5M2: Uint8Array,
};

/** A tensor with its data, as read from or written to a safetensors file. */
export interface SafetensorsTensor {
  dtype: SafetensorsDtype;
  shape: readonly number[];
  /**
   * Elements in row-major order, in the array type that `readTensor` returns for the dtype.
   * For F16 and BF16 the writer also accepts a Float32Array and rounds it to nearest even.
   */
  data: TensorArray;
}

// ---------------------------------------------------------------------------------------------
// Reading one file

/** One safetensors file with its parsed header. */
export class SafetensorsFile {
  private constructor(
    /** Absolute path. */
    readonly path: string,
    readonly headerLength: number,
    /** The `__metadata__` map, or null when the header has none. */
    readonly metadata: Record<string, string> | null,
    private readonly tensors: Map<string, TensorInfo>,
  ) {}

  /** Reads and validates the header of `path`. Tensor data is read later, one tensor at a time. */
  static open(path: string): SafetensorsFile {
    assertLittleEndianHost();
    const absolutePath = resolve(path);
    const fd = openForReading(absolutePath);
    try {
      return SafetensorsFile.parseHeader(fd, absolutePath);
    } finally {
      closeSync(fd);
    }
  }

  private static parseHeader(fd: number, path: string): SafetensorsFile {
    const stats = fstatSync(fd);
    if (!stats.isFile()) {
      throw new MidpoError(`${path} is not a regular file. Pass the path of a .safetensors file.`);
    }
    const fileSize = stats.size;
    if (fileSize < 8) {
      throw new MidpoError(
        `${path} is ${fileSize} bytes long, too short for the 8-byte header length that starts ` +
          `every safetensors file. Download or write the file again.`,
      );
    }

    const lengthBytes = new Uint8Array(8);
    readExactly(fd, path, lengthBytes, 0);
    const headerLength = new DataView(lengthBytes.buffer).getBigUint64(0, true);
    if (headerLength > BigInt(fileSize - 8)) {
      throw new MidpoError(
        `${path}: header length ${headerLength} is larger than the ${fileSize - 8} bytes that ` +
          `follow it. The file is truncated or not a safetensors file; download or write it again.`,
      );
    }
    if (headerLength > BigInt(MAX_HEADER_BYTES)) {
      throw new MidpoError(
        `${path}: header length ${headerLength} exceeds the ${MAX_HEADER_BYTES}-byte limit of ` +
          `the safetensors format. The file is corrupt or not a safetensors file.`,
      );
    }

    const headerBytes = new Uint8Array(Number(headerLength));
    readExactly(fd, path, headerBytes, 8);
    const header = parseHeaderJson(path, headerBytes);

    const dataStart = 8 + headerBytes.length;
    const dataLength = fileSize - dataStart;
    const metadata = parseMetadata(path, header["__metadata__"]);
    const tensors = new Map<string, TensorInfo>();
    for (const [name, entry] of Object.entries(header)) {
      if (name === "__metadata__") {
        continue;
      }
      tensors.set(name, parseTensorEntry(path, name, entry, dataStart, dataLength));
    }
    return new SafetensorsFile(path, headerBytes.length, metadata, tensors);
  }

  /** Tensor names in header order. */
  names(): string[] {
    return [...this.tensors.keys()];
  }

  has(name: string): boolean {
    return this.tensors.has(name);
  }

  /** Returns the dtype, shape and byte range of `name`. Throws MidpoError when it is absent. */
  info(name: string): TensorInfo {
    const info = this.tensors.get(name);
    if (info === undefined) {
      throw tensorNotFound(name, this.path, this.names());
    }
    return info;
  }

  /** Reads `name` in its stored dtype. */
  readTensor(name: string): SafetensorsTensor {
    return readTensorData(this.info(name));
  }

  /**
   * Reads `name` as float32, widening F16 and BF16 exactly. With `expectedShape`, a tensor of any
   * other shape is rejected before its data is read.
   */
  readFloat32(name: string, expectedShape?: readonly number[]): Float32Array {
    return readTensorAsFloat32(this.info(name), expectedShape);
  }
}

function assertLittleEndianHost(): void {
  // Safetensors data is little-endian and typed arrays use the host byte order. Rejecting
  // big-endian hosts is simpler than byte-swapping every tensor.
  if (endianness() !== "LE") {
    throw new Error("midpo reads and writes safetensors only on little-endian hosts");
  }
}

function openForReading(path: string): number {
  try {
    return openSync(path, "r");
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === "ENOENT") {
      throw new MidpoError(
        `Safetensors file not found: ${path}. Check the path, or download the checkpoint again.`,
      );
    }
    throw new MidpoError(
      `Failed to open safetensors file ${path} (${code ?? String(error)}). ` +
        `Check that the path is a readable file.`,
    );
  }
}

/** Fills `target` from `position` on, failing with MidpoError if the file ends first. */
function readExactly(fd: number, path: string, target: Uint8Array, position: number): void {
  let done = 0;
  while (done < target.length) {
    const length = Math.min(target.length - done, MAX_IO_CHUNK_BYTES);
    const bytesRead = readSync(fd, target, done, length, position + done);
    if (bytesRead === 0) {
      throw new MidpoError(
        `${path} ended at byte ${position + done} while ${target.length} bytes were being read ` +
          `from byte ${position}. The file was truncated or changed while open. ` +
          `Download or write it again.`,
      );
    }
    done += bytesRead;
  }
}

function parseHeaderJson(path: string, headerBytes: Uint8Array): Record<string, unknown> {
  let header: unknown;
  try {
    const text = new TextDecoder("utf-8", { fatal: true }).decode(headerBytes);
    header = JSON.parse(text);
  } catch (error) {
    throw new MidpoError(
      `${path}: the ${headerBytes.length}-byte header is not valid UTF-8 JSON ` +
        `(${(error as Error).message}). The file is corrupt or not a safetensors file.`,
    );
  }
  if (typeof header !== "object" || header === null || Array.isArray(header)) {
    throw new MidpoError(
      `${path}: the header must be a JSON object mapping tensor names to entries, ` +
        `got ${describeJson(header)}. The file is corrupt or not a safetensors file.`,
    );
  }
  return header as Record<string, unknown>;
}

function parseMetadata(path: string, value: unknown): Record<string, string> | null {
  if (value === undefined) {
    return null;
  }
  const isStringMap =
    typeof value === "object" &&
    value !== null &&
    !Array.isArray(value) &&
    Object.values(value).every((item) => typeof item === "string");
  if (!isStringMap) {
    throw new MidpoError(
      `${path}: "__metadata__" must map strings to strings, got ${describeJson(value)}. ` +
        `Write the file again with string metadata values.`,
    );
  }
  return value as Record<string, string>;
}

function parseTensorEntry(
  path: string,
  name: string,
  entry: unknown,
  dataStart: number,
  dataLength: number,
): TensorInfo {
  const fail = (detail: string): MidpoError =>
    new MidpoError(
      `${path}: tensor "${name}" ${detail}. The file is corrupt. Download or write it again.`,
    );
  if (typeof entry !== "object" || entry === null || Array.isArray(entry)) {
    throw fail(`must be an object with dtype, shape and data_offsets, got ${describeJson(entry)}`);
  }
  const { dtype, shape, data_offsets: offsets } = entry as Record<string, unknown>;

  if (typeof dtype !== "string" || !(dtype in DTYPE_BYTES)) {
    throw fail(`has dtype ${describeJson(dtype)}, expected one of ${DTYPE_NAMES.join(", ")}`);
  }
  if (!Array.isArray(shape) || !shape.every(isNonNegativeInteger)) {
    throw fail(`has shape ${describeJson(shape)}, expected a list of non-negative integers`);
  }
  const offsetsValid =
    Array.isArray(offsets) &&
    offsets.length === 2 &&
    offsets.every(isNonNegativeInteger) &&
    offsets[0] <= offsets[1];
  if (!offsetsValid) {
    throw fail(
      `has data_offsets ${describeJson(offsets)}, expected [begin, end] with begin <= end`,
    );
  }

  const [begin, end] = offsets as [number, number];
  const elementBytes = DTYPE_BYTES[dtype as SafetensorsDtype];
  const expectedBytes = shapeSize(shape) * elementBytes;
  if (end - begin !== expectedBytes) {
    throw fail(
      `has data_offsets [${begin}, ${end}] spanning ${end - begin} bytes, but shape ` +
        `[${shape.join(", ")}] of ${dtype} needs ${expectedBytes}`,
    );
  }
  if (end > dataLength) {
    throw new MidpoError(
      `${path} is truncated: tensor "${name}" ends at byte ${end} of the data section, which ` +
        `has only ${dataLength} bytes. Download or write the file again.`,
    );
  }

  return {
    name,
    file: path,
    dtype: dtype as SafetensorsDtype,
    shape: shape as number[],
    byteOffset: dataStart + begin,
    byteLength: expectedBytes,
  };
}

function isNonNegativeInteger(value: unknown): value is number {
  return typeof value === "number" && Number.isSafeInteger(value) && value >= 0;
}

function shapeSize(shape: readonly number[]): number {
  return shape.reduce((product, dim) => product * dim, 1);
}

function describeJson(value: unknown): string {
  const text = value === undefined ? "nothing" : JSON.stringify(value);
  return text.length > 80 ? `${text.slice(0, 77)}...` : text;
}

// ---------------------------------------------------------------------------------------------
// Reading tensor data

function readTensorBytes(info: TensorInfo): ArrayBuffer {
  // A fresh ArrayBuffer starts at offset 0, so any typed-array view over it is aligned.
  const buffer = new ArrayBuffer(info.byteLength);
  const fd = openForReading(info.file);
  try {
    readExactly(fd, info.file, new Uint8Array(buffer), info.byteOffset);
  } finally {
    closeSync(fd);
  }
  return buffer;
}

function readTensorData(info: TensorInfo): SafetensorsTensor {
  const data = new ARRAY_TYPES[info.dtype](readTensorBytes(info));
  return { dtype: info.dtype, shape: [...info.shape], data };
}

/** Rejects a tensor whose stored shape is not `expected`. */
export function checkShape(info: TensorInfo, expected: readonly number[]): void {
  if (!shapesEqual(info.shape, expected)) {
    throw new MidpoError(
      `Tensor "${info.name}" in ${info.file} has shape [${info.shape.join(", ")}], expected ` +
        `[${expected.join(", ")}]. The checkpoint does not match its config.json, ` +
        `or it belongs to a different model.`,
    );
  }
}

export function readTensorAsFloat32(
  info: TensorInfo,
  expectedShape?: readonly number[],
): Float32Array {
  if (expectedShape !== undefined) checkShape(info, expectedShape);
  if (info.dtype !== "F32" && info.dtype !== "F16" && info.dtype !== "BF16") {
    throw new MidpoError(
      `Tensor "${info.name}" in ${info.file} has dtype ${info.dtype}, but only F32, F16 and ` +
        `BF16 tensors can be read as float32. Use a checkpoint saved in one of those dtypes.`,
    );
  }

  const bytes = readTensorBytes(info);
  if (info.dtype === "F32") {
    return new Float32Array(bytes);
  }
  if (info.dtype === "F16") {
    return float16BitsToFloat32(new Uint16Array(bytes));
  }
  return bfloat16BitsToFloat32(new Uint16Array(bytes));
}

function shapesEqual(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((dim, i) => dim === b[i]);
}

/** Builds the error for a tensor name that `where` lacks, suggesting the nearest names. */
export function tensorNotFound(name: string, where: string, available: string[]): MidpoError {
  const suggestions = closestNames(name, available, 3);
  const hint =
    suggestions.length > 0
      ? ` Closest names: ${suggestions.map((item) => `"${item}"`).join(", ")}.`
      : " It contains no tensors.";
  return new MidpoError(
    `Tensor "${name}" not found in ${where} (${available.length} tensors).${hint} ` +
      `Check that the checkpoint matches the model architecture in config.json.`,
  );
}

/** Returns up to `count` candidates ordered by edit distance to `name`, nearest first. */
function closestNames(name: string, candidates: readonly string[], count: number): string[] {
  return candidates
    .map((candidate) => ({ candidate, distance: editDistance(name, candidate) }))
    .sort((a, b) => a.distance - b.distance || a.candidate.localeCompare(b.candidate))
    .slice(0, count)
    .map((item) => item.candidate);
}

/** Levenshtein distance with unit costs, computed one row at a time. */
function editDistance(a: string, b: string): number {
  let previous = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const current = [i];
    for (let j = 1; j <= b.length; j++) {
      const substitution = previous[j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1);
      current.push(Math.min(previous[j] + 1, current[j - 1] + 1, substitution));
    }
    previous = current;
  }
  return previous[b.length];
}

// ---------------------------------------------------------------------------------------------
// Writing

/**
 * Writes `tensors` to a safetensors file at `path`, atomically: the bytes go to a temporary file
 * in the same directory, which is renamed over `path` only once complete. `metadata` is stored
 * as `__metadata__` with `format: "pt"` added unless given, because some transformers versions
 * reject a safetensors file whose metadata has no `format`.
 */
export function writeSafetensors(
  path: string,
  tensors: Record<string, SafetensorsTensor>,
  metadata: Record<string, string> = {},
): void {
  assertLittleEndianHost();
  const entries = Object.entries(tensors).map(([name, tensor]) => encodeTensor(name, tensor));
  const header = buildHeader(entries, { format: "pt", ...metadata });

  const target = resolve(path);
  const temporary = join(
    dirname(target),
    `.${basename(target)}.${process.pid}.${randomBytes(4).toString("hex")}.tmp`,
  );
  try {
    writeFileChunks(temporary, [header, ...entries.map((entry) => entry.bytes)]);
    renameSync(temporary, target);
  } catch (error) {
    removeQuietly(temporary);
    const code = (error as NodeJS.ErrnoException).code;
    if (code === undefined) {
      throw error;
    }
    throw new MidpoError(
      `Failed to write safetensors file ${target} (${code}). ` +
        `Check that its directory exists, is writable and has free space.`,
    );
  }
}

interface EncodedTensor {
  name: string;
  dtype: SafetensorsDtype;
  shape: number[];
  bytes: Uint8Array;
}

/** Checks one tensor against its dtype and shape and returns its little-endian bytes. */
function encodeTensor(name: string, tensor: SafetensorsTensor): EncodedTensor {
  const { dtype, shape } = tensor;
  if (name === "" || name === "__metadata__") {
    throw new Error(`writeSafetensors: invalid tensor name ${JSON.stringify(name)}`);
  }
  if (!(dtype in DTYPE_BYTES)) {
    throw new Error(`writeSafetensors: tensor "${name}" has unknown dtype ${String(dtype)}`);
  }
  if (shape.some((dim) => !isNonNegativeInteger(dim))) {
    throw new Error(`writeSafetensors: tensor "${name}" has invalid shape [${shape.join(", ")}]`);
  }

  const data = narrowIfNeeded(dtype, tensor.data);
  if (!(data instanceof ARRAY_TYPES[dtype])) {
    throw new Error(
      `writeSafetensors: tensor "${name}" of dtype ${dtype} needs a ` +
        `${ARRAY_TYPES[dtype].name}, got a ${data.constructor.name}`,
    );
  }
  if (data.length !== shapeSize(shape)) {
    throw new Error(
      `writeSafetensors: tensor "${name}" has ${data.length} elements, but shape ` +
        `[${shape.join(", ")}] needs ${shapeSize(shape)}`,
    );
  }
  const bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  return { name, dtype, shape: [...shape], bytes };
}

function narrowIfNeeded(dtype: SafetensorsDtype, data: TensorArray): TensorArray {
  if (dtype === "F16" && data instanceof Float32Array) {
    return float32ToFloat16Bits(data);
  }
  if (dtype === "BF16" && data instanceof Float32Array) {
    return float32ToBfloat16Bits(data);
  }
  return data;
}

/**
 * Lays out the data section (largest element size first, so that every tensor starts at a
 * multiple of its element size) and returns the length-prefixed header. Reorders `entries`.
 */
function buildHeader(entries: EncodedTensor[], metadata: Record<string, string>): Uint8Array {
  entries.sort((a, b) => DTYPE_BYTES[b.dtype] - DTYPE_BYTES[a.dtype] || (a.name < b.name ? -1 : 1));

  const json: Record<string, unknown> = { __metadata__: metadata };
  let offset = 0;
  for (const entry of entries) {
    const end = offset + entry.bytes.length;
    json[entry.name] = { dtype: entry.dtype, shape: entry.shape, data_offsets: [offset, end] };
    offset = end;
  }

  // Spaces pad the JSON to a multiple of 8 bytes so the data section starts 8-byte aligned.
  const text = new TextEncoder().encode(JSON.stringify(json));
  const paddedLength = Math.ceil(text.length / 8) * 8;
  const header = new Uint8Array(8 + paddedLength).fill(0x20, 8 + text.length);
  new DataView(header.buffer).setBigUint64(0, BigInt(paddedLength), true);
  header.set(text, 8);
  return header;
}

function writeFileChunks(path: string, parts: Uint8Array[]): void {
  const fd = openSync(path, "wx");
  try {
    for (const part of parts) {
      let done = 0;
      while (done < part.length) {
        const length = Math.min(part.length - done, MAX_IO_CHUNK_BYTES);
        done += writeSync(fd, part, done, length);
      }
    }
    // Flush before the rename so a crash cannot leave a complete-looking name over partial data.
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

function removeQuietly(path: string): void {
  try {
    unlinkSync(path);
  } catch {
    // The temporary file may never have been created; the original error matters more.
  }
}
