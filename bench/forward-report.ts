// Turns the phase results of both sides into the summary rows of the forward benchmark: rates,
// midpo / PyTorch ratios, the targets they are judged against, and a markdown table.
//
// Rates use the fastest of the timed runs ("best of N"), because other processes on the
// machine can only slow a run down. Each rate row also carries the median, and the JSON keeps
// every run. When PyTorch ran a phase with several thread counts, its fastest run counts.

import {
  median,
  type DecodeResult,
  type MatmulResult,
  type PhaseResult,
  type PrefillResult,
} from "./forward-plan.js";

/** One child process: its result plus what the parent saw while it ran. */
export interface PhaseRun {
  result: PhaseResult;
  wall_s: number;
  /** CPU time of all other processes during the child's life, divided by its wall time. */
  other_cpu_cores: number;
}

export interface SummaryRow {
  measure: string;
  unit: string;
  midpo: number | null;
  pytorch: number | null;
  /** The same rates from the median run instead of the fastest; absent for non-rates. */
  midpo_median?: number;
  pytorch_median?: number;
  /** torch intra-op threads of the PyTorch run shown. */
  pytorch_threads?: number | null;
  /** CPU load of other processes, in cores, while each side's run shown was measured. */
  other_cpu_cores?: { midpo: number; pytorch: number };
  /** midpo / PyTorch; null for non-rates, and for speedups when the baseline is invalid. */
  ratio: number | null;
  target: string;
  /** null: no target, or not judged because the PyTorch baseline is invalid. */
  met: boolean | null;
}

export interface SummaryInputs {
  runs: PhaseRun[];
  /** Bytes of all weights as float32. */
  weightBytes: number;
  /** KV cache bytes for a decode batch of the given size (prompt + new tokens). */
  kvCacheBytes: (batch: number) => number;
  minTorchGflops: number;
}

export const SPEEDUP_TARGET = 1.5;
export const RSS_TARGET_FACTOR = 1.3;

const MIB = 1024 * 1024;

type Pick = (values: number[]) => number;
const fastest: Pick = (values) => Math.min(...values);

// ---------------------------------------------------------------------------------------------
// Rates

function matmulGflops(r: MatmulResult, pick: Pick): number {
  return (2 * r.m * r.k * r.n * r.runs) / pick(r.seconds) / 1e9;
}

function prefillTokensPerSecond(r: PrefillResult, pick: Pick): number {
  return (r.batch * r.seq) / pick(r.seconds);
}

function decodeTokensPerSecond(r: DecodeResult, pick: Pick): number {
  return (r.batch * r.decode_steps) / pick(r.decode_seconds);
}

function endToEndTokensPerSecond(r: DecodeResult, pick: Pick): number {
  const totals = r.prompt_seconds.map((p, i) => p + r.decode_seconds[i]);
  return (r.batch * r.new_tokens) / pick(totals);
}

/** Seconds of the fastest timed run, which decides between runs of one phase. */
export function fastestSeconds(r: PhaseResult): number {
  return fastest(r.phase === "decode" ? r.decode_seconds : r.seconds);
}

/** Finds the fastest result of `side` for a phase (and decode batch), across thread counts. */
function find<T extends PhaseResult>(
  runs: PhaseRun[],
  side: PhaseResult["side"],
  phase: T["phase"],
  batch?: number,
): T {
  const matches = runs
    .map((r) => r.result)
    .filter(
      (r) =>
        r.side === side &&
        r.phase === phase &&
        (batch === undefined || (r as DecodeResult).batch === batch),
    );
  if (matches.length === 0) throw new Error(`no ${side} ${phase} result in the runs`);
  matches.sort((a, b) => fastestSeconds(a) - fastestSeconds(b));
  return matches[0] as T;
}

// ---------------------------------------------------------------------------------------------
// Rows

/** True when the PyTorch matmul rate shows a real BLAS, so ratios against it mean something. */
export function baselineIsValid(inputs: SummaryInputs): boolean {
  const torch = find<MatmulResult>(inputs.runs, "pytorch", "matmul");
  return matmulGflops(torch, fastest) >= inputs.minTorchGflops;
}

/** Returns the other processes' load, in cores, during the run that produced `result`. */
function otherLoad(runs: PhaseRun[], result: PhaseResult): number {
  return runs.find((r) => r.result === result)?.other_cpu_cores ?? Number.NaN;
}

function rateRow<T extends PhaseResult>(
  measure: string,
  unit: string,
  rate: (r: T, pick: Pick) => number,
  midpo: T,
  pytorch: T,
  judged: { runs: PhaseRun[]; valid: boolean; target: number | null },
): SummaryRow {
  const ratio = rate(midpo, fastest) / rate(pytorch, fastest);
  const { valid, target } = judged;
  let targetText = "";
  if (target !== null) targetText = valid ? `>= ${target}x` : `>= ${target}x (not judged)`;
  return {
    measure,
    unit,
    midpo: rate(midpo, fastest),
    pytorch: rate(pytorch, fastest),
    midpo_median: rate(midpo, median),
    pytorch_median: rate(pytorch, median),
    pytorch_threads: pytorch.threads,
    other_cpu_cores: {
      midpo: otherLoad(judged.runs, midpo),
      pytorch: otherLoad(judged.runs, pytorch),
    },
    ratio: valid ? ratio : null,
    target: targetText,
    met: target === null || !valid ? null : ratio >= target,
  };
}

function noteRow(measure: string, unit: string, midpo: number, pytorch: number | null) {
  const row: SummaryRow = { measure, unit, midpo, pytorch, ratio: null, target: "", met: null };
  return row;
}

export function summarize(inputs: SummaryInputs): SummaryRow[] {
  const { runs } = inputs;
  const valid = baselineIsValid(inputs);
  const rows: SummaryRow[] = [];

  const matmul = find<MatmulResult>(runs, "midpo", "matmul");
  const matmulRow = rateRow(
    `matmul [${matmul.m}x${matmul.k}] @ [${matmul.k}x${matmul.n}] float32`,
    "GFLOP/s",
    matmulGflops,
    matmul,
    find<MatmulResult>(runs, "pytorch", "matmul"),
    { runs, valid: true, target: null },
  );
  matmulRow.target = `PyTorch >= ${inputs.minTorchGflops} (real BLAS)`;
  matmulRow.met = valid;
  rows.push(matmulRow);

  const prefill = find<PrefillResult>(runs, "midpo", "prefill");
  rows.push(
    rateRow(
      `prefill ${prefill.batch}x${prefill.seq}: log-probability of every next token`,
      "tokens/s",
      prefillTokensPerSecond,
      prefill,
      find<PrefillResult>(runs, "pytorch", "prefill"),
      { runs, valid, target: SPEEDUP_TARGET },
    ),
  );

  const decodeBatches = runs
    .map((r) => r.result)
    .filter((r): r is DecodeResult => r.side === "midpo" && r.phase === "decode")
    .map((r) => r.batch);
  for (const batch of decodeBatches) {
    const midpo = find<DecodeResult>(runs, "midpo", "decode", batch);
    const pytorch = find<DecodeResult>(runs, "pytorch", "decode", batch);
    const steps = `${midpo.decode_steps} steps after a ${midpo.prompt_length}-token prompt`;
    rows.push(
      rateRow(
        `decode batch ${batch}: ${steps}`,
        "tokens/s",
        decodeTokensPerSecond,
        midpo,
        pytorch,
        { runs, valid, target: SPEEDUP_TARGET },
      ),
    );
    rows.push(
      rateRow(
        `generate batch ${batch} end to end: prompt + ${midpo.new_tokens} tokens`,
        "tokens/s",
        endToEndTokensPerSecond,
        midpo,
        pytorch,
        { runs, valid, target: null },
      ),
    );
  }

  rows.push(memoryRow("prefill", prefill, find(runs, "pytorch", "prefill"), 0, inputs));
  for (const batch of decodeBatches) {
    rows.push(
      memoryRow(
        `decode batch ${batch}`,
        find(runs, "midpo", "decode", batch),
        find(runs, "pytorch", "decode", batch),
        inputs.kvCacheBytes(batch),
        inputs,
      ),
    );
  }

  for (const batch of decodeBatches) {
    const midpo = find<DecodeResult>(runs, "midpo", "decode", batch);
    const sum = (values: number[]) => values.reduce((a, b) => a + b, 0);
    const share = sum(midpo.ort_run_seconds ?? []) / sum(midpo.decode_seconds);
    rows.push(
      noteRow(`midpo decode batch ${batch}: share of time in ORT run`, "%", 100 * share, null),
    );
  }

  rows.push(
    noteRow(
      "model load: safetensors to memory",
      "s",
      prefill.load_s,
      find<PrefillResult>(runs, "pytorch", "prefill").load_s,
    ),
  );
  rows.push(noteRow("midpo session creation, prefill graph", "s", prefill.session_create_s, null));
  const decode = find<DecodeResult>(runs, "midpo", "decode", decodeBatches[0]);
  rows.push(noteRow("midpo session creation, decode graph", "s", decode.session_create_s, null));
  return rows;
}

/** Builds the peak RSS row of one phase, judging midpo against weights + KV cache. */
function memoryRow(
  phase: string,
  midpo: PhaseResult,
  pytorch: PhaseResult,
  kvBytes: number,
  inputs: SummaryInputs,
): SummaryRow {
  const limit = RSS_TARGET_FACTOR * (inputs.weightBytes + kvBytes);
  const mib = (bytes: number) => (bytes / MIB).toFixed(0);
  return {
    measure: `peak RSS, ${phase} process`,
    unit: "MiB",
    midpo: midpo.peak_rss_bytes / MIB,
    pytorch: pytorch.peak_rss_bytes / MIB,
    pytorch_threads: pytorch.threads,
    ratio: null,
    target:
      `midpo <= ${RSS_TARGET_FACTOR} x (weights ${mib(inputs.weightBytes)} + ` +
      `KV cache ${mib(kvBytes)}) = ${mib(limit)}`,
    met: midpo.peak_rss_bytes <= limit,
  };
}

/** Compares what both sides computed: log-probabilities at prefill, greedy tokens at decode. */
export function agreement(runs: PhaseRun[]): Record<string, number | boolean> {
  const midpo = find<PrefillResult>(runs, "midpo", "prefill");
  const pytorch = find<PrefillResult>(runs, "pytorch", "prefill");
  const maxDifference = (a: number[], b: number[]) =>
    Math.max(...a.map((v, i) => Math.abs(v - b[i])));
  const out: Record<string, number | boolean> = {
    prefill_max_abs_diff_row_logprob_sum: maxDifference(
      midpo.row_logprob_sums,
      pytorch.row_logprob_sums,
    ),
    prefill_max_abs_diff_first_logprobs: maxDifference(
      midpo.first_logprobs,
      pytorch.first_logprobs,
    ),
  };
  for (const run of runs) {
    const r = run.result;
    if (r.side !== "midpo" || r.phase !== "decode") continue;
    const other = find<DecodeResult>(runs, "pytorch", "decode", r.batch);
    out[`decode_batch_${r.batch}_first_tokens_equal`] =
      JSON.stringify(r.first_tokens) === JSON.stringify(other.first_tokens);
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
  return `${load.midpo.toFixed(2)} / ${load.pytorch.toFixed(2)}`;
}

function metText(met: boolean | null): string {
  if (met === null) return "";
  return met ? "yes" : "**no**";
}

export function markdownTable(rows: SummaryRow[]): string {
  const header =
    "| measure | unit | midpo | PyTorch | torch threads | other load, cores | midpo / PyTorch " +
    "| target | met |";
  const rule = "| --- | --- | ---: | ---: | ---: | ---: | ---: | --- | --- |";
  const lines = rows.map((r) => {
    const cells = [
      r.measure,
      r.unit,
      formatNumber(r.midpo),
      formatNumber(r.pytorch),
      r.pytorch_threads == null ? "" : String(r.pytorch_threads),
      loadText(r.other_cpu_cores),
      r.ratio === null ? "" : `${r.ratio.toFixed(2)}x`,
      r.target,
      metText(r.met),
    ];
    return `| ${cells.join(" | ")} |`;
  });
  return [header, rule, ...lines].join("\n");
}
