// Turns the results of the training benchmarks' processes into summary rows: times, rates,
// midpo / PyTorch ratios, model FLOP utilisation, memory, and the targets they are judged by.
//
// Times and rates use the fastest timed run of a process ("best of N"), because other
// processes on the machine can only slow a run down. Each row also carries the median. When
// PyTorch ran with several thread counts, its fastest process counts. Targets are judged only
// when PyTorch's matmul rate shows a real BLAS.

import { median } from "./forward-plan.js";
import type { FlopEstimate } from "./train-flops.js";
import type {
  Bench,
  MatmulTiming,
  ScoreResult,
  StepMode,
  StepResult,
  TrainBenchResult,
} from "./train-plan.js";

/** One line of a benchmark's table. */
export interface SummaryRow {
  measure: string;
  unit: string;
  midpo: number | null;
  pytorch: number | null;
  /** The same values from the median timed run instead of the fastest, where they differ. */
  midpo_median?: number;
  pytorch_median?: number;
  /** Intra-op threads of the processes shown: ORT's for midpo, torch's for PyTorch. */
  threads?: { midpo: number | null; pytorch: number | null };
  /** CPU cores that other processes used while each side's process shown ran. */
  other_cpu_cores?: { midpo: number; pytorch: number | null };
  /** midpo / PyTorch; null where it means nothing, and for targets the run cannot judge. */
  ratio: number | null;
  target: string;
  /** null: no target, or not judged because the PyTorch baseline is invalid. */
  met: boolean | null;
}

/** One measuring process: its result plus what the parent saw while it ran. */
export interface ChildRun {
  result: TrainBenchResult;
  wall_s: number;
  /** CPU time of all other processes during the child's life, divided by its wall time. */
  other_cpu_cores: number;
  /** 1-minute load average when the child started. */
  load_before: number;
}

/** midpo's step time over PyTorch's, at most. */
export const STEP_TIME_TARGET = 0.5;
/** midpo's scored sequences per second over PyTorch's, at least. */
export const SCORE_SPEEDUP_TARGET = 1.5;
/** midpo's achieved FLOP/s over its own matmul rate, at least. */
export const MFU_TARGET = 0.4;

export interface ReportInputs {
  runs: ChildRun[];
  minTorchGflops: number;
  /** FLOPs of one timed run of a result. */
  flops: (result: TrainBenchResult) => FlopEstimate;
  /** Trainable parameters of each step benchmark, for the optimizer row. */
  trainableParams: Partial<Record<Bench, number>>;
}

type Statistic = (values: number[]) => number;
const fastest: Statistic = (values) => Math.min(...values);
const MIB = 1024 * 1024;

function matmulGflops(m: MatmulTiming, pick: Statistic): number {
  return (2 * m.m * m.k * m.n * m.runs) / pick(m.seconds) / 1e9;
}

function resultsOf(
  inputs: ReportInputs,
  side: TrainBenchResult["side"],
  bench: Bench,
  mode?: StepMode,
) {
  return inputs.runs
    .map((r) => r.result)
    .filter(
      (r) =>
        r.side === side &&
        r.bench === bench &&
        (mode === undefined || (r as StepResult).mode === mode),
    );
}

/** Returns the fastest process of a side for a benchmark (and mode), or null when none ran. */
function best<T extends TrainBenchResult>(
  inputs: ReportInputs,
  side: TrainBenchResult["side"],
  bench: Bench,
  mode?: StepMode,
): T | null {
  const matches = resultsOf(inputs, side, bench, mode);
  matches.sort((a, b) => fastest(a.seconds) - fastest(b.seconds));
  return (matches[0] as T | undefined) ?? null;
}

/** True when PyTorch's best matmul rate in this benchmark shows a real BLAS. */
export function baselineIsValid(inputs: ReportInputs, bench: Bench): boolean {
  const rates = resultsOf(inputs, "pytorch", bench).map((r) => matmulGflops(r.matmul, fastest));
  return rates.length > 0 && Math.max(...rates) >= inputs.minTorchGflops;
}

// ---------------------------------------------------------------------------------------------
// Rows

interface Judged {
  valid: boolean;
  /** "max": midpo / PyTorch must be at most `value`; "min": at least. */
  target: { kind: "max" | "min"; value: number } | null;
}

/** Builds the row of one measure on both sides, from the fastest and the median timed run. */
function compareRow(
  inputs: ReportInputs,
  measure: string,
  unit: string,
  value: (r: TrainBenchResult, pick: Statistic) => number,
  midpo: TrainBenchResult,
  pytorch: TrainBenchResult,
  judged: Judged,
): SummaryRow {
  const ratio = value(midpo, fastest) / value(pytorch, fastest);
  const { valid, target } = judged;
  let targetText = "";
  let met: boolean | null = null;
  if (target !== null) {
    targetText = `${target.kind === "max" ? "<=" : ">="} ${target.value}x`;
    if (!valid) targetText += " (not judged)";
    else met = target.kind === "max" ? ratio <= target.value : ratio >= target.value;
  }
  return {
    measure,
    unit,
    midpo: value(midpo, fastest),
    pytorch: value(pytorch, fastest),
    midpo_median: value(midpo, median),
    pytorch_median: value(pytorch, median),
    ...processFacts(inputs, { midpo, pytorch }),
    ratio: valid ? ratio : null,
    target: targetText,
    met,
  };
}

/** The processes a row's values come from. */
interface Sources {
  midpo: TrainBenchResult;
  pytorch: TrainBenchResult | null;
}

/** Results made from part of a process's result (its timed runs with sharing off), by source. */
const derivedFrom = new WeakMap<TrainBenchResult, TrainBenchResult>();

/** Threads and other processes' load of a row's processes, for the table. */
function processFacts(inputs: ReportInputs, sources: Sources) {
  const load = (r: TrainBenchResult) => {
    const source = derivedFrom.get(r) ?? r;
    return inputs.runs.find((run) => run.result === source)!.other_cpu_cores;
  };
  const { midpo, pytorch } = sources;
  return {
    threads: { midpo: midpo.threads, pytorch: pytorch?.threads ?? null },
    other_cpu_cores: { midpo: load(midpo), pytorch: pytorch === null ? null : load(pytorch) },
  };
}

function noteRow(
  measure: string,
  unit: string,
  midpo: number | null,
  pytorch: number | null,
  facts: Pick<SummaryRow, "threads" | "other_cpu_cores"> = {},
): SummaryRow {
  return { measure, unit, midpo, pytorch, ...facts, ratio: null, target: "", met: null };
}

function matmulRow(inputs: ReportInputs, bench: Bench, valid: boolean): SummaryRow {
  const rate = (side: TrainBenchResult["side"]) =>
    Math.max(...resultsOf(inputs, side, bench).map((r) => matmulGflops(r.matmul, fastest)));
  const shape = resultsOf(inputs, "midpo", bench)[0].matmul;
  return {
    measure:
      `matmul chain, ${shape.runs} products [${shape.m}x${shape.k}] @ [${shape.k}x${shape.n}] ` +
      `and back, float32, best process`,
    unit: "GFLOP/s",
    midpo: rate("midpo"),
    pytorch: rate("pytorch"),
    ratio: null,
    target: `PyTorch >= ${inputs.minTorchGflops} (real BLAS)`,
    met: valid,
  };
}

/** Achieved GFLOP/s of a result's fastest run, and its share of the same process's matmul rate. */
function utilisation(inputs: ReportInputs, r: TrainBenchResult, pick: Statistic) {
  const gflops = inputs.flops(r).flops / pick(r.seconds) / 1e9;
  return { gflops, mfu: (100 * gflops) / matmulGflops(r.matmul, fastest) };
}

function utilisationRows(
  inputs: ReportInputs,
  label: string,
  midpo: TrainBenchResult,
  pytorch: TrainBenchResult | null,
): SummaryRow[] {
  const m = utilisation(inputs, midpo, fastest);
  const p = pytorch === null ? null : utilisation(inputs, pytorch, fastest);
  const facts = processFacts(inputs, { midpo, pytorch });
  const mfu = noteRow(
    `${label}: model FLOP utilisation (of the same process's matmul rate)`,
    "%",
    m.mfu,
    p?.mfu ?? null,
    facts,
  );
  mfu.target = `midpo >= ${100 * MFU_TARGET} %`;
  mfu.met = m.mfu >= 100 * MFU_TARGET;
  const rate = noteRow(`${label}: achieved`, "GFLOP/s", m.gflops, p?.gflops ?? null, facts);
  return [rate, mfu];
}

function rssRow(
  inputs: ReportInputs,
  label: string,
  midpo: TrainBenchResult,
  pytorch: TrainBenchResult | null,
) {
  const row = noteRow(
    `${label}: peak RSS of the process`,
    "MiB",
    midpo.peak_rss_bytes / MIB,
    pytorch === null ? null : pytorch.peak_rss_bytes / MIB,
    processFacts(inputs, { midpo, pytorch }),
  );
  if (pytorch !== null) row.ratio = midpo.peak_rss_bytes / pytorch.peak_rss_bytes;
  return row;
}

const sum = (values: number[]) => values.reduce((a, b) => a + b, 0);

function stepTime(r: TrainBenchResult, pick: Statistic): number {
  return pick(r.seconds);
}

/** Rows of the DPO step or router step benchmark. */
export function stepRows(inputs: ReportInputs, bench: "dpo-step" | "router-step"): SummaryRow[] {
  const valid = baselineIsValid(inputs, bench);
  const judged: Judged = { valid, target: { kind: "max", value: STEP_TIME_TARGET } };
  const midpoStep = best<StepResult>(inputs, "midpo", bench, "step");
  const torchStep = best<StepResult>(inputs, "pytorch", bench, "step");
  const midpoRef = best<StepResult>(inputs, "midpo", bench, "step+ref");
  const torchRef = best<StepResult>(inputs, "pytorch", bench, "step+ref");
  if (midpoStep === null || torchStep === null) {
    throw new Error(`${bench}: a step-mode result of midpo or PyTorch is missing`);
  }
  const batch = `${midpoStep.rows}x${midpoStep.width}`;
  const rows: SummaryRow[] = [matmulRow(inputs, bench, valid)];

  // The step-time target compares midpo's step as its trainer runs it (reference log-probs from
  // the cache) with PyTorch's step as reference implementations run it (a reference forward
  // pass on every step). The two like-for-like rows are context, without a target, unless
  // the run has no step+ref results to form the first comparison.
  const hasRef = midpoRef !== null && torchRef !== null;
  const context: Judged = { valid, target: null };
  rows.push(
    compareRow(
      inputs,
      `step ${batch}, reference log-probs cached on both sides: policy forward + backward`,
      "s",
      stepTime,
      midpoStep,
      torchStep,
      hasRef ? context : judged,
    ),
  );
  if (hasRef) {
    rows.push(
      compareRow(
        inputs,
        `step ${batch} + reference forward on every step, on both sides`,
        "s",
        stepTime,
        midpoRef,
        torchRef,
        context,
      ),
    );
    rows.push(
      compareRow(
        inputs,
        `midpo step (cached reference) vs PyTorch step + reference forward: each as its trainer runs`,
        "s",
        stepTime,
        midpoStep,
        torchRef,
        judged,
      ),
    );
    rows.push(
      noteRow(
        "of step + reference: the reference forward",
        "s",
        fastest(midpoRef.ref_seconds),
        fastest(torchRef.ref_seconds),
        processFacts(inputs, { midpo: midpoRef, pytorch: torchRef }),
      ),
    );
  }

  rows.push(...utilisationRows(inputs, "step, cached reference", midpoStep, torchStep));
  if (midpoRef !== null) {
    rows.push(...utilisationRows(inputs, "step + reference forward", midpoRef, torchRef));
  }

  const ortShare = (r: StepResult) =>
    (100 * sum(r.ort_seconds ?? [])) / sum(r.seconds.map((s, i) => s - r.ref_seconds[i]));
  rows.push(
    noteRow(
      "midpo step: share of its time inside ORT session.run",
      "%",
      ortShare(midpoStep),
      null,
      processFacts(inputs, { midpo: midpoStep, pytorch: null }),
    ),
  );

  const trainable = inputs.trainableParams[bench];
  rows.push(
    compareRow(
      inputs,
      `optimizer update after the step: clip_grad_norm + AdamW over ${trainable} parameters`,
      "s",
      (r, pick) => pick((r as StepResult).optimizer_seconds),
      midpoStep,
      torchStep,
      { valid, target: null },
    ),
  );

  rows.push(rssRow(inputs, "step, cached reference", midpoStep, torchStep));
  if (midpoRef !== null) rows.push(rssRow(inputs, "step + reference forward", midpoRef, torchRef));
  rows.push(...setupRows(inputs, midpoStep, torchStep));
  return rows;
}

/** Rows of the scoring benchmark. */
export function scoreRows(inputs: ReportInputs): SummaryRow[] {
  const valid = baselineIsValid(inputs, "score");
  const midpo = best<ScoreResult>(inputs, "midpo", "score");
  const pytorch = best<ScoreResult>(inputs, "pytorch", "score");
  if (midpo === null || pytorch === null) throw new Error("score: a result is missing");
  const rows: SummaryRow[] = [matmulRow(inputs, "score", valid)];
  const perSecond = (count: (r: ScoreResult) => number) => (r: TrainBenchResult, pick: Statistic) =>
    count(r as ScoreResult) / pick(r.seconds);

  const width = midpo.tokens / midpo.sequences;
  const prompt = midpo.prompt_length ?? 0;
  const shape =
    prompt > 0
      ? `${midpo.sequences} sequences of ${width} tokens, pairs sharing a ${prompt}-token prompt`
      : `${midpo.sequences} sequences of ${width} tokens`;
  rows.push(
    compareRow(
      inputs,
      `end scores: ${shape}, midpo default (each shared prompt runs once)`,
      "sequences/s",
      perSecond((r) => r.sequences),
      midpo,
      pytorch,
      { valid, target: { kind: "min", value: SCORE_SPEEDUP_TARGET } },
    ),
  );
  // The same sequences with prompt sharing off: both sides then do the same arithmetic.
  const alone: ScoreResult | null =
    midpo.alone === undefined
      ? null
      : { ...midpo, seconds: midpo.alone.seconds, ort_seconds: midpo.alone.ort_seconds };
  if (alone !== null) derivedFrom.set(alone, midpo);
  if (alone !== null) {
    rows.push(
      compareRow(
        inputs,
        "end scores, same sequences, midpo with prompt sharing off (every sequence on its own)",
        "sequences/s",
        perSecond((r) => r.sequences),
        alone,
        pytorch,
        { valid, target: null },
      ),
    );
  }
  // Model FLOPs count every token of every sequence, and runs with sharing skip some of them,
  // so utilisation is reported for the runs without sharing.
  const full = alone ?? midpo;
  rows.push(
    ...utilisationRows(
      inputs,
      alone === null ? "end scores" : "end scores, sharing off",
      full,
      pytorch,
    ),
  );
  rows.push(
    noteRow(
      "midpo: share of its time inside ORT session.run",
      "%",
      (100 * sum(midpo.ort_seconds ?? [])) / sum(midpo.seconds),
      null,
      processFacts(inputs, { midpo, pytorch: null }),
    ),
  );
  rows.push(rssRow(inputs, "end scores", midpo, pytorch));
  rows.push(...setupRows(inputs, midpo, pytorch));
  return rows;
}

/** Setup costs, paid once per process before the first step: load, graph, session, warm-up. */
function setupRows(
  inputs: ReportInputs,
  midpo: TrainBenchResult,
  pytorch: TrainBenchResult,
): SummaryRow[] {
  const facts = processFacts(inputs, { midpo, pytorch });
  const rows = [noteRow("setup: model load into memory", "s", midpo.load_s, pytorch.load_s, facts)];
  if (midpo.graph_build_s !== undefined) {
    rows.push(
      noteRow(
        "setup: midpo graph build in JavaScript, autodiff included",
        "s",
        midpo.graph_build_s,
        null,
      ),
    );
  }
  if (midpo.onnx_serialize_s !== undefined) {
    rows.push(
      noteRow(
        "setup: midpo ONNX serialisation of the step graph, once",
        "s",
        midpo.onnx_serialize_s,
        null,
      ),
    );
  }
  rows.push(
    noteRow(
      "setup: midpo ORT session creation, serialisation included",
      "s",
      midpo.session_create_s,
      null,
    ),
  );
  rows.push(noteRow("setup: warm-up run", "s", midpo.warmup_s, pytorch.warmup_s, facts));
  return rows;
}

// ---------------------------------------------------------------------------------------------
// Agreement

const maxAbsDiff = (a: number[], b: number[]) => Math.max(...a.map((v, i) => Math.abs(v - b[i])));

/** Compares what the two sides computed at the same initial parameters. */
export function agreement(inputs: ReportInputs, bench: Bench): Record<string, number> {
  if (bench === "score") {
    const midpo = best<ScoreResult>(inputs, "midpo", "score")!;
    const pytorch = best<ScoreResult>(inputs, "pytorch", "score")!;
    const out: Record<string, number> = {
      scores_max_abs_diff: maxAbsDiff(midpo.scores, pytorch.scores),
    };
    if (midpo.alone !== undefined) {
      out.sharing_on_off_scores_max_abs_diff = midpo.alone.scores_max_abs_diff;
    }
    return out;
  }
  const midpo = best<StepResult>(inputs, "midpo", bench, "step")!;
  const pytorch = best<StepResult>(inputs, "pytorch", bench, "step")!;
  let gradSampleRelDiff = 0;
  for (const [name, values] of Object.entries(midpo.grad_samples)) {
    const other = pytorch.grad_samples[name];
    const scale = Math.max(...other.map(Math.abs));
    gradSampleRelDiff = Math.max(gradSampleRelDiff, maxAbsDiff(values, other) / scale);
  }
  const out: Record<string, number> = {
    loss_abs_diff: Math.abs(midpo.loss - pytorch.loss),
    logps_max_abs_diff: maxAbsDiff(midpo.logps, pytorch.logps),
    ref_logps_max_abs_diff: maxAbsDiff(midpo.ref_logps, pytorch.ref_logps),
    grad_norm_rel_diff: Math.abs(midpo.grad_norm - pytorch.grad_norm) / pytorch.grad_norm,
    grad_samples_max_rel_diff: gradSampleRelDiff,
  };
  if (midpo.mean_alpha !== undefined && pytorch.mean_alpha !== undefined) {
    out.mean_alpha_abs_diff = Math.abs(midpo.mean_alpha - pytorch.mean_alpha);
    out.mean_beta_abs_diff = Math.abs(midpo.mean_beta! - pytorch.mean_beta!);
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Table

function formatNumber(value: number | null): string {
  if (value === null) return "";
  if (Math.abs(value) >= 100) return value.toFixed(0);
  if (Math.abs(value) >= 10) return value.toFixed(1);
  return value.toFixed(2);
}

function loadText(load: SummaryRow["other_cpu_cores"]): string {
  if (load === undefined) return "";
  return `${load.midpo.toFixed(2)} / ${load.pytorch === null ? "-" : load.pytorch.toFixed(2)}`;
}

function threadsText(threads: SummaryRow["threads"]): string {
  if (threads === undefined) return "";
  const text = (n: number | null) => (n === null ? "-" : String(n));
  return `${text(threads.midpo)} / ${text(threads.pytorch)}`;
}

function metText(met: boolean | null): string {
  if (met === null) return "";
  return met ? "yes" : "**no**";
}

export function markdownTable(rows: SummaryRow[]): string {
  const header =
    "| measure | unit | midpo | PyTorch | threads (midpo / PyTorch) " +
    "| other load, cores (midpo / PyTorch) " +
    "| midpo / PyTorch | target | met |";
  const rule = "| --- | --- | ---: | ---: | ---: | ---: | ---: | --- | --- |";
  const lines = rows.map((r) => {
    const cells = [
      r.measure,
      r.unit,
      formatNumber(r.midpo),
      formatNumber(r.pytorch),
      threadsText(r.threads),
      loadText(r.other_cpu_cores),
      r.ratio === null ? "" : `${r.ratio.toFixed(2)}x`,
      r.target,
      metText(r.met),
    ];
    return `| ${cells.join(" | ")} |`;
  });
  return [header, rule, ...lines].join("\n");
}
