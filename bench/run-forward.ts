// Forward-pass benchmark: midpo (ONNX Runtime, bench/forward.ts) against a PyTorch eager
// reference (bench/forward_torch.py) on the same random SmolLM-135M-shaped checkpoint and the
// same token ids. Every phase of each side runs in its own child process, so that each peak
// RSS belongs to one phase. The phases of the two sides alternate, so that load from other
// processes on the machine tends to hit both. Prints a markdown table and writes
// bench/results/forward-<date>.json.
//
// The comparison is only fair with a real BLAS under torch: Debian's python3-torch links the
// reference BLAS (about 2 GFLOP/s) unless libopenblas0-pthread is installed. The benchmark
// measures PyTorch's matmul rate and reports no speedup when it is below --min-torch-gflops.
//
// Usage: npx tsx bench/run-forward.ts [--repeats N] [--new-tokens N] [--install-blas] ...

import { spawnSync } from "node:child_process";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { cpus, totalmem, type as osType, release as osRelease } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { performance } from "node:perf_hooks";
import { Command, InvalidArgumentError } from "commander";

import { Rng } from "../src/generate/sampling.js";
import { log } from "../src/log.js";
import { weightSpecs } from "../src/model/llama.js";
import { loadConfig } from "../src/model/load-config.js";
import type { ModelConfig } from "../src/model/config.js";
import { compileBench } from "./compile.js";
import { DEFAULT_MODEL_DIR, DEFAULT_MODEL_SEED, ensureRandomModel } from "./make-random-model.js";
import type { ForwardPlan, Phase, PhaseResult } from "./forward-plan.js";
import {
  agreement,
  baselineIsValid,
  fastestSeconds,
  markdownTable,
  summarize,
  type PhaseRun,
  type SummaryInputs,
} from "./forward-report.js";

interface Options {
  modelDir: string;
  seed: number;
  prefillBatch: number;
  prefillLength: number;
  promptLength: number;
  newTokens: number;
  decodeBatches: number[];
  repeats: number;
  python: string;
  /** torch intra-op thread counts to try at matmul and prefill. */
  torchThreads?: number[];
  /** Maximum wait for other processes to go quiet before each phase, in seconds. */
  idleWait: number;
  minTorchGflops: number;
  installBlas: boolean;
  resultsDir: string;
}

const BLAS_PACKAGE = "libopenblas0-pthread";

/** The compiled bench/ directory, set by main before any midpo process starts. */
let compiled: string | null = null;

function compiledBenchDir(): string {
  if (compiled === null) throw new Error("the benchmark was not compiled");
  return compiled;
}

function benchFile(name: string): string {
  return fileURLToPath(new URL(`./${name}`, import.meta.url));
}

// ---------------------------------------------------------------------------------------------
// BLAS check

/** Returns the installed version of a Debian package, or null when it is not installed. */
function debianPackageVersion(name: string): string | null {
  const out = spawnSync("dpkg-query", ["-W", "-f", "${Status} ${Version}", name], {
    encoding: "utf8",
  });
  if (out.error !== undefined || out.status !== 0) return null;
  const match = /^install ok installed (\S+)/.exec(out.stdout);
  return match === null ? null : match[1];
}

/**
 * Checks for OpenBLAS, which PyTorch needs for a fair baseline, and installs it when asked to
 * and running as root. The measured matmul rate decides fairness; this check only explains it.
 */
function checkBlas(install: boolean): string | null {
  let version = debianPackageVersion(BLAS_PACKAGE);
  if (version !== null) return version;

  const command = `apt-get install -y ${BLAS_PACKAGE}`;
  if (install && process.getuid?.() === 0) {
    log.info({ command }, "installing OpenBLAS for the PyTorch baseline");
    const out = spawnSync("apt-get", ["install", "-y", BLAS_PACKAGE], { stdio: "inherit" });
    if (out.status !== 0) log.error({ status: out.status }, `${command} failed`);
    version = debianPackageVersion(BLAS_PACKAGE);
    if (version !== null) return version;
  } else if (install) {
    log.warn(`--install-blas needs root; run as root: ${command}`);
  }
  log.warn(
    `${BLAS_PACKAGE} is not installed (or dpkg is missing), so Debian's torch may fall back to ` +
      `the reference BLAS at about 2 GFLOP/s. Install it with: ${command} ` +
      `(or rerun this benchmark as root with --install-blas)`,
  );
  return null;
}

// ---------------------------------------------------------------------------------------------
// Plan and machine

function makePlan(options: Options, config: ModelConfig): ForwardPlan {
  // Token ids are uniform over the vocabulary: with random weights, no id is special.
  const rng = new Rng(options.seed);
  const ids = (rows: number, length: number) =>
    Array.from({ length: rows }, () =>
      Array.from({ length }, () => Math.floor(rng.next() * config.vocabSize)),
    );
  return {
    model_dir: options.modelDir,
    prefill_input_ids: ids(options.prefillBatch, options.prefillLength),
    decode_prompts: ids(Math.max(...options.decodeBatches), options.promptLength),
    decode_batches: options.decodeBatches,
    new_tokens: options.newTokens,
    repeats: options.repeats,
    matmul: { m: 1024, k: 576, n: 1536, runs: 20 },
  };
}

function machineInfo() {
  const cpuinfo = readFileSync("/proc/cpuinfo", "utf8");
  const model = /^model name\s*:\s*(.+)$/m.exec(cpuinfo)?.[1] ?? "unknown";
  const blasLibrary = spawnSync(
    "readlink",
    ["-f", "/etc/alternatives/libblas.so.3-x86_64-linux-gnu"],
    {
      encoding: "utf8",
    },
  );
  return {
    cpu_model: model,
    cores: cpus().length,
    memory_bytes: totalmem(),
    os: `${osType()} ${osRelease()}`,
    blas_library: blasLibrary.status === 0 ? blasLibrary.stdout.trim() : null,
  };
}

// ---------------------------------------------------------------------------------------------
// Child processes

/** Busy CPU seconds of the whole machine so far, from the first line of /proc/stat. */
function machineBusySeconds(): number {
  const fields = readFileSync("/proc/stat", "utf8").split("\n")[0].trim().split(/\s+/);
  // user nice system idle iowait irq softirq steal: everything but idle and iowait is busy.
  const ticks = fields.slice(1, 9).map(Number);
  const busy = ticks[0] + ticks[1] + ticks[2] + ticks[5] + ticks[6];
  return busy / clockTicksPerSecond;
}

const clockTicksPerSecond = (() => {
  const out = spawnSync("getconf", ["CLK_TCK"], { encoding: "utf8" });
  const value = Number(out.stdout);
  return out.status === 0 && value > 0 ? value : 100;
})();

/** Sleeps the calling thread; the parent has nothing else to do between children. */
function sleep(seconds: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, seconds * 1000);
}

/**
 * Waits until other processes use less than a quarter of a core, sampled over 2 s, or until
 * `maxSeconds` have passed. Returns the load seen in the last sample, in cores.
 */
function waitForIdle(maxSeconds: number): number {
  const start = performance.now();
  for (;;) {
    const before = machineBusySeconds();
    sleep(2);
    const load = (machineBusySeconds() - before) / 2;
    const waited = (performance.now() - start) / 1000;
    if (load < 0.25 || waited >= maxSeconds) return load;
    log.info(
      { load_cores: load.toFixed(2), waited_s: waited.toFixed(0) },
      "waiting for other processes to go quiet",
    );
  }
}

function runPhase(
  side: PhaseResult["side"],
  phase: Phase,
  batch: number | undefined,
  torchThreads: number | undefined,
  planPath: string,
  options: Options,
): PhaseRun {
  const args = ["--plan", planPath, "--phase", phase];
  if (batch !== undefined) args.push("--batch", String(batch));
  let command: string;
  if (side === "midpo") {
    command = process.execPath;
    args.unshift(join(compiledBenchDir(), "forward.js"));
  } else {
    command = options.python;
    args.unshift(benchFile("forward_torch.py"));
    if (torchThreads !== undefined) args.push("--threads", String(torchThreads));
  }

  const load = options.idleWait > 0 ? waitForIdle(options.idleWait) : null;
  log.info({ side, phase, batch, torchThreads, load_cores: load?.toFixed(2) }, "running");
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
      side === "pytorch"
        ? ` Check that ${options.python} can import torch and numpy, or pass --python.`
        : "";
    throw new Error(
      `${side} ${phase} failed (${out.error?.message ?? `exit code ${out.status}`}): ` +
        `${command} ${args.join(" ")}.${hint}`,
    );
  }
  const lines = out.stdout.trim().split("\n");
  const result = JSON.parse(lines[lines.length - 1]) as PhaseResult;
  const other = Math.max(0, busy - result.cpu_s) / wall;
  log.info(
    { side, phase, batch, wall_s: wall.toFixed(1), other_cpu_cores: other.toFixed(2) },
    "done",
  );
  return { result, wall_s: wall, other_cpu_cores: other };
}

// ---------------------------------------------------------------------------------------------

function parsePositiveInteger(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1) {
    throw new InvalidArgumentError(`expected a positive integer, got ${value}`);
  }
  return n;
}

function parseIntegerList(value: string): number[] {
  return value.split(",").map((part) => parsePositiveInteger(part.trim()));
}

function parseOptions(): Options {
  const program = new Command("run-forward")
    .description(
      "Compare midpo's forward pass (prefill, KV-cache decode, memory) with a PyTorch eager " +
        "reference on a random SmolLM-135M-shaped model",
    )
    .option("--model-dir <path>", "random model directory, written when missing", DEFAULT_MODEL_DIR)
    .option(
      "--seed <n>",
      "seed of the token ids, and of the weights when the model is written",
      parsePositiveInteger,
      DEFAULT_MODEL_SEED,
    )
    .option("--prefill-batch <n>", "prefill rows", parsePositiveInteger, 4)
    .option("--prefill-length <n>", "prefill tokens per row", parsePositiveInteger, 256)
    .option("--prompt-length <n>", "decode prompt tokens per row", parsePositiveInteger, 32)
    .option("--new-tokens <n>", "greedy tokens generated per row", parsePositiveInteger, 64)
    .option(
      "--decode-batches <list>",
      "comma-separated decode batch sizes",
      parseIntegerList,
      [1, 16],
    )
    .option(
      "--repeats <n>",
      "timed runs per measurement, after one warm-up",
      parsePositiveInteger,
      3,
    )
    .option("--python <path>", "Python interpreter that has torch and numpy", "/usr/bin/python3")
    .option(
      "--torch-threads <list>",
      "comma-separated torch intra-op thread counts to try at matmul and prefill; decode " +
        "uses the one with the fastest prefill (default: 1 and one per core)",
      parseIntegerList,
    )
    .option(
      "--min-torch-gflops <x>",
      "PyTorch matmul rate (GFLOP/s) below which no speedup is reported",
      Number,
      20,
    )
    .option("--install-blas", `apt-get install ${BLAS_PACKAGE} when missing (root only)`, false)
    .option(
      "--idle-wait <s>",
      "max seconds to wait before each phase for other processes to use under 0.25 cores; 0 skips",
      Number,
      30,
    )
    .option("--results-dir <path>", "where the JSON report goes", "bench/results")
    .parse();
  return program.opts<Options>();
}

/**
 * Runs every phase, midpo first and then PyTorch, phase by phase. PyTorch runs matmul and
 * prefill once per thread count, and decode only with the count that gave the fastest prefill.
 */
function runAllPhases(options: Options, planPath: string): PhaseRun[] {
  const runs: PhaseRun[] = [];
  const both = (phase: Phase, batch: number | undefined, torchThreads: number[]) => {
    runs.push(runPhase("midpo", phase, batch, undefined, planPath, options));
    for (const threads of torchThreads) {
      runs.push(runPhase("pytorch", phase, batch, threads, planPath, options));
    }
  };

  const candidates = [...new Set(options.torchThreads ?? [1, cpus().length])];
  both("matmul", undefined, candidates);
  both("prefill", undefined, candidates);

  // On 2 cores shared with other jobs, decode with 2 torch threads ran 5 to 7 times slower
  // than with 1, probably because OpenMP workers wait at every op for a descheduled partner.
  // A losing setting costs minutes there, so decode reuses the setting that won prefill.
  const prefills = runs.filter((r) => r.result.side === "pytorch" && r.result.phase === "prefill");
  prefills.sort((a, b) => fastestSeconds(a.result) - fastestSeconds(b.result));
  const decodeThreads = prefills[0].result.threads ?? candidates[0];
  for (const batch of options.decodeBatches) both("decode", batch, [decodeThreads]);
  return runs;
}

function collectWarnings(inputs: SummaryInputs, valid: boolean): string[] {
  const warnings: string[] = [];
  if (!valid) {
    warnings.push(
      `PyTorch's matmul rate is below ${inputs.minTorchGflops} GFLOP/s, so torch is not using ` +
        `a real BLAS and no speedup is reported. Install ${BLAS_PACKAGE} ` +
        `(apt-get install -y ${BLAS_PACKAGE}) and rerun.`,
    );
  }
  const busiest = Math.max(...inputs.runs.map((r) => r.other_cpu_cores));
  if (busiest > 0.25) {
    warnings.push(
      `other processes used up to ${busiest.toFixed(2)} cores during a phase ` +
        `(other_cpu_cores in the JSON); rates from those phases are lower than on an idle machine.`,
    );
  }
  return warnings;
}

function main(): void {
  const options = parseOptions();
  ensureRandomModel(options.modelDir, options.seed);
  const blasVersion = checkBlas(options.installBlas);
  log.info("compiling the midpo side to JavaScript");
  compiled = compileBench();

  const config = loadConfig(join(options.modelDir, "config.json"));
  const plan = makePlan(options, config);
  const planPath = join(options.modelDir, "..", "forward-plan.json");
  writeFileSync(planPath, JSON.stringify(plan));

  const started = new Date();
  const runs = runAllPhases(options, planPath);

  const weightBytes =
    4 * weightSpecs(config).reduce((n, s) => n + s.shape.reduce((a, b) => a * b, 1), 0);
  // Keys and values of every layer in float32, for prompt + new tokens: what generate()
  // preallocates, and what PyTorch's cache has grown to after the last step.
  const positions = options.promptLength + options.newTokens;
  const kvCacheBytes = (batch: number) =>
    2 * config.numHiddenLayers * batch * config.numKeyValueHeads * config.headDim * positions * 4;
  const inputs = { runs, weightBytes, kvCacheBytes, minTorchGflops: options.minTorchGflops };
  const rows = summarize(inputs);
  const valid = baselineIsValid(inputs);
  const warnings = collectWarnings(inputs, valid);

  const midpoResult = runs.find((r) => r.result.side === "midpo")!.result;
  const torchResult = runs.find((r) => r.result.side === "pytorch")!.result;
  const report = {
    date: started.toISOString(),
    command: ["npx tsx bench/run-forward.ts", ...process.argv.slice(2)].join(" "),
    machine: {
      ...machineInfo(),
      [BLAS_PACKAGE]: blasVersion,
      ...midpoResult.versions,
      ...torchResult.versions,
    },
    settings: {
      model_dir: options.modelDir,
      seed: options.seed,
      weight_bytes: weightBytes,
      prefill: [options.prefillBatch, options.prefillLength],
      prompt_length: options.promptLength,
      new_tokens: options.newTokens,
      decode_batches: options.decodeBatches,
      repeats: options.repeats,
      statistic: "fastest timed run (median beside it); every run is under phases",
      min_torch_gflops: options.minTorchGflops,
    },
    baseline_valid: valid,
    warnings,
    summary: rows,
    agreement: agreement(runs),
    phases: runs,
  };

  console.log(markdownTable(rows));
  console.log();
  console.log("agreement:", JSON.stringify(report.agreement));
  for (const warning of warnings) console.log(`WARNING: ${warning}`);

  mkdirSync(options.resultsDir, { recursive: true });
  const stamp = started
    .toISOString()
    .replace(/:/g, "-")
    .replace(/\.\d+Z$/, "Z");
  const path = join(options.resultsDir, `forward-${stamp}.json`);
  writeFileSync(path, JSON.stringify(report, null, 2) + "\n");
  log.info({ path }, "wrote the benchmark report");
}

main();
