// The training loop shared by every stage (DPO experts, score models, the router): batching,
// gradient accumulation, clipping, AdamW with a schedule, evaluation, atomic checkpoints,
// exact resume, NaN detection, progress and a JSONL metrics log.
//
// A task supplies the trainable parameters and a function that runs one micro-batch
// (forward, loss, gradients). The loop owns everything that must survive a crash: a
// checkpoint holds the parameters, the optimizer moments, the RNG state and the position in
// the data, so a resumed run takes exactly the steps an uninterrupted run would.

import {
  appendFileSync,
  existsSync,
  mkdirSync,
  readFileSync,
  readdirSync,
  renameSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { join } from "node:path";
import { MidpoError } from "../errors.js";
import { Rng } from "../generate/sampling.js";
import { log } from "../log.js";
import { SafetensorsCheckpoint } from "../model/safetensors-checkpoint.js";
import { writeSafetensors, type SafetensorsTensor } from "../model/safetensors.js";
import { hashKey } from "./cache.js";
import { lockOutDir } from "./out-lock.js";
import { AdamW, clipGradNorm } from "./optimizer.js";
import { Progress } from "./progress.js";
import { learningRate, warmupStepsFromRatio, type ScheduleKind } from "./schedule.js";

export interface Param {
  data: Float32Array;
  dims: number[];
}

export interface TrainerOptions {
  outDir: string;
  epochs: number;
  /** Stops after this many optimizer steps when set (overrides epochs). */
  maxSteps?: number;
  /** Examples per micro-batch. */
  batchSize: number;
  /** Micro-batches per optimizer step. */
  gradAccum: number;
  lr: number;
  schedule: ScheduleKind;
  warmupRatio: number;
  weightDecay: number;
  betas: [number, number];
  eps: number;
  /** Clip the global gradient norm to this value; 0 disables. */
  maxGradNorm: number;
  /** Evaluate every N optimizer steps (0: only at the end). */
  evalEvery: number;
  /** Checkpoint every N optimizer steps (0: only at the end). */
  saveEvery: number;
  /** Checkpoints kept on disk; older ones are deleted. */
  keepCheckpoints: number;
  seed: number;
  /** Continue from the latest checkpoint in outDir. */
  resume: boolean;
  /** Hash of everything that must match for a resume to be valid (data, model, settings). */
  runKey: string;
  /**
   * Flattened settings (see flattenSettings) with hashes of the input files' contents.
   * Checkpoints store them, so that a resume with other settings can name the ones that differ.
   */
  runSettings?: Record<string, string>;
}

export type Metrics = Record<string, number>;

export interface MicroBatchResult {
  loss: number;
  grads: Map<string, Float32Array>;
  metrics: Metrics;
}

export interface TrainTask<E> {
  params: Map<string, Param>;
  train: E[];
  eval: E[];
  /** Length used to group examples of similar size into batches. */
  lengthOf(example: E): number;
  step(batch: E[], rng: Rng): Promise<MicroBatchResult>;
  /** Metrics of a batch without updating anything. */
  evaluate(batch: E[]): Promise<Metrics>;
  /**
   * Writes the trained model in its user-facing format (e.g. a PEFT adapter) into dir.
   * `final` is false for checkpoints, where a task may write something lighter.
   */
  save(dir: string, final: boolean): void;
}

interface TrainerState {
  step: number;
  epoch: number;
  /** Index of the next micro-batch within the epoch. */
  batchIndex: number;
  rngState: number;
  runKey: string;
  /** Absent in checkpoints written before it existed. */
  runSettings?: Record<string, string>;
  totalSteps: number;
}

export interface TrainSummary {
  steps: number;
  seconds: number;
  final: Metrics;
  eval: Metrics | null;
  outDir: string;
}

const STATE_FILE = "trainer_state.json";
const PARAMS_FILE = "params.safetensors";
const OPTIMIZER_FILE = "optimizer.safetensors";

/**
 * The micro-batches of one epoch: a seeded shuffle, then examples of similar length grouped
 * into batches (sorted within windows of 50 batches), then the batches shuffled again, so
 * padding stays small while batch order stays random.
 */
export function epochBatches(
  lengths: number[],
  batchSize: number,
  seed: number,
  epoch: number,
): number[][] {
  const rng = new Rng((seed * 1_000_003 + epoch * 7919 + 17) >>> 0);
  const order = lengths.map((_, i) => i);
  shuffle(order, rng);
  const window = batchSize * 50;
  const batches: number[][] = [];
  for (let start = 0; start < order.length; start += window) {
    const chunk = order.slice(start, start + window).sort((a, b) => lengths[a] - lengths[b]);
    for (let i = 0; i < chunk.length; i += batchSize) batches.push(chunk.slice(i, i + batchSize));
  }
  shuffle(batches, rng);
  return batches;
}

function shuffle<T>(items: T[], rng: Rng): void {
  for (let i = items.length - 1; i > 0; i--) {
    const j = Math.floor(rng.next() * (i + 1));
    [items[i], items[j]] = [items[j], items[i]];
  }
}

function checkpointDirs(outDir: string): { step: number; dir: string }[] {
  if (!existsSync(outDir)) return [];
  return readdirSync(outDir)
    .map((name) => /^checkpoint-(\d+)$/.exec(name))
    .filter((m): m is RegExpExecArray => m !== null)
    .map((m) => ({ step: Number(m[1]), dir: join(outDir, m[0]) }))
    .filter((c) => existsSync(join(c.dir, STATE_FILE)))
    .sort((a, b) => a.step - b.step);
}

/**
 * Deletes the half-written checkpoint directories (`checkpoint-N.tmp-PID`) that a killed run
 * leaves behind. The complete checkpoints before them are what a resume continues from.
 */
function removePartialCheckpoints(outDir: string): void {
  for (const name of readdirSync(outDir)) {
    if (/^checkpoint-\d+\.tmp-\d+$/.test(name)) {
      rmSync(join(outDir, name), { recursive: true, force: true });
      log.info({ dir: join(outDir, name) }, "removed a partly written checkpoint");
    }
  }
}

function meanMetrics(all: Metrics[]): Metrics {
  const out: Metrics = {};
  for (const m of all)
    for (const [k, v] of Object.entries(m)) out[k] = (out[k] ?? 0) + v / all.length;
  return out;
}

/** Values longer than this are kept as a hash in flattened settings. */
const MAX_SETTING_LENGTH = 240;
/** Differences named in a resume error; the rest are counted. */
const DIFFERENCES_NAMED = 4;

/**
 * Flattens nested settings to `path.to.key` -> JSON text. Long values, such as lists of
 * record ids, become `#` and the start of their hash, so a checkpoint stays small.
 */
export function flattenSettings(value: unknown): Record<string, string> {
  const out: Record<string, string> = {};
  const visit = (v: unknown, path: string) => {
    if (v !== null && typeof v === "object" && !Array.isArray(v)) {
      for (const [key, child] of Object.entries(v))
        visit(child, path === "" ? key : `${path}.${key}`);
      return;
    }
    const text = JSON.stringify(v) ?? "undefined";
    out[path] = text.length <= MAX_SETTING_LENGTH ? text : `#${hashKey(text).slice(0, 12)}`;
  };
  visit(value, "");
  return out;
}

/**
 * Settings that may differ between a run and its resume. Paths of models and data files may
 * be written another way, as the contents of both are compared on their own. The cache and
 * output directories do not change the results.
 */
const IGNORED_SETTINGS = new Set([
  "model",
  "data.files",
  "extraSafety",
  "safety",
  "helpfulness",
  "cost",
  "reward",
  "cacheDir",
  "out",
]);

/** Names that differ from the flag's own, by the last part of a settings path. */
const SETTING_NAMES: Record<string, string> = {
  files: "--data",
  schema: "--format",
  r: "--lora-r",
  type: "--loss",
  betas: "--adam-beta1, --adam-beta2",
  records: "the training records",
  dataContents: "the contents of the data files",
  modelContents: "the contents of the model, score model or adapter directories",
  stage: "the command",
};

/** Returns the flag that sets a flattened setting, such as `--batch-size` for `trainer.batchSize`. */
function settingName(path: string): string {
  const last = path.slice(path.lastIndexOf(".") + 1);
  if (path.startsWith("data.load.fields.")) return `--field ${last}=...`;
  return SETTING_NAMES[last] ?? `--${last.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}`;
}

/** Describes the settings whose values differ ("--lr: 1 then, 2 now; ..."), or returns "". */
function settingsDifferences(before: Record<string, string>, now: Record<string, string>): string {
  // A key that one side lacks was added or removed by another midpo version, so it is no change.
  const keys = Object.keys(before).filter(
    (key) => key in now && !IGNORED_SETTINGS.has(key) && before[key] !== now[key],
  );
  const named = keys
    .slice(0, DIFFERENCES_NAMED)
    .map((key) => `${settingName(key)}: ${before[key]} then, ${now[key]} now`);
  if (keys.length > DIFFERENCES_NAMED) named.push(`${keys.length - DIFFERENCES_NAMED} more`);
  return named.join("; ");
}

/**
 * Rejects an output directory with an earlier run's checkpoints unless resuming. The stages
 * call it before their costly preparation too, so that this error comes first.
 */
export function checkOutDir(outDir: string, resume: boolean): void {
  const checkpoints = checkpointDirs(outDir);
  if (!resume && checkpoints.length > 0) {
    throw new MidpoError(
      `${outDir} already has checkpoints (latest: ${checkpoints.at(-1)!.dir}); ` +
        `pass --resume to continue that run, or choose another --out`,
    );
  }
}

/** Reads a checkpoint's trainer state, and raises a MidpoError when another run wrote it. */
function readState(
  dir: string,
  run: { runKey: string; runSettings?: Record<string, string> },
): TrainerState {
  const path = join(dir, STATE_FILE);
  let state: TrainerState;
  try {
    state = JSON.parse(readFileSync(path, "utf8")) as TrainerState;
  } catch (error) {
    throw new MidpoError(
      `cannot read ${path} (${(error as Error).message}); delete ${dir} to resume from the ` +
        `checkpoint before it`,
    );
  }
  // Checkpoints with run settings are compared by them, so that paths written another way
  // and a new cache directory still resume. Older ones have only the key.
  const differences =
    state.runSettings !== undefined && run.runSettings !== undefined
      ? settingsDifferences(state.runSettings, run.runSettings)
      : null;
  if (differences === null ? state.runKey !== run.runKey : differences !== "") {
    throw new MidpoError(
      `checkpoint ${dir} belongs to a run with different data, model or settings` +
        (differences ? ` (${differences})` : "") +
        `; rerun with the original arguments and files, or choose another --out to start over`,
    );
  }
  return state;
}

/**
 * Rejects a resume whose latest checkpoint another run wrote, as the trainer would. Stages
 * call it before computing reference log-probs and scores, so that this error comes first.
 */
export function checkResume(
  outDir: string,
  resume: boolean,
  run: { runKey: string; runSettings?: Record<string, string> },
): void {
  const latest = checkpointDirs(outDir).at(-1);
  if (resume && latest !== undefined) readState(latest.dir, run);
}

export class Trainer<E> {
  private readonly optimizer: AdamW;
  private state: TrainerState;
  private readonly rng: Rng;
  private readonly metricsPath: string;

  constructor(
    private readonly task: TrainTask<E>,
    private readonly options: TrainerOptions,
  ) {
    const params: Record<string, Float32Array> = {};
    for (const [name, p] of task.params) params[name] = p.data;
    this.optimizer = new AdamW(params, {
      lr: options.lr,
      betas: options.betas,
      eps: options.eps,
      weightDecay: options.weightDecay,
    });
    this.rng = new Rng(options.seed);
    this.metricsPath = join(options.outDir, "metrics.jsonl");
    this.state = {
      step: 0,
      epoch: 0,
      batchIndex: 0,
      rngState: this.rng.getState(),
      runKey: options.runKey,
      runSettings: options.runSettings,
      totalSteps: this.totalSteps(),
    };
  }

  private batchesPerEpoch(): number {
    return Math.ceil(this.task.train.length / this.options.batchSize);
  }

  private totalSteps(): number {
    const perEpoch = Math.floor(this.batchesPerEpoch() / this.options.gradAccum);
    if (this.options.maxSteps !== undefined) return this.options.maxSteps;
    return Math.max(1, perEpoch * this.options.epochs);
  }

  /** Restores the latest checkpoint when resuming; refuses to overwrite an earlier run. */
  private prepareOutDir(): void {
    const { outDir, resume } = this.options;
    const checkpoints = checkpointDirs(outDir);
    if (existsSync(outDir)) removePartialCheckpoints(outDir);
    if (!resume) {
      checkOutDir(outDir, resume);
      mkdirSync(outDir, { recursive: true });
      writeFileSync(this.metricsPath, "");
      return;
    }
    if (checkpoints.length === 0) {
      log.info({ outDir }, "no checkpoint to resume from; starting a new run");
      mkdirSync(outDir, { recursive: true });
      writeFileSync(this.metricsPath, "");
      return;
    }
    this.load(checkpoints.at(-1)!.dir);
  }

  private load(dir: string): void {
    const state = readState(dir, this.options);
    const params = SafetensorsCheckpoint.open(join(dir, PARAMS_FILE));
    for (const [name, p] of this.task.params) p.data.set(params.readFloat32(name, p.dims));
    const moments = SafetensorsCheckpoint.open(join(dir, OPTIMIZER_FILE));
    const expAvg: Record<string, Float32Array> = {};
    const expAvgSq: Record<string, Float32Array> = {};
    for (const [name, p] of this.task.params) {
      expAvg[name] = moments.readFloat32(`exp_avg.${name}`, p.dims);
      expAvgSq[name] = moments.readFloat32(`exp_avg_sq.${name}`, p.dims);
    }
    this.optimizer.loadState({ step: state.step, expAvg, expAvgSq });
    this.rng.setState(state.rngState);
    // The current settings matched the checkpoint's, so later checkpoints store the current
    // ones: paths as written now, and settings for checkpoints written before they existed.
    this.state = { ...state, runSettings: this.options.runSettings ?? state.runSettings };

    // Drop log lines written after this checkpoint: the resumed run writes them again.
    const kept = existsSync(this.metricsPath)
      ? readFileSync(this.metricsPath, "utf8")
          .split("\n")
          .filter(
            (line) => line !== "" && (JSON.parse(line) as { step: number }).step <= state.step,
          )
      : [];
    writeFileSync(this.metricsPath, kept.map((l) => `${l}\n`).join(""));
    log.info({ checkpoint: dir, step: state.step }, "resuming");
  }

  private saveCheckpoint(): string {
    const { outDir } = this.options;
    const finalDir = join(outDir, `checkpoint-${this.state.step}`);
    const tmpDir = `${finalDir}.tmp-${process.pid}`;
    rmSync(tmpDir, { recursive: true, force: true });
    mkdirSync(tmpDir, { recursive: true });

    const params: Record<string, SafetensorsTensor> = {};
    for (const [name, p] of this.task.params)
      params[name] = { dtype: "F32", shape: p.dims, data: p.data };
    writeSafetensors(join(tmpDir, PARAMS_FILE), params);
    const opt = this.optimizer.state();
    const moments: Record<string, SafetensorsTensor> = {};
    for (const [name, p] of this.task.params) {
      moments[`exp_avg.${name}`] = { dtype: "F32", shape: p.dims, data: opt.expAvg[name] };
      moments[`exp_avg_sq.${name}`] = { dtype: "F32", shape: p.dims, data: opt.expAvgSq[name] };
    }
    writeSafetensors(join(tmpDir, OPTIMIZER_FILE), moments);
    this.task.save(tmpDir, false);
    this.state.rngState = this.rng.getState();
    writeFileSync(join(tmpDir, STATE_FILE), JSON.stringify(this.state, null, 2));

    rmSync(finalDir, { recursive: true, force: true });
    renameSync(tmpDir, finalDir);
    for (const old of checkpointDirs(outDir).slice(0, -this.options.keepCheckpoints)) {
      rmSync(old.dir, { recursive: true, force: true });
    }
    return finalDir;
  }

  private logMetrics(entry: Record<string, number | string>): void {
    appendFileSync(this.metricsPath, JSON.stringify(entry) + "\n");
  }

  async evaluate(): Promise<Metrics | null> {
    if (this.task.eval.length === 0) return null;
    const all: Metrics[] = [];
    for (let i = 0; i < this.task.eval.length; i += this.options.batchSize) {
      all.push(await this.task.evaluate(this.task.eval.slice(i, i + this.options.batchSize)));
    }
    // Weight each batch by its size so a short last batch counts for what it holds.
    const sizes = all.map((_, b) =>
      Math.min(this.options.batchSize, this.task.eval.length - b * this.options.batchSize),
    );
    const out: Metrics = {};
    all.forEach((m, b) => {
      for (const [k, v] of Object.entries(m))
        out[k] = (out[k] ?? 0) + (v * sizes[b]) / this.task.eval.length;
    });
    return out;
  }

  async run(): Promise<TrainSummary> {
    const release = lockOutDir(this.options.outDir);
    try {
      return await this.runLocked();
    } finally {
      release();
    }
  }

  private async runLocked(): Promise<TrainSummary> {
    this.prepareOutDir();
    const o = this.options;
    const total = this.state.totalSteps;
    const warmup = warmupStepsFromRatio(o.warmupRatio, total);
    const lengths = this.task.train.map((e) => this.task.lengthOf(e));
    const start = Date.now();
    const startStep = this.state.step;
    let lastCheckpoint: string | null = checkpointDirs(o.outDir).at(-1)?.dir ?? null;
    let last: Metrics = {};
    let evalMetrics: Metrics | null = null;
    const progress = new Progress(total, this.state.step);

    let batches = epochBatches(lengths, o.batchSize, o.seed, this.state.epoch);
    while (this.state.step < total) {
      const lr = learningRate(o.schedule, this.state.step, {
        baseLr: o.lr,
        warmupSteps: warmup,
        totalSteps: total,
      });
      const accumulated = new Map<string, Float32Array>();
      const stepMetrics: Metrics[] = [];
      for (let micro = 0; micro < o.gradAccum; micro++) {
        if (this.state.batchIndex >= batches.length) {
          this.state.epoch++;
          this.state.batchIndex = 0;
          batches = epochBatches(lengths, o.batchSize, o.seed, this.state.epoch);
        }
        const batch = batches[this.state.batchIndex++].map((i) => this.task.train[i]);
        const result = await this.task.step(batch, this.rng);
        if (!Number.isFinite(result.loss)) this.failNonFinite("loss", result.loss, lastCheckpoint);
        for (const [name, g] of result.grads) {
          const acc = accumulated.get(name);
          if (acc === undefined)
            accumulated.set(
              name,
              Float32Array.from(g, (v) => v / o.gradAccum),
            );
          else for (let i = 0; i < g.length; i++) acc[i] += g[i] / o.gradAccum;
        }
        stepMetrics.push({ loss: result.loss, ...result.metrics });
      }

      const grads: Record<string, Float32Array> = Object.fromEntries(accumulated);
      const gradNorm = clipGradNorm(
        Object.values(grads),
        o.maxGradNorm > 0 ? o.maxGradNorm : Infinity,
      );
      if (!Number.isFinite(gradNorm)) this.failNonFinite("gradient norm", gradNorm, lastCheckpoint);
      this.optimizer.step(grads, lr);
      this.state.step++;

      last = { ...meanMetrics(stepMetrics), grad_norm: gradNorm, lr };
      this.logMetrics({ step: this.state.step, epoch: this.state.epoch, ...last });
      progress.update(this.state.step, last);

      const isLast = this.state.step === total;
      if ((o.evalEvery > 0 && this.state.step % o.evalEvery === 0) || isLast) {
        evalMetrics = await this.evaluate();
        if (evalMetrics !== null) {
          const prefixed = Object.fromEntries(
            Object.entries(evalMetrics).map(([k, v]) => [`eval/${k}`, v]),
          );
          this.logMetrics({ step: this.state.step, ...prefixed });
          progress.note(`eval at step ${this.state.step}: ${formatMetrics(evalMetrics)}`);
        }
      }
      if ((o.saveEvery > 0 && this.state.step % o.saveEvery === 0) || isLast) {
        lastCheckpoint = this.saveCheckpoint();
      }
    }
    progress.stop();

    this.task.save(o.outDir, true);
    const summary: TrainSummary = {
      steps: this.state.step,
      seconds: (Date.now() - start) / 1000,
      final: last,
      eval: evalMetrics,
      outDir: o.outDir,
    };
    writeFileSync(join(o.outDir, "training_summary.json"), JSON.stringify(summary, null, 2));
    log.info(
      { steps: this.state.step - startStep, seconds: summary.seconds.toFixed(1), ...summary.eval },
      "training finished",
    );
    return summary;
  }

  private failNonFinite(what: string, value: number, lastCheckpoint: string | null): never {
    const where = `step ${this.state.step + 1} (epoch ${this.state.epoch}, batch ${this.state.batchIndex})`;
    const kept = lastCheckpoint
      ? `the last good checkpoint is ${lastCheckpoint}`
      : "no checkpoint was written yet";
    this.logMetrics({ step: this.state.step + 1, error: `${what} is ${value}` });
    throw new MidpoError(
      `training stopped: the ${what} became ${value} at ${where}; ${kept}. ` +
        `Lower --lr or check the data for empty or extreme examples, then start over with ` +
        `another --out (or remove this one). --resume continues only a run with the same ` +
        `arguments, which would reach the same ${what}`,
    );
  }
}

export function formatMetrics(m: Metrics): string {
  return Object.entries(m)
    .map(([k, v]) => `${k}=${Math.abs(v) >= 1e-3 || v === 0 ? v.toFixed(4) : v.toExponential(2)}`)
    .join(" ");
}
