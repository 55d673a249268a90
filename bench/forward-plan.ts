// The contract between bench/run-forward.ts and its two measuring processes (bench/forward.ts
// for midpo, bench/forward_torch.py for PyTorch): the plan file that both read, and the JSON
// line that each phase prints on stdout. Field names are snake_case because Python reads and
// writes the same objects.

import { readFileSync } from "node:fs";

/** Settings and token ids that every measuring process reads, so both sides do the same work. */
export interface ForwardPlan {
  model_dir: string;
  /** Prefill input, [batch, seq]: every position is a real token, with no padding. */
  prefill_input_ids: number[][];
  /** Decode prompts, [max batch, prompt length]. A batch of b uses the first b rows. */
  decode_prompts: number[][];
  decode_batches: number[];
  new_tokens: number;
  /** Timed runs per measurement, after one untimed warm-up run. */
  repeats: number;
  matmul: { m: number; k: number; n: number; runs: number };
}

export type Phase = "matmul" | "prefill" | "decode";

interface PhaseResultBase {
  side: "midpo" | "pytorch";
  phase: Phase;
  /** Peak resident set size of the whole process (VmHWM), in bytes. */
  peak_rss_bytes: number;
  /** User plus system CPU time of the whole process, all threads, in seconds. */
  cpu_s: number;
  /** Intra-op threads: ORT's default for midpo, torch.get_num_threads() for PyTorch. */
  threads: number | null;
  /** Versions of the software that did the work, keyed by package name. */
  versions: Record<string, string>;
}

export interface MatmulResult extends PhaseResultBase {
  phase: "matmul";
  m: number;
  k: number;
  n: number;
  runs: number;
  /** Seconds for `runs` back-to-back products, one entry per repeat. */
  seconds: number[];
}

export interface PrefillResult extends PhaseResultBase {
  phase: "prefill";
  batch: number;
  seq: number;
  load_s: number;
  /** Building the graph and creating the ORT session; 0 for PyTorch, which has none. */
  session_create_s: number;
  warmup_s: number;
  seconds: number[];
  /** Sum of each row's token log-probabilities, to compare the two sides' outputs. */
  row_logprob_sums: number[];
  /** The first row's first 16 token log-probabilities. */
  first_logprobs: number[];
}

export interface DecodeResult extends PhaseResultBase {
  phase: "decode";
  batch: number;
  prompt_length: number;
  new_tokens: number;
  load_s: number;
  session_create_s: number;
  warmup_s: number;
  /** Per repeat: the prompt forward that yields the first new token, in seconds. */
  prompt_seconds: number[];
  /** Per repeat: the new_tokens - 1 single-token steps that follow, in seconds. */
  decode_seconds: number[];
  /** Per repeat: time inside ORT session.run during the decode steps (midpo only). */
  ort_run_seconds?: number[];
  decode_steps: number;
  /** The first row's first 16 greedy tokens. */
  first_tokens: number[];
}

export type PhaseResult = MatmulResult | PrefillResult | DecodeResult;

export function readPlan(path: string): ForwardPlan {
  return JSON.parse(readFileSync(path, "utf8")) as ForwardPlan;
}

export function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}

/** Reads the peak resident set size (VmHWM) of this process from /proc, in bytes. */
export function peakRssBytes(): number {
  const status = readFileSync("/proc/self/status", "utf8");
  const match = /^VmHWM:\s+(\d+) kB$/m.exec(status);
  if (match === null) throw new Error("VmHWM is missing from /proc/self/status");
  return Number(match[1]) * 1024;
}
