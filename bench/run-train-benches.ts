// Training benchmarks: midpo (ONNX Runtime) against PyTorch eager on the random
// SmolLM-135M-shaped checkpoint. There are three:
//   dpo-step     one DPO step of a LoRA adapter (r 16, alpha 32, down_proj), with the
//                reference log-probs cached and with the reference forward on every step;
//   score        end scores of a set of sequences with a score model;
//   router-step  one MidPO router step (both experts frozen, only the router trains).
// Every measurement runs in its own child process, so that each peak RSS is its own, and the
// two sides alternate, so that load from other processes tends to hit both. Prints one
// markdown table per benchmark and writes bench/results/train-<date>.json.
//
// A comparison counts only with a real BLAS under torch: Debian's python3-torch links the
// reference BLAS (about 2 GFLOP/s) unless libopenblas0-pthread is installed. Each process
// measures its matmul rate, the report prints both sides' rates, and no target is judged when
// PyTorch's rate is below --min-torch-gflops.
//
// Usage: npx tsx bench/run-train-benches.ts [--only dpo-step,score,router-step] [--repeats N]

import { spawnSync } from "node:child_process";
import { mkdirSync, writeFileSync } from "node:fs";
import { cpus } from "node:os";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { fileURLToPath } from "node:url";
import { Command, InvalidArgumentError } from "commander";

import { log } from "../src/log.js";
import { loadConfig } from "../src/model/load-config.js";
import type { ModelConfig } from "../src/model/config.js";
import { compileBench } from "./compile.js";
import { DEFAULT_MODEL_DIR, DEFAULT_MODEL_SEED, ensureRandomModel } from "./make-random-model.js";
import { loraParams, preferenceStepFlops, routerParamCount, scoreFlops } from "./train-flops.js";
import { BLAS_PACKAGE, loadAverage, machineBusySeconds, machineInfo } from "./train-machine.js";
import type { Bench, StepMode, TrainBenchResult, TrainPlan } from "./train-plan.js";
import {
  agreement,
  baselineIsValid,
  markdownTable,
  scoreRows,
  stepRows,
  type ChildRun,
  type ReportInputs,
} from "./train-report.js";
import {
  ensureScoreModel,
  makePlan,
  routerShape,
  writeParamFiles,
  type SetupOptions,
} from "./train-setup.js";

const BENCHES: Bench[] = ["dpo-step", "score", "router-step"];

interface Options {
  only: Bench[];
  modelDir: string;
  seed: number;
  pairs: number;
  promptLength: number;
  responseLength: number;
  scoreSequences: number;
  scoreLength: number;
  scorePromptLength: number;
  scoreBatch: number;
  repeats: number;
  python: string;
  torchThreads?: number[];
  minTorchGflops: number;
  resultsDir: string;
}

/** A measuring process to start: which file, and with which arguments. */
interface Job {
  side: TrainBenchResult["side"];
  bench: Bench;
  mode?: StepMode;
  threads?: number;
}

function benchFile(name: string): string {
  return fileURLToPath(new URL(`./${name}`, import.meta.url));
}

/** The measuring scripts, compiled by compileBench (see bench/compile.ts). */
const MIDPO_FILES: Record<Bench, string> = {
  "dpo-step": "dpo-step.js",
  score: "score.js",
  "router-step": "router-step.js",
};

/** The compiled bench/ directory, set by main before any midpo process starts. */
let compiled: string | null = null;
const TORCH_FILES: Record<Bench, string> = {
  "dpo-step": "dpo_step_torch.py",
  score: "score_torch.py",
  "router-step": "router_step_torch.py",
};

// ---------------------------------------------------------------------------------------------
// Child processes

function runJob(job: Job, planPath: string, python: string): ChildRun {
  const args = ["--plan", planPath];
  if (job.mode !== undefined) args.push("--mode", job.mode);
  let command: string;
  if (job.side === "midpo") {
    command = process.execPath;
    if (compiled === null) throw new Error("the benchmark was not compiled");
    args.unshift(join(compiled, MIDPO_FILES[job.bench]));
  } else {
    command = python;
    args.unshift(benchFile(TORCH_FILES[job.bench]));
    if (job.threads !== undefined) args.push("--threads", String(job.threads));
  }

  const loadBefore = loadAverage();
  log.info({ ...job, load: loadBefore.toFixed(2) }, "running");
  const busyBefore = machineBusySeconds();
  const start = performance.now();
  const out = spawnSync(command, args, {
    encoding: "utf8",
    stdio: ["ignore", "pipe", "inherit"],
    maxBuffer: 64 * 1024 * 1024,
  });
  const wall = (performance.now() - start) / 1000;
  const busy = machineBusySeconds() - busyBefore;

  if (out.error !== undefined || out.status !== 0) {
    const hint =
      job.side === "pytorch"
        ? ` Check that ${python} can import torch and numpy, or pass --python.`
        : "";
    throw new Error(
      `${job.side} ${job.bench} failed (${out.error?.message ?? `exit code ${out.status}`}): ` +
        `${command} ${args.join(" ")}.${hint}`,
    );
  }
  const lines = out.stdout.trim().split("\n");
  const result = JSON.parse(lines[lines.length - 1]) as TrainBenchResult;
  const other = Math.max(0, busy - result.cpu_s) / wall;
  log.info({ ...job, wall_s: wall.toFixed(1), other_cpu_cores: other.toFixed(2) }, "done");
  return { result, wall_s: wall, other_cpu_cores: other, load_before: loadBefore };
}

/** Lists the processes of one benchmark: per mode, midpo, then PyTorch per thread count. */
function jobsOf(bench: Bench, torchThreads: number[]): Job[] {
  const modes: (StepMode | undefined)[] = bench === "dpo-step" ? ["step", "step+ref"] : [undefined];
  const jobs: Job[] = [];
  for (const mode of modes) {
    jobs.push({ side: "midpo", bench, mode });
    for (const threads of torchThreads) jobs.push({ side: "pytorch", bench, mode, threads });
  }
  return jobs;
}

// ---------------------------------------------------------------------------------------------
// Options

function parsePositiveInteger(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1) {
    throw new InvalidArgumentError(`expected a positive integer, got ${value}`);
  }
  return n;
}

function parseNonNegativeInteger(value: string): number {
  return value === "0" ? 0 : parsePositiveInteger(value);
}

function parseIntegerList(value: string): number[] {
  return value.split(",").map((part) => parsePositiveInteger(part.trim()));
}

function parseBenchList(value: string): Bench[] {
  return value.split(",").map((part) => {
    const name = part.trim() as Bench;
    if (!BENCHES.includes(name)) {
      throw new InvalidArgumentError(`unknown benchmark ${part}; expected ${BENCHES.join(", ")}`);
    }
    return name;
  });
}

function parseOptions(): Options {
  const program = new Command("run-train-benches")
    .description(
      "Compare midpo's DPO step, end scoring and router step with PyTorch eager on a random " +
        "SmolLM-135M-shaped model",
    )
    .option("--only <list>", "comma-separated benchmarks to run", parseBenchList, BENCHES)
    .option("--model-dir <path>", "random model directory, written when missing", DEFAULT_MODEL_DIR)
    .option(
      "--seed <n>",
      "seed of the weights, parameters and token ids",
      parsePositiveInteger,
      DEFAULT_MODEL_SEED,
    )
    .option("--pairs <n>", "preference pairs per step", parsePositiveInteger, 2)
    .option("--prompt-length <n>", "prompt tokens per pair", parsePositiveInteger, 128)
    .option(
      "--response-length <n>",
      "tokens per chosen or rejected response",
      parsePositiveInteger,
      128,
    )
    .option("--score-sequences <n>", "sequences to score per timed run", parsePositiveInteger, 64)
    .option("--score-length <n>", "tokens per scored sequence", parsePositiveInteger, 256)
    .option(
      "--score-prompt-length <n>",
      "tokens that each pair of scored sequences shares, as two responses share a prompt " +
        "(0: unrelated sequences)",
      parseNonNegativeInteger,
      128,
    )
    .option(
      "--score-batch <n>",
      "PyTorch's sequences per forward pass when scoring (midpo batches as `midpo score` does)",
      parsePositiveInteger,
      16,
    )
    .option("--repeats <n>", "timed runs per process, after one warm-up", parsePositiveInteger, 3)
    .option("--python <path>", "Python interpreter that has torch and numpy", "/usr/bin/python3")
    .option(
      "--torch-threads <list>",
      "comma-separated torch intra-op thread counts to try; the fastest process counts " +
        "(default: 1 and one per core)",
      parseIntegerList,
    )
    .option(
      "--min-torch-gflops <x>",
      "PyTorch matmul rate (GFLOP/s) below which no target is judged",
      Number,
      20,
    )
    .option("--results-dir <path>", "where the JSON report goes", "bench/results")
    .parse();
  const options = program.opts<Options>();
  if (options.scorePromptLength >= options.scoreLength) {
    program.error(
      `--score-prompt-length ${options.scorePromptLength} leaves no response tokens in ` +
        `sequences of --score-length ${options.scoreLength}; make it smaller`,
    );
  }
  return options;
}

// ---------------------------------------------------------------------------------------------
// Report

function flopsOf(config: ModelConfig, plan: TrainPlan) {
  const lora = loraParams(config, plan.lora.r);
  const router = routerParamCount(routerShape(config, plan.router.hidden));
  return (r: TrainBenchResult) => {
    if (r.bench === "score") {
      return scoreFlops(config, r.tokens, r.tokens / r.sequences);
    }
    const tokens = r.rows * r.width;
    if (r.bench === "dpo-step") {
      return preferenceStepFlops(config, tokens, r.width, lora, lora, r.mode === "step+ref");
    }
    // Both experts and the router sit in the forward path; only the router trains.
    return preferenceStepFlops(config, tokens, r.width, 2 * lora + router, router, false);
  };
}

function collectWarnings(inputs: ReportInputs, benches: Bench[]): string[] {
  const warnings: string[] = [];
  for (const bench of benches) {
    if (!baselineIsValid(inputs, bench)) {
      warnings.push(
        `${bench}: PyTorch's best matmul rate is below ${inputs.minTorchGflops} GFLOP/s, so no ` +
          `target is judged. Either torch uses the reference BLAS (install ${BLAS_PACKAGE}: ` +
          `apt-get install -y ${BLAS_PACKAGE}) or other processes kept the cores busy ` +
          `(see other_cpu_cores). Rerun on an idle machine with OpenBLAS.`,
      );
    }
  }
  const busiest = Math.max(...inputs.runs.map((r) => r.other_cpu_cores));
  if (busiest > 0.25) {
    warnings.push(
      `other processes used up to ${busiest.toFixed(2)} cores while a measuring process ran ` +
        `(other_cpu_cores in the JSON); times from those processes are longer than on an ` +
        `idle machine.`,
    );
  }
  return warnings;
}

function main(): void {
  const options = parseOptions();
  log.info("compiling the midpo side to JavaScript");
  compiled = compileBench();
  ensureRandomModel(options.modelDir, options.seed);
  const config = loadConfig(join(options.modelDir, "config.json"));
  const cacheDir = join(options.modelDir, "..");
  const scoreDir = join(cacheDir, "smollm-135m-random-score");
  ensureScoreModel(options.modelDir, scoreDir, options.seed);

  const setup: SetupOptions = {
    ...options,
    cacheDir,
    loraR: 16,
    loraAlpha: 32,
    routerHidden: 512,
  };
  const plan = makePlan(config, setup, writeParamFiles(config, setup), scoreDir);
  const planPath = join(cacheDir, "train-plan.json");
  writeFileSync(planPath, JSON.stringify(plan));

  const started = new Date();
  const machine = machineInfo();
  const torchThreads = [...new Set(options.torchThreads ?? [1, cpus().length])];
  const runs: ChildRun[] = [];
  for (const bench of options.only) {
    for (const job of jobsOf(bench, torchThreads)) runs.push(runJob(job, planPath, options.python));
  }
  mkdirSync(options.resultsDir, { recursive: true });
  const stamp = started
    .toISOString()
    .replace(/:/g, "-")
    .replace(/\.\d+Z$/, "Z");
  const path = join(options.resultsDir, `train-${stamp}.json`);
  // The measurements first, so that they survive an error while the report is made; the
  // full report replaces this file below.
  writeFileSync(path, JSON.stringify({ date: started.toISOString(), machine, runs }) + "\n");

  const lora = loraParams(config, plan.lora.r);
  const inputs: ReportInputs = {
    runs,
    minTorchGflops: options.minTorchGflops,
    flops: flopsOf(config, plan),
    trainableParams: {
      "dpo-step": lora,
      "router-step": routerParamCount(routerShape(config, plan.router.hidden)),
    },
  };
  const benches: Record<string, unknown> = {};
  for (const bench of options.only) {
    const rows = bench === "score" ? scoreRows(inputs) : stepRows(inputs, bench);
    const first = runs.find((r) => r.result.bench === bench)!.result;
    benches[bench] = {
      flop_formula: inputs.flops(first).formula,
      flop_terms: inputs.flops(first).terms,
      baseline_valid: baselineIsValid(inputs, bench),
      summary: rows,
      agreement: agreement(inputs, bench),
    };
    console.log(`\n### ${bench}\n`);
    console.log(markdownTable(rows));
    console.log(`\nFLOPs per timed run: ${inputs.flops(first).formula}`);
    console.log("agreement:", JSON.stringify(agreement(inputs, bench)));
  }
  const warnings = collectWarnings(inputs, options.only);
  for (const warning of warnings) console.log(`WARNING: ${warning}`);

  const midpoVersions = runs.find((r) => r.result.side === "midpo")?.result.versions ?? {};
  const torchVersions = runs.find((r) => r.result.side === "pytorch")?.result.versions ?? {};
  const report = {
    date: started.toISOString(),
    command: ["npx tsx bench/run-train-benches.ts", ...process.argv.slice(2)].join(" "),
    machine: { ...machine, ...midpoVersions, ...torchVersions },
    settings: {
      ...options,
      plan_path: planPath,
      lora: plan.lora,
      router: plan.router,
      statistic: "fastest timed run (median beside it); every run is under runs",
    },
    warnings,
    benches,
    runs: runs.map((r) => ({ ...r, result: withoutLongArrays(r.result) })),
  };
  writeFileSync(path, JSON.stringify(report, null, 2) + "\n");
  log.info({ path }, "wrote the benchmark report");
}

/** Drops the per-sequence scores, which the agreement summary already compares. */
function withoutLongArrays(result: TrainBenchResult): TrainBenchResult {
  if (result.bench !== "score") return result;
  return { ...result, scores: result.scores.slice(0, 8) };
}

main();
