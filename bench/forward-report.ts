// Turns the phase results of both sides into the summary rows of the forward benchmark: rates,
// midpo / PyTorch ratios, the targets they are judged against, and a markdown table.
//
// Rates use the fastest of the timed runs ("best of N"), because other processes on the
// machine can only slow a run down; the JSON keeps every run and the medians as well.

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
  /** midpo / PyTorch for rates, null where a ratio means nothing or the baseline is invalid. */
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

const MB = 1024 * 1024;

function find<T extends PhaseResult>(
  runs: PhaseRun[],
  side: PhaseResult["side"],
  phase: T["phase"],
  batch?: number,
): PhaseRun & { result: T } {
  const run = runs.find(
    (r) =>
      r.result.side === side &&
      r.result.phase === phase &&
      (batch === undefined || (r.result as DecodeResult).batch === batch),
  );
  if (run === undefined) throw new Error(`no ${side} ${phase} result in the runs`);
  return run as PhaseRun & { result: T };
}

export function matmulGflops(r: MatmulResult, pick: (s: number[]) => number): number {
  return (2 * r.m * r.k * r.n * r.runs) / pick(r.seconds) / 1e9;
}

export function prefillTokensPerSecond(r: PrefillResult, pick: (s: number[]) => number): number {
  return (r.batch * r.seq) / pick(r.seconds);
}

export function decodeTokensPerSecond(r: DecodeResult, pick: (s: number[]) => number): number {
  return (r.batch * r.decode_steps) / pick(r.decode_seconds);
}

export function endToEndTokensPerSecond(r: DecodeResult, pick: (s: number[]) => number): number {
  const totals = r.prompt_seconds.map((p, i) => p + r.decode_seconds[i]);
  return (r.batch * r.new_tokens) / pick(totals);
}

export const best = (values: number[]) => Math.min(...values);
export { median };

/** True when the PyTorch matmul rate shows a real BLAS, so ratios against it mean something. */
export function baselineIsValid(inputs: SummaryInputs): boolean {
  const torch = find<MatmulResult>(inputs.runs, "pytorch", "matmul").result;
  return matmulGflops(torch, best) >= inputs.minTorchGflops;
}

function speedupRow(
  measure: string,
  midpo: number,
  pytorch: number,
  valid: boolean,
  target: number | null,
): SummaryRow {
  const ratio = valid ? midpo / pytorch : null;
  return {
    measure,
    unit: "tokens/s",
    midpo,
    pytorch,
    ratio,
    target: target === null ? "" : valid ? `>= ${target}x` : `>= ${target}x (not judged)`,
    met: target === null || ratio === null ? null : ratio >= target,
  };
}

export function summarize(inputs: SummaryInputs): SummaryRow[] {
  const { runs } = inputs;
  const valid = baselineIsValid(inputs);
  const rows: SummaryRow[] = [];

  const matmul = (side: "midpo" | "pytorch") => find<MatmulResult>(runs, side, "matmul").result;
  const m = matmul("midpo");
  rows.push({
    measure: `matmul [${m.m}x${m.k}] @ [${m.k}x${m.n}] float32`,
    unit: "GFLOP/s",
    midpo: matmulGflops(m, best),
    pytorch: matmulGflops(matmul("pytorch"), best),
    ratio: matmulGflops(m, best) / matmulGflops(matmul("pytorch"), best),
    target: `PyTorch >= ${inputs.minTorchGflops} (real BLAS)`,
    met: valid,
  });

  const prefill = (side: "midpo" | "pytorch") => find<PrefillResult>(runs, side, "prefill").result;
  const p = prefill("midpo");
  rows.push(
    speedupRow(
      `prefill ${p.batch}x${p.seq}, logits at every position + log-softmax`,
      prefillTokensPerSecond(p, best),
      prefillTokensPerSecond(prefill("pytorch"), best),
      valid,
      SPEEDUP_TARGET,
    ),
  );

  const decodeBatches = runs
    .filter((r) => r.result.side === "midpo" && r.result.phase === "decode")
    .map((r) => (r.result as DecodeResult).batch);
  for (const batch of decodeBatches) {
    const mid = find<DecodeResult>(runs, "midpo", "decode", batch).result;
    const torch = find<DecodeResult>(runs, "pytorch", "decode", batch).result;
    rows.push(
      speedupRow(
        `decode batch ${batch}, ${mid.decode_steps} steps after a ${mid.prompt_length}-token prompt`,
        decodeTokensPerSecond(mid, best),
        decodeTokensPerSecond(torch, best),
        valid,
        SPEEDUP_TARGET,
      ),
    );
    rows.push(
      speedupRow(
        `generate batch ${batch} end to end (prompt + ${mid.new_tokens} tokens)`,
        endToEndTokensPerSecond(mid, best),
        endToEndTokensPerSecond(torch, best),
        valid,
        null,
      ),
    );
  }

  for (const phase of ["prefill", ...decodeBatches.map((b) => `decode batch ${b}`)]) {
    const batch = phase === "prefill" ? undefined : Number(phase.split(" ").at(-1));
    const name = phase === "prefill" ? "prefill" : "decode";
    const mid = find(runs, "midpo", name, batch).result;
    const torch = find(runs, "pytorch", name, batch).result;
    const kv = batch === undefined ? 0 : inputs.kvCacheBytes(batch);
    const limit = RSS_TARGET_FACTOR * (inputs.weightBytes + kv);
    rows.push({
      measure: `peak RSS, ${phase} process`,
      unit: "MiB",
      midpo: mid.peak_rss_bytes / MB,
      pytorch: torch.peak_rss_bytes / MB,
      ratio: null,
      target:
        `midpo <= ${RSS_TARGET_FACTOR} x (weights ${(inputs.weightBytes / MB).toFixed(0)} + ` +
        `KV cache ${(kv / MB).toFixed(0)}) = ${(limit / MB).toFixed(0)}`,
      met: mid.peak_rss_bytes <= limit,
    });
  }

  for (const batch of decodeBatches) {
    const mid = find<DecodeResult>(runs, "midpo", "decode", batch).result;
    const ort = mid.ort_run_seconds ?? [];
    const share = ort.reduce((a, b) => a + b, 0) / mid.decode_seconds.reduce((a, b) => a + b, 0);
    rows.push({
      measure: `midpo decode batch ${batch}: share of step time inside ORT run`,
      unit: "%",
      midpo: 100 * share,
      pytorch: null,
      ratio: null,
      target: "",
      met: null,
    });
  }

  const prefillMid = find<PrefillResult>(runs, "midpo", "prefill").result;
  rows.push({
    measure: "model load (safetensors to memory)",
    unit: "s",
    midpo: prefillMid.load_s,
    pytorch: find<PrefillResult>(runs, "pytorch", "prefill").result.load_s,
    ratio: null,
    target: "",
    met: null,
  });
  rows.push({
    measure: "midpo session creation, prefill graph (untimed above)",
    unit: "s",
    midpo: prefillMid.session_create_s,
    pytorch: null,
    ratio: null,
    target: "",
    met: null,
  });
  for (const batch of decodeBatches) {
    rows.push({
      measure: `midpo session creation, decode graph (batch ${batch} process)`,
      unit: "s",
      midpo: find<DecodeResult>(runs, "midpo", "decode", batch).result.session_create_s,
      pytorch: null,
      ratio: null,
      target: "",
      met: null,
    });
  }
  return rows;
}

/** Compares what both sides computed: log-probabilities at prefill, greedy tokens at decode. */
export function agreement(runs: PhaseRun[]): Record<string, number | boolean> {
  const mid = find<PrefillResult>(runs, "midpo", "prefill").result;
  const torch = find<PrefillResult>(runs, "pytorch", "prefill").result;
  const maxDifference = (a: number[], b: number[]) =>
    Math.max(...a.map((v, i) => Math.abs(v - b[i])));
  const out: Record<string, number | boolean> = {
    prefill_max_abs_diff_row_logprob_sum: maxDifference(
      mid.row_logprob_sums,
      torch.row_logprob_sums,
    ),
    prefill_max_abs_diff_first_logprobs: maxDifference(mid.first_logprobs, torch.first_logprobs),
  };
  for (const run of runs) {
    const r = run.result;
    if (r.side !== "midpo" || r.phase !== "decode") continue;
    const other = find<DecodeResult>(runs, "pytorch", "decode", r.batch).result;
    out[`decode_batch_${r.batch}_first_tokens_equal`] =
      JSON.stringify(r.first_tokens) === JSON.stringify(other.first_tokens);
  }
  return out;
}

function formatNumber(value: number | null): string {
  if (value === null) return "";
  if (Math.abs(value) >= 100) return value.toFixed(0);
  if (Math.abs(value) >= 10) return value.toFixed(1);
  return value.toFixed(2);
}

export function markdownTable(rows: SummaryRow[]): string {
  const header = "| measure | unit | midpo | PyTorch | midpo / PyTorch | target | met |";
  const rule = "| --- | --- | ---: | ---: | ---: | --- | --- |";
  const lines = rows.map((r) => {
    const ratio = r.ratio === null ? "" : `${r.ratio.toFixed(2)}x`;
    const met = r.met === null ? "" : r.met ? "yes" : "**no**";
    const cells = [r.measure, r.unit, formatNumber(r.midpo), formatNumber(r.pytorch), ratio];
    return `| ${[...cells, r.target, met].join(" | ")} |`;
  });
  return [header, rule, ...lines].join("\n");
}
