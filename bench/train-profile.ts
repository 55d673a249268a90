// Shows where a midpo training benchmark spends its time inside ONNX Runtime. It runs one
// measuring process (bench/dpo-step.ts, bench/score.ts or bench/router-step.ts) with ORT's
// profiler on. Then it sums the kernel times of the busiest session by op type and lists the
// slowest nodes, with the GFLOP/s of every matrix product. Profiling adds overhead per node, so
// these times are for proportions, and bench/run-train-benches.ts gives the times to quote.
//
// Reads the plan that bench/run-train-benches.ts wrote, with one warm-up and one timed run.
// Prints markdown tables and writes bench/results/train-profile-<bench>-<date>.json.
//
// Usage: npx tsx bench/train-profile.ts --bench dpo-step|score|router-step [--mode step|step+ref]

import { spawnSync } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, readdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { Command, Option } from "commander";

import { log } from "../src/log.js";
import { PROFILE_ENV, readPlan, type Bench, type StepMode } from "./train-plan.js";

const FILES: Record<Bench, string> = {
  "dpo-step": "dpo-step.ts",
  score: "score.ts",
  "router-step": "router-step.ts",
};

/** One event of ORT's profile (Chrome trace format), with the fields read here. */
interface ProfileEvent {
  cat: string;
  name: string;
  /** Microseconds. */
  dur: number;
  args?: {
    op_name?: string;
    input_type_shape?: Record<string, number[]>[];
    output_type_shape?: Record<string, number[]>[];
  };
}

interface NodeTime {
  name: string;
  op: string;
  shapes: string;
  ms: number;
  flops: number;
}

const MATMUL_OPS = new Set(["MatMul", "FusedMatMul", "Gemm"]);

function shapeOf(entry: Record<string, number[]> | undefined): number[] {
  return entry === undefined ? [] : Object.values(entry)[0];
}

/**
 * Computes the FLOPs of a matrix product from its shapes: 2 · (output elements) · K. K is the
 * first input's last dimension, unless that input is transposed, which shows as a
 * second-to-last dimension that differs from the output's row count.
 */
function matmulFlops(event: ProfileEvent): number {
  const a = shapeOf(event.args?.input_type_shape?.[0]);
  const out = shapeOf(event.args?.output_type_shape?.[0]);
  if (a.length < 2 || out.length < 2) return 0;
  const rows = out[out.length - 2];
  const k = a[a.length - 2] === rows ? a[a.length - 1] : a[a.length - 2];
  return 2 * out.reduce((x, y) => x * y, 1) * k;
}

/** Reads one profile file and returns its kernel times per node and its session events. */
function readProfile(path: string) {
  const events = JSON.parse(readFileSync(path, "utf8")) as ProfileEvent[];
  const nodes: NodeTime[] = [];
  for (const e of events) {
    if (e.cat !== "Node" || !e.name.endsWith("_kernel_time")) continue;
    const op = e.args?.op_name ?? "unknown";
    const inputs = (e.args?.input_type_shape ?? []).map((s) => JSON.stringify(shapeOf(s)));
    nodes.push({
      name: e.name.slice(0, -"_kernel_time".length),
      op,
      shapes: inputs.join(" x "),
      ms: e.dur / 1000,
      flops: MATMUL_OPS.has(op) ? matmulFlops(e) : 0,
    });
  }
  const session = (name: string) =>
    events.filter((e) => e.cat === "Session" && e.name === name).map((e) => e.dur / 1e6);
  return {
    path,
    nodes,
    runs: session("model_run"),
    sessionInitialization: session("session_initialization")[0] ?? 0,
  };
}

function byOpType(nodes: NodeTime[], runs: number) {
  const groups = new Map<string, { ms: number; count: number; flops: number }>();
  for (const n of nodes) {
    const g = groups.get(n.op) ?? { ms: 0, count: 0, flops: 0 };
    g.ms += n.ms;
    g.count += 1;
    g.flops += n.flops;
    groups.set(n.op, g);
  }
  const total = nodes.reduce((s, n) => s + n.ms, 0);
  return [...groups]
    .map(([op, g]) => ({
      op,
      ms_per_run: g.ms / runs,
      share: (100 * g.ms) / total,
      nodes_per_run: g.count / runs,
      gflops: g.flops > 0 ? g.flops / g.ms / 1e6 : null,
    }))
    .sort((a, b) => b.ms_per_run - a.ms_per_run);
}

/** Sums each node's time over the runs and returns the slowest nodes, per run. */
function slowestNodes(nodes: NodeTime[], runs: number, count: number) {
  const byName = new Map<string, NodeTime>();
  for (const n of nodes) {
    const seen = byName.get(n.name);
    if (seen === undefined) byName.set(n.name, { ...n });
    else seen.ms += n.ms;
  }
  return [...byName.values()]
    .sort((a, b) => b.ms - a.ms)
    .slice(0, count)
    .map((n) => ({
      node: n.name,
      op: n.op,
      inputs: n.shapes,
      ms_per_run: n.ms / runs,
      gflops: n.flops > 0 ? (n.flops * runs) / n.ms / 1e6 : null,
    }));
}

function formatCell(value: string | number | null): string {
  if (value === null) return "";
  if (typeof value === "string") return value;
  return value.toFixed(value >= 100 ? 0 : 1);
}

function table(header: string[], rows: (string | number | null)[][]): string {
  const cell = formatCell;
  return [
    `| ${header.join(" | ")} |`,
    `| ${header.map(() => "---").join(" | ")} |`,
    ...rows.map((r) => `| ${r.map(cell).join(" | ")} |`),
  ].join("\n");
}

function main(): void {
  const program = new Command("train-profile")
    .description("Profile one midpo training benchmark inside ONNX Runtime, by op type")
    .addOption(
      new Option("--bench <name>", "benchmark to profile")
        .choices(["dpo-step", "score", "router-step"])
        .makeOptionMandatory(),
    )
    .addOption(
      new Option("--mode <mode>", "dpo-step only: what each run computes")
        .choices(["step", "step+ref"])
        .default("step"),
    )
    .option("--plan <file>", "plan written by run-train-benches.ts", "bench/.cache/train-plan.json")
    .option("--top <n>", "slowest nodes to list", Number, 15)
    .option("--results-dir <path>", "where the JSON report goes", "bench/results")
    .parse();
  const opts = program.opts<{
    bench: Bench;
    mode: StepMode;
    plan: string;
    top: number;
    resultsDir: string;
  }>();

  const dir = mkdtempSync(join(fileURLToPath(new URL("./.cache/", import.meta.url)), "profile-"));
  const planPath = join(dir, "plan.json");
  writeFileSync(planPath, JSON.stringify({ ...readPlan(opts.plan), repeats: 1 }));
  const args = [
    "--import",
    "tsx",
    fileURLToPath(new URL(`./${FILES[opts.bench]}`, import.meta.url)),
  ];
  args.push("--plan", planPath);
  if (opts.bench === "dpo-step") args.push("--mode", opts.mode);

  log.info({ bench: opts.bench, mode: opts.mode, dir }, "running with ORT profiling");
  const out = spawnSync(process.execPath, args, {
    encoding: "utf8",
    stdio: ["ignore", "pipe", "inherit"],
    env: { ...process.env, [PROFILE_ENV]: join(dir, "ort") },
  });
  if (out.status !== 0) throw new Error(`${FILES[opts.bench]} failed with exit code ${out.status}`);

  // The busiest session is the step (or score) graph. The others are the matmul probe and
  // the reference forward.
  const profiles = readdirSync(dir)
    .filter((f) => f.startsWith("ort") && f.endsWith(".json"))
    .map((f) => readProfile(join(dir, f)));
  const kernelSeconds = (p: ReturnType<typeof readProfile>) =>
    p.nodes.reduce((s, n) => s + n.ms, 0);
  profiles.sort((a, b) => kernelSeconds(b) - kernelSeconds(a));
  const main = profiles[0];
  const runs = main.runs.length;

  const ops = byOpType(main.nodes, runs);
  const slowest = slowestNodes(main.nodes, runs, opts.top);
  const runSeconds = main.runs.reduce((s, r) => s + r, 0) / runs;
  const kernelPerRun = kernelSeconds(main) / runs / 1000;
  console.log(
    `\n${opts.bench} (${opts.bench === "dpo-step" ? opts.mode : "-"}): ${main.nodes.length / runs} ` +
      `nodes per run, ${runSeconds.toFixed(2)} s per run under the profiler, kernels ` +
      `${kernelPerRun.toFixed(2)} s, session initialization ${main.sessionInitialization.toFixed(1)} s\n`,
  );
  console.log(
    table(
      ["op type", "ms per run", "share of kernel time, %", "nodes per run", "GFLOP/s"],
      ops.map((o) => [o.op, o.ms_per_run, o.share, o.nodes_per_run, o.gflops]),
    ),
  );
  console.log();
  console.log(
    table(
      ["node", "op", "inputs", "ms per run", "GFLOP/s"],
      slowest.map((n) => [n.node, n.op, n.inputs, n.ms_per_run, n.gflops]),
    ),
  );

  mkdirSync(opts.resultsDir, { recursive: true });
  const stamp = new Date()
    .toISOString()
    .replace(/:/g, "-")
    .replace(/\.\d+Z$/, "Z");
  const path = join(opts.resultsDir, `train-profile-${opts.bench}-${stamp}.json`);
  const report = {
    bench: opts.bench,
    mode: opts.mode,
    profile: main.path,
    runs,
    run_s: runSeconds,
    kernel_s_per_run: kernelPerRun,
    session_initialization_s: main.sessionInitialization,
    op_types: ops,
    slowest_nodes: slowest,
  };
  writeFileSync(path, JSON.stringify(report, null, 2) + "\n");
  log.info({ path }, "wrote the profile summary");
}

main();
