// ORT sessions built from graphs of the graph builder.
//
// A session keeps a set of bound inputs (frozen weights) that it adds to every run, so callers
// pass only the per-run inputs. Bound inputs are not copied by ORT on each run: the tensors
// wrap the JavaScript buffers directly.

import { linkSync, mkdtempSync, realpathSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { basename, dirname, join, resolve } from "node:path";
import * as ort from "onnxruntime-node";
import { MidpoError } from "../errors.js";
import type { Graph } from "../graph/graph.js";
import { toOnnxBytes } from "../graph/onnx.js";
import type { DType, TypedArray } from "../graph/types.js";

export type Feeds = Record<string, ort.Tensor>;

export interface SessionOptions {
  /** Inputs bound once and added to every run, keyed by graph input name. */
  bound?: Feeds;
  /** Intra-op threads; ORT's default (one per core) when omitted. */
  threads?: number;
  /** Directory that relative external-data paths resolve against. */
  externalDataDir?: string;
  /**
   * Lets ORT pre-pack weights mapped from a file (external-data initializers) for its matrix
   * products. Off by default; see Session.create.
   */
  prepack?: boolean;
}

export class Session {
  private constructor(
    private readonly inner: ort.InferenceSession,
    private readonly bound: Feeds,
    readonly outputNames: readonly string[],
  ) {}

  static async create(graph: Graph, options: SessionOptions = {}): Promise<Session> {
    const bound = options.bound ?? {};
    const inputNames = new Set(graph.inputs.map((t) => t.name));
    for (const name of Object.keys(bound)) {
      if (!inputNames.has(name))
        throw new Error(`bound input ${name} is not an input of ${graph.name}`);
    }
    const sessionOptions: ort.InferenceSession.SessionOptions = {
      graphOptimizationLevel: "all",
      executionMode: "sequential",
      // ORT's memory patterns plan one block per distinct set of input shapes. Decoding and
      // training change shapes at almost every run, so the planning repeats and the blocks
      // add up. Without them, on a SmolLM-135M shape (ORT 1.31, 2 cores), decode at batch 16
      // ran about 13% faster with 40 MiB less peak memory. Log-probs of 4 x 256 tokens took
      // 45 MiB less, and a DPO step ran as fast with 1.5 GiB less.
      enableMemPattern: false,
    };
    if (graph.initializers.some((i) => i.kind === "external") && options.prepack !== true) {
      // Pre-packing copies mapped weights into ORT's own memory. With it, a causal LM's
      // prefill session took 110 MiB more peak memory, about the size of its tied embedding
      // (SmolLM-135M shape, ORT 1.31). Score models turn it on (see ScoreModel). Weights fed
      // as inputs are not pre-packed.
      sessionOptions.extra = { session: { disable_prepacking: "1" } };
    }
    if (options.threads !== undefined) sessionOptions.intraOpNumThreads = options.threads;
    const inner = await createInner(graph, sessionOptions);
    return new Session(
      inner,
      bound,
      graph.outputs.map((t) => t.name),
    );
  }

  async run(feeds: Feeds, outputs?: string[]): Promise<Record<string, ort.Tensor>> {
    const all = { ...this.bound, ...feeds };
    return outputs === undefined ? this.inner.run(all) : this.inner.run(all, outputs);
  }

  /** Frees ORT's memory now instead of at garbage collection. */
  async release(): Promise<void> {
    await this.inner.release();
  }
}

/**
 * Creates the ORT session. ORT accepts only relative external-data locations inside one base
 * directory and rejects symbolic links that leave it. When all data files (after resolving
 * links) are in one directory, the model loads from bytes with that directory as the base.
 * Otherwise it is written to a temporary directory beside hard links to its data files: in
 * the system temporary directory when that is on the same file system, else in the first
 * data file's directory. ORT maps the data when the session is created, so the temporary
 * directory can go right after.
 */
async function createInner(
  graph: Graph,
  options: ort.InferenceSession.SessionOptions,
): Promise<ort.InferenceSession> {
  // Locations name the files themselves: the Hugging Face cache's snapshot entries are
  // symbolic links into its blob directory. Each path is resolved once.
  const realPaths = new Map<string, string>();
  for (const init of graph.initializers) {
    if (init.kind === "external" && !realPaths.has(init.path)) {
      realPaths.set(init.path, realpathSync(resolve(init.path)));
    }
  }
  const real = (path: string) => realPaths.get(path)!;
  const files = [...new Set(realPaths.values())];
  if (files.length === 0) return ort.InferenceSession.create(toOnnxBytes(graph), options);

  // All data files in one directory (one checkpoint, or the cache's blob directory): the
  // model loads from bytes, with that directory as the base of its relative locations.
  const folders = new Set(files.map((file) => dirname(file)));
  if (folders.size === 1) {
    const folder = [...folders][0];
    const extra = {
      ...(options.extra as Record<string, Record<string, string>> | undefined),
    };
    extra.session = { ...extra.session, model_external_initializers_file_folder_path: folder };
    const bytes = toOnnxBytes(graph, (path) => basename(real(path)));
    return ort.InferenceSession.create(bytes, { ...options, extra });
  }

  const names = new Map(files.map((file, i) => [file, `external-${i}.bin`]));
  const dir = linkedDirectory(names);
  try {
    const modelPath = join(dir, "model.onnx");
    writeFileSync(
      modelPath,
      toOnnxBytes(graph, (path) => names.get(real(path))!),
    );
    return await ort.InferenceSession.create(modelPath, options);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** ORT cannot be given the external-data files of a graph (see createInner). */
export class ExternalDataPlacementError extends MidpoError {}

/** A new directory holding a hard link to each file under its given name. */
function linkedDirectory(names: Map<string, string>): string {
  const candidates = [tmpdir(), dirname([...names.keys()][0])];
  let lastError: unknown;
  for (const parent of candidates) {
    let dir: string | null = null;
    try {
      dir = mkdtempSync(join(parent, ".midpo-onnx-"));
      for (const [file, name] of names) linkSync(file, join(dir, name));
      return dir;
    } catch (error) {
      lastError = error;
      if (dir !== null) rmSync(dir, { recursive: true, force: true });
    }
  }
  throw new ExternalDataPlacementError(
    `cannot place the external weight files ${[...names.keys()].join(", ")} beside a temporary ` +
      `model file (${(lastError as Error).message})`,
  );
}

const ORT_TYPES: Partial<Record<DType, ort.Tensor.Type>> = {
  float32: "float32",
  float64: "float64",
  int64: "int64",
  int32: "int32",
  bool: "bool",
  float16: "float16",
};

/** Wraps a typed array as an ORT tensor without copying. */
export function tensor(dtype: DType, data: TypedArray, dims: readonly number[]): ort.Tensor {
  const type = ORT_TYPES[dtype];
  if (type === undefined) throw new Error(`element type ${dtype} cannot cross into ORT from Node`);
  return new ort.Tensor(type, data as never, dims);
}

export function int64Tensor(
  values: readonly number[] | BigInt64Array,
  dims: readonly number[],
): ort.Tensor {
  const data =
    values instanceof BigInt64Array ? values : BigInt64Array.from(values, (v) => BigInt(v));
  return new ort.Tensor("int64", data, dims);
}

export { ort };

/**
 * Feeds for every graph input found in `weights` (float32, shaped as the graph declares),
 * except the names in `trainable`, which the caller feeds on each run.
 */
export function weightFeeds(
  graph: Graph,
  weights: ReadonlyMap<string, Float32Array>,
  trainable: { has(name: string): boolean } = new Set<string>(),
): Feeds {
  const feeds: Feeds = {};
  for (const input of graph.inputs) {
    const w = weights.get(input.name);
    if (w !== undefined && !trainable.has(input.name)) {
      feeds[input.name] = tensor("float32", w, input.shape as number[]);
    }
  }
  return feeds;
}
