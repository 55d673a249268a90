// Weights left in their safetensors file, which ORT maps as external-data initializers when a
// session is created (see loadCausalLM's `mapWeights`).

import type { FileRange } from "../graph/graph.js";
import { ExternalDataPlacementError, type Session } from "../runtime/session.js";
import type { WeightMap } from "./causal-lm.js";
import type { WeightSpec } from "./llama.js";
import type { SafetensorsCheckpoint } from "./safetensors-checkpoint.js";
import { checkShape, readTensorAsFloat32, type TensorInfo } from "./safetensors.js";

/** Float32 weights by checkpoint name, with the file and byte range of each. */
export type MappedWeights = Map<string, TensorInfo>;

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
 * session. When ORT cannot be given the checkpoint file (different file systems and a
 * read-only model directory), moves every mapped weight into `held` and runs `create` again.
 */
export async function createMappedSession(
  mapped: MappedWeights,
  held: WeightMap,
  create: () => Promise<Session>,
): Promise<Session> {
  try {
    return await create();
  } catch (error) {
    if (!(error instanceof ExternalDataPlacementError)) throw error;
    const { log } = await import("../log.js");
    log.warn(`${error.message}; reading the weights into memory instead`);
    for (const [name, info] of mapped) held.set(name, readTensorAsFloat32(info));
    mapped.clear();
    return create();
  }
}

/**
 * Reads the weights `specs` names from a checkpoint, checking their shapes. With `map`,
 * float32 ones are only recorded in `mapped`, and F16 and BF16 ones are still widened into
 * `held`.
 */
export function readOrMapWeights(
  checkpoint: SafetensorsCheckpoint,
  specs: readonly WeightSpec[],
  map: boolean,
): { held: WeightMap; mapped: MappedWeights } {
  const held: WeightMap = new Map();
  const mapped: MappedWeights = new Map();
  for (const spec of specs) {
    const info = checkpoint.info(spec.name);
    if (map && info.dtype === "F32") {
      checkShape(info, spec.shape);
      mapped.set(spec.name, info);
    } else {
      held.set(spec.name, checkpoint.readFloat32(spec.name, spec.shape));
    }
  }
  return { held, mapped };
}
