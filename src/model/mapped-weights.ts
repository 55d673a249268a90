// Weights left in their safetensors file, which ORT maps as external-data initializers when a
// session is created (see loadCausalLM's `mapWeights`).

import { statSync } from "node:fs";
import { MidpoError } from "../errors.js";
import type { FileRange } from "../graph/graph.js";
import { ExternalDataPlacementError, type Session } from "../runtime/session.js";
import type { WeightMap } from "./causal-lm.js";
import type { WeightSpec } from "./llama.js";
import type { SafetensorsCheckpoint } from "./safetensors-checkpoint.js";
import { checkShape, readTensorAsFloat32, type TensorInfo } from "./safetensors.js";

/**
 * A float32 weight in its file, with the file's identity when it was read (device, inode,
 * size, modification time), so that a file replaced since then is noticed.
 */
export interface MappedTensor extends TensorInfo {
  fileStamp: string;
}

/** Float32 weights by checkpoint name, with the file and byte range of each. */
export type MappedWeights = Map<string, MappedTensor>;

function stampOf(path: string): string {
  const s = statSync(path);
  return `${s.dev}:${s.ino}:${s.size}:${s.mtimeMs}`;
}

/**
 * Rejects mapped weights whose file was removed or replaced since it was read: the byte
 * ranges came from its old header, so ORT would read the wrong bytes.
 */
export function checkMappedFiles(mapped: MappedWeights): void {
  const checked = new Set<string>();
  for (const tensor of mapped.values()) {
    if (checked.has(tensor.file)) continue;
    checked.add(tensor.file);
    let now: string | null;
    try {
      now = stampOf(tensor.file);
    } catch {
      now = null;
    }
    if (now !== tensor.fileStamp) {
      throw new MidpoError(
        `${tensor.file} was ${now === null ? "removed" : "changed"} after the model was ` +
          `loaded, and its weights are read from the file when a session starts; load the ` +
          `model again`,
      );
    }
  }
}

/** Returns the byte range of each mapped weight, as the graph builder takes them. */
export function fileRanges(mapped: MappedWeights): Map<string, FileRange> {
  const ranges = new Map<string, FileRange>();
  for (const [name, info] of mapped) {
    ranges.set(name, { path: info.file, offset: info.byteOffset, length: info.byteLength });
  }
  return ranges;
}

/**
 * Runs `create`, which builds a graph from the current contents of `mapped` and creates its
 * session. When ORT cannot be given the checkpoint files (shards in several directories that
 * cannot be linked into one), reads every mapped weight into `inMemory` and runs `create`
 * again.
 */
export async function createMappedSession(
  mapped: MappedWeights,
  inMemory: WeightMap,
  create: () => Promise<Session>,
): Promise<Session> {
  checkMappedFiles(mapped);
  try {
    return await create();
  } catch (error) {
    if (!(error instanceof ExternalDataPlacementError)) throw error;
    const { log } = await import("../log.js");
    log.warn(
      `${error.message}; reading the weights into memory instead. To map them from the ` +
        `file, keep all checkpoint files in one directory`,
    );
    for (const [name, info] of mapped) inMemory.set(name, readTensorAsFloat32(info));
    mapped.clear();
    return create();
  }
}

/**
 * Reads the weights named in `specs` from a checkpoint, checking their shapes. With `map`,
 * float32 ones are only recorded in `mapped`, and F16 and BF16 ones are still widened into
 * `inMemory`.
 */
export function readOrMapWeights(
  checkpoint: SafetensorsCheckpoint,
  specs: readonly WeightSpec[],
  map: boolean,
): { inMemory: WeightMap; mapped: MappedWeights } {
  const inMemory: WeightMap = new Map();
  const mapped: MappedWeights = new Map();
  const stamps = new Map<string, string>();
  for (const spec of specs) {
    const info = checkpoint.info(spec.name);
    if (map && info.dtype === "F32") {
      checkShape(info, spec.shape);
      let fileStamp = stamps.get(info.file);
      if (fileStamp === undefined) {
        fileStamp = stampOf(info.file);
        stamps.set(info.file, fileStamp);
      }
      mapped.set(spec.name, { ...info, fileStamp });
    } else {
      inMemory.set(spec.name, checkpoint.readFloat32(spec.name, spec.shape));
    }
  }
  return { inMemory, mapped };
}
