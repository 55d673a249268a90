// The contract between bench/run-train-benches.ts and its measuring processes: the plan file
// that every process reads, and the JSON line that each one prints on stdout. The midpo side
// is bench/dpo-step.ts, bench/score.ts and bench/router-step.ts; the PyTorch side is
// bench/dpo_step_torch.py, bench/score_torch.py and bench/router_step_torch.py. Field names
// are snake_case because Python reads and writes the same objects.

import { readFileSync } from "node:fs";
import { performance } from "node:perf_hooks";

import { Graph } from "../src/graph/graph.js";
import { toOnnxBytes } from "../src/graph/onnx.js";
import * as op from "../src/graph/ops.js";
import { Rng } from "../src/generate/sampling.js";
import { ort, Session, tensor } from "../src/runtime/session.js";
import { peakRssBytes } from "./forward-plan.js";

export type Bench = "dpo-step" | "score" | "router-step";

/**
 * Work of one timed run of a step process:
 *   step      policy forward + backward + loss + gradients, with the reference log-probs
 *             computed once before timing (midpo's cache);
 *   step+ref  the reference model's forward pass, then the step, on every run (what TRL and
 *             safe-rlhf do when the reference log-probs are not precomputed).
 */
export type StepMode = "step" | "step+ref";

export interface PlanPair {
  prompt_ids: number[];
  chosen_ids: number[];
  rejected_ids: number[];
  /** m in −log σ(β·Δ − m); 0 is plain DPO. */
  margin: number;
}

/** Settings and token ids that every measuring process reads, so both sides do the same work. */
export interface TrainPlan {
  model_dir: string;
  /** Score model: the same backbone plus `score.weight` [1, hidden]. */
  score_model_dir: string;
  /**
   * Initial parameters, float32 safetensors with midpo's input names. The DPO adapter:
   * `<module>.lora_A.weight` and `<module>.lora_B.weight`. The experts: `safety.<module>...`
   * and `helpfulness.<module>...`. The router: `router.layers.N.{alpha,beta}.K.{weight,bias}`.
   * Separate files, so that each process reads only what its step uses.
   */
  adapter_path: string;
  experts_path: string;
  router_path: string;
  /** One batch of preference pairs, laid out by both sides as chosen rows then rejected rows. */
  pairs: PlanPair[];
  /** β of the DPO loss. */
  beta: number;
  lora: { r: number; alpha: number; target_modules: string[] };
  router: { hidden: number; lambda_alpha: number; lambda_beta: number };
  /**
   * Sequences to score, all scored once per timed run: pairs that share their first
   * `score_prompt_length` tokens, like two responses to one prompt.
   */
  score_sequences: number[][];
  score_prompt_length: number;
  /**
   * PyTorch's sequences per forward pass when scoring. midpo uses its default batching.
   * PyTorch scored fastest at 16 of 2, 4, 8, 16 and 32 (SmolLM-135M shape, 256 tokens).
   */
  score_batch: number;
  /** Timed runs per process, after one untimed warm-up run. */
  repeats: number;
  /**
   * The float32 matmul chain whose rate each process measures: `runs` products in one call,
   * alternately [m, k] @ [k, n] and [m, n] @ [n, k], as in an MLP stack.
   */
  matmul: { m: number; k: number; n: number; runs: number };
  /** max_grad_norm of the gradient clipping timed with the optimizer update. */
  max_grad_norm: number;
  learning_rate: number;
}

/**
 * Seconds for one call that chains `runs` products, alternately [m, k] @ [k, n] and
 * [m, n] @ [n, k], one entry per repeat. Each product is 2·m·k·n FLOPs.
 */
export interface MatmulTiming {
  m: number;
  k: number;
  n: number;
  runs: number;
  seconds: number[];
}

interface ResultBase {
  side: "midpo" | "pytorch";
  bench: Bench;
  /** Peak resident set size of the whole process (VmHWM), in bytes. */
  peak_rss_bytes: number;
  /** User plus system CPU time of the whole process, all threads, in seconds. */
  cpu_s: number;
  /** Intra-op threads: null for midpo (ORT's default, one per core), torch's count otherwise. */
  threads: number | null;
  versions: Record<string, string>;
  /** Reading the checkpoint into memory. */
  load_s: number;
  /**
   * midpo: building the step's graph in JavaScript, autodiff included (step benchmarks), and
   * serialising it to ONNX once more on its own, to time that part of session creation.
   */
  graph_build_s?: number;
  onnx_serialize_s?: number;
  /** midpo: creating the ORT sessions, ONNX serialisation included; 0 for PyTorch. */
  session_create_s: number;
  warmup_s: number;
  /** The matmul rate of this process, measured before and again after its timed runs. */
  matmul: MatmulTiming;
}

export interface StepResult extends ResultBase {
  bench: "dpo-step" | "router-step";
  mode: StepMode;
  /** Rows (2 per pair) and padded width of the batch. */
  rows: number;
  width: number;
  /** Wall time of each timed run, reference forward included in step+ref mode. */
  seconds: number[];
  /** The reference forward's part of each timed run; zeros in step mode. */
  ref_seconds: number[];
  /** midpo only: time inside ORT's session.run during the step's part of each run. */
  ort_seconds?: number[];
  /** Gradient clipping plus one AdamW update after each timed run (not part of `seconds`). */
  optimizer_seconds: number[];
  /** Outputs of the warm-up run, at the plan's initial parameters, to compare the sides. */
  loss: number;
  /** Policy sequence log-probs, chosen rows then rejected rows. */
  logps: number[];
  ref_logps: number[];
  /** L2 norm of all gradients together. */
  grad_norm: number;
  /** The first 8 values of each of a few named gradients. */
  grad_samples: Record<string, number[]>;
  /** router-step only: mean α and mean β over layers and real tokens. */
  mean_alpha?: number;
  mean_beta?: number;
}

export interface ScoreResult extends ResultBase {
  bench: "score";
  sequences: number;
  tokens: number;
  /** Wall time to score every plan sequence, one entry per timed run. */
  seconds: number[];
  /** midpo only: time inside ORT's session.run, per timed run. */
  ort_seconds?: number[];
  scores: number[];
  /**
   * midpo only: the same runs with prompt sharing turned off, so that every sequence runs on
   * its own as on the PyTorch side. `seconds` and `scores` are from midpo's default, which
   * runs each shared prompt once.
   */
  alone?: { seconds: number[]; ort_seconds: number[]; scores_max_abs_diff: number };
  /** midpo only: the plan's score_prompt_length. */
  prompt_length?: number;
}

export type TrainBenchResult = StepResult | ScoreResult;

export function readPlan(path: string): TrainPlan {
  return JSON.parse(readFileSync(path, "utf8")) as TrainPlan;
}

export function seconds(since: number): number {
  return (performance.now() - since) / 1000;
}

/** Measures this process: peak RSS, CPU time, threads and software versions. */
export function processFields() {
  const cpu = process.cpuUsage();
  return {
    peak_rss_bytes: peakRssBytes(),
    cpu_s: (cpu.user + cpu.system) / 1e6,
    threads: null,
    versions: { node: process.versions.node, "onnxruntime-node": ort.env.versions.node ?? "" },
  };
}

/**
 * Counts the seconds spent inside midpo's Session.run in this process, so that a run's wall
 * time splits into ORT time and JavaScript time (feeds, copies of outputs, bookkeeping).
 * Two environment variables change every ORT session that the process creates, for
 * diagnosis: PROFILE_ENV turns on ORT's profiler, and OPTIONS_ENV adds session options.
 */
export function instrumentOrt(): { seconds: number } {
  const clock = { seconds: 0 };
  const run = Session.prototype.run;
  Session.prototype.run = async function (this: Session, ...args: Parameters<Session["run"]>) {
    const start = performance.now();
    try {
      return await run.apply(this, args);
    } finally {
      clock.seconds += seconds(start);
    }
  };

  const extra: ort.InferenceSession.SessionOptions = {};
  const options = process.env[OPTIONS_ENV];
  if (options !== undefined && options !== "") Object.assign(extra, JSON.parse(options));
  const prefix = process.env[PROFILE_ENV];
  if (prefix !== undefined && prefix !== "") {
    Object.assign(extra, { enableProfiling: true, profileFilePrefix: prefix });
  }
  if (Object.keys(extra).length > 0) overrideSessionOptions(extra);
  return clock;
}

/**
 * Path prefix for ORT profiles. Each session writes `<prefix>_<date>.json` when it is released.
 * bench/train-profile.ts sets it.
 */
export const PROFILE_ENV = "MIDPO_BENCH_ORT_PROFILE";
/** JSON object of ORT session options, e.g. `{"enableCpuMemArena": false}`. */
export const OPTIONS_ENV = "MIDPO_BENCH_ORT_OPTIONS";

function overrideSessionOptions(extra: ort.InferenceSession.SessionOptions): void {
  type Create = (
    model: Uint8Array,
    options?: ort.InferenceSession.SessionOptions,
  ) => Promise<ort.InferenceSession>;
  const create = ort.InferenceSession.create.bind(ort.InferenceSession) as Create;
  const created: Create = async (model, options) => {
    const session = await create(model, { ...options, ...extra });
    if (extra.enableProfiling === true) {
      const release = session.release.bind(session);
      session.release = async () => {
        session.endProfiling();
        await release();
      };
    }
    return session;
  };
  ort.InferenceSession.create = created as typeof ort.InferenceSession.create;
}

/**
 * Times the plan's matmul chain in ORT, one call per repeat after one warm-up call, and
 * appends the times to `previous` when given. Chaining the products inside one graph keeps
 * the per-call cost of the Node binding (feeds, a copy of the output) out of the rate.
 */
export async function measureOrtMatmul(
  plan: TrainPlan,
  previous?: MatmulTiming,
): Promise<MatmulTiming> {
  const { m, k, n, runs } = plan.matmul;
  const g = new Graph("matmul-chain");
  const x = g.input("x", "float32", [m, k]);
  const up = g.input("up", "float32", [k, n]);
  const down = g.input("down", "float32", [n, k]);
  let h = x;
  for (let i = 0; i < runs; i++) h = op.matmul(h, i % 2 === 0 ? up : down);
  g.output("h", h);
  const session = await Session.create(g);

  // Weights with variance 1/fan_in keep the activations near unit scale along the chain,
  // clear of overflow and of denormals, which run slowly.
  const rng = new Rng(7);
  const uniform = (size: number, bound: number) =>
    Float32Array.from({ length: size }, () => (2 * rng.next() - 1) * bound);
  const feeds = {
    x: tensor("float32", uniform(m * k, 1), [m, k]),
    up: tensor("float32", uniform(k * n, Math.sqrt(3 / k)), [k, n]),
    down: tensor("float32", uniform(n * k, Math.sqrt(3 / n)), [n, k]),
  };

  await session.run(feeds);
  const times: number[] = [];
  for (let r = 0; r < plan.repeats; r++) {
    const start = performance.now();
    await session.run(feeds);
    times.push(seconds(start));
  }
  await session.release();
  return { m, k, n, runs, seconds: [...(previous?.seconds ?? []), ...times] };
}

/** Times one serialisation of `graph` to ONNX bytes, the JavaScript part of Session.create. */
export function timeOnnxSerialization(graph: Graph): number {
  const start = performance.now();
  toOnnxBytes(graph);
  return seconds(start);
}

/** Returns the L2 norm of all arrays taken together, summed in float64. */
export function globalNorm(arrays: Iterable<Float32Array>): number {
  let sum = 0;
  for (const a of arrays) for (let i = 0; i < a.length; i++) sum += a[i] * a[i];
  return Math.sqrt(sum);
}
