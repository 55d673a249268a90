// Hugging Face checkpoint directories: one `model.safetensors`, or shards listed by
// `model.safetensors.index.json` (`{ "weight_map": { tensor name: shard file name } }`).
// Every header is read and checked when the checkpoint opens, so a missing or mismatched shard
// fails at once rather than partway through loading.

import { existsSync, readdirSync, readFileSync, statSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { z } from "zod";

import { MidpoError } from "../errors.js";
import {
  SafetensorsFile,
  tensorNotFound,
  type SafetensorsTensor,
  type TensorInfo,
} from "./safetensors.js";

/** Name of the single-file checkpoint that Hugging Face `save_pretrained` writes. */
export const SAFETENSORS_SINGLE_FILE = "model.safetensors";

/** Name of the index that maps each tensor of a sharded checkpoint to its shard file. */
export const SAFETENSORS_INDEX_FILE = "model.safetensors.index.json";

const indexSchema = z.looseObject({
  weight_map: z.record(z.string(), z.string()),
});

/**
 * The weights of a Hugging Face checkpoint directory: `model.safetensors`, or the shards that
 * `model.safetensors.index.json` lists. The single file wins when both exist, as in transformers.
 * A path to one `.safetensors` file (a PEFT `adapter_model.safetensors`, say) also works.
 */
export class SafetensorsCheckpoint {
  private constructor(
    /** Absolute path of the checkpoint directory. */
    readonly directory: string,
    /** Each file once, in the order first referenced. */
    readonly files: readonly SafetensorsFile[],
    private readonly fileByTensor: Map<string, SafetensorsFile>,
  ) {}

  /**
   * Reads the header of every file in the checkpoint at `path` (a directory or one file) and
   * checks the index, if any, against them.
   */
  static open(path: string): SafetensorsCheckpoint {
    const absolutePath = resolve(path);
    if (isFile(absolutePath)) {
      return SafetensorsCheckpoint.openSingle(dirname(absolutePath), absolutePath);
    }

    const singlePath = join(absolutePath, SAFETENSORS_SINGLE_FILE);
    const indexPath = join(absolutePath, SAFETENSORS_INDEX_FILE);
    if (existsSync(singlePath)) {
      return SafetensorsCheckpoint.openSingle(absolutePath, singlePath);
    }
    if (existsSync(indexPath)) {
      return SafetensorsCheckpoint.openSharded(absolutePath, indexPath);
    }
    throw noCheckpointFound(absolutePath);
  }

  private static openSingle(directory: string, filePath: string): SafetensorsCheckpoint {
    const file = SafetensorsFile.open(filePath);
    const fileByTensor = new Map(file.names().map((name) => [name, file]));
    return new SafetensorsCheckpoint(directory, [file], fileByTensor);
  }

  private static openSharded(directory: string, indexPath: string): SafetensorsCheckpoint {
    const weightMap = readWeightMap(indexPath);
    const shards = new Map<string, SafetensorsFile>();
    const fileByTensor = new Map<string, SafetensorsFile>();

    for (const [name, shardName] of Object.entries(weightMap)) {
      let shard = shards.get(shardName);
      if (shard === undefined) {
        shard = openShard(directory, indexPath, name, shardName);
        shards.set(shardName, shard);
      }
      if (!shard.has(name)) {
        throw new MidpoError(
          `${indexPath} maps tensor "${name}" to ${shard.path}, but that shard does not contain ` +
            `it. The index and the shards come from different downloads. Download the ` +
            `checkpoint again.`,
        );
      }
      fileByTensor.set(name, shard);
    }
    return new SafetensorsCheckpoint(directory, [...shards.values()], fileByTensor);
  }

  /** Tensor names, in header order for one file and in index order for shards. */
  names(): string[] {
    return [...this.fileByTensor.keys()];
  }

  has(name: string): boolean {
    return this.fileByTensor.has(name);
  }

  /** Returns the file, dtype, shape and byte range of `name`. Throws MidpoError when absent. */
  info(name: string): TensorInfo {
    return this.fileFor(name).info(name);
  }

  /** Reads `name` in its stored dtype. */
  readTensor(name: string): SafetensorsTensor {
    return this.fileFor(name).readTensor(name);
  }

  private fileFor(name: string): SafetensorsFile {
    const file = this.fileByTensor.get(name);
    if (file === undefined) {
      throw tensorNotFound(name, `checkpoint ${this.directory}`, this.names());
    }
    return file;
  }

  /**
   * Reads `name` as float32, widening F16 and BF16 exactly. With `expectedShape`, a tensor of any
   * other shape is rejected before its data is read.
   */
  readFloat32(name: string, expectedShape?: readonly number[]): Float32Array {
    return this.fileFor(name).readFloat32(name, expectedShape);
  }
}

function readWeightMap(indexPath: string): Record<string, string> {
  let json: unknown;
  try {
    json = JSON.parse(readFileSync(indexPath, "utf8"));
  } catch (error) {
    throw new MidpoError(
      `Failed to read checkpoint index ${indexPath}: ${(error as Error).message}. ` +
        `Download the checkpoint again.`,
    );
  }
  const parsed = indexSchema.safeParse(json);
  if (!parsed.success) {
    const weightMap = (json as { weight_map?: unknown } | null)?.weight_map;
    const got = weightMap === undefined ? "nothing" : JSON.stringify(weightMap).slice(0, 80);
    throw new MidpoError(
      `${indexPath}: "weight_map" must map tensor names to shard file names, got ${got}. ` +
        `Download the checkpoint again.`,
    );
  }
  return parsed.data.weight_map;
}

function openShard(
  directory: string,
  indexPath: string,
  tensorName: string,
  shardName: string,
): SafetensorsFile {
  const shardPath = resolve(directory, shardName);
  if (!existsSync(shardPath)) {
    throw new MidpoError(
      `${indexPath} maps tensor "${tensorName}" to shard "${shardName}", which does not exist ` +
        `at ${shardPath}. Download the missing shard, or the whole checkpoint again.`,
    );
  }
  return SafetensorsFile.open(shardPath);
}

function isFile(path: string): boolean {
  return statSync(path, { throwIfNoEntry: false })?.isFile() ?? false;
}

function noCheckpointFound(directory: string): MidpoError {
  let others: string[] = [];
  try {
    others = readdirSync(directory).filter((entry) => entry.endsWith(".safetensors"));
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === "ENOENT") {
      return new MidpoError(`Checkpoint directory not found: ${directory}. Check the path.`);
    }
    return new MidpoError(
      `Failed to list checkpoint directory ${directory} (${code ?? String(error)}). ` +
        `Check that the path is a readable directory.`,
    );
  }
  const found =
    others.length > 0
      ? ` It contains ${others.join(", ")}. To read one of those, pass its path instead.`
      : "";
  return new MidpoError(
    `No ${SAFETENSORS_SINGLE_FILE} or ${SAFETENSORS_INDEX_FILE} in ${directory}.${found} ` +
      `Download the checkpoint's safetensors weights, because .bin and .pth are not supported.`,
  );
}
