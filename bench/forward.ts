// The midpo side of the forward benchmark: one phase per process, so that each phase's peak
// RSS is its own. bench/run-forward.ts starts this file and reads the one JSON line it prints;
// the plan file fixes the model and the token ids (see forward-plan.ts).
//
// Phases:
//   matmul   A [m, k] @ [k, n] float32 MatMul graph, run `runs` times per repeat.
//   prefill  CausalLM.tokenLogprobs on [batch, seq] ids with its default batching (512 tokens
//            per ORT call): the log-probability of each next token, from the logits at every
//            position but the last.
//   decode   generate() with greedy sampling and a KV cache, for `--batch` rows.
//
// Usage: npx tsx bench/forward.ts --plan FILE --phase matmul|prefill|decode [--batch N]

import { performance } from "node:perf_hooks";
import { Command, InvalidArgumentError } from "commander";

import { generate, type GenerateOptions } from "../src/generate/generate.js";
import { DEFAULT_SAMPLING } from "../src/generate/sampling.js";
import { Graph } from "../src/graph/graph.js";
import * as op from "../src/graph/ops.js";
import type { CausalLM } from "../src/model/causal-lm.js";
import { loadCausalLM } from "../src/model/load.js";
import { ort, Session, tensor } from "../src/runtime/session.js";
import {
  peakRssBytes,
  readPlan,
  type DecodeResult,
  type ForwardPlan,
  type MatmulResult,
  type Phase,
  type PrefillResult,
} from "./forward-plan.js";

/** Measures this process: peak RSS, CPU time, threads and software versions. */
function processFields() {
  const cpu = process.cpuUsage();
  return {
    peak_rss_bytes: peakRssBytes(),
    cpu_s: (cpu.user + cpu.system) / 1e6,
    // The sessions leave intra-op threads to ORT, which uses one per physical core.
    threads: null,
    versions: { node: process.versions.node, "onnxruntime-node": ort.env.versions.node ?? "" },
  };
}

function seconds(since: number): number {
  return (performance.now() - since) / 1000;
}

function fillUniform(out: Float32Array): Float32Array {
  for (let i = 0; i < out.length; i++) out[i] = Math.random() - 0.5;
  return out;
}

// ---------------------------------------------------------------------------------------------
// matmul

async function measureMatmul(plan: ForwardPlan): Promise<MatmulResult> {
  const { m, k, n, runs } = plan.matmul;
  const g = new Graph("matmul");
  const a = g.input("a", "float32", [m, k]);
  const b = g.input("b", "float32", [k, n]);
  g.output("c", op.matmul(a, b));
  const session = await Session.create(g);
  const feeds = {
    a: tensor("float32", fillUniform(new Float32Array(m * k)), [m, k]),
    b: tensor("float32", fillUniform(new Float32Array(k * n)), [k, n]),
  };

  await session.run(feeds);
  const times: number[] = [];
  for (let r = 0; r < plan.repeats; r++) {
    const start = performance.now();
    for (let i = 0; i < runs; i++) await session.run(feeds);
    times.push(seconds(start));
  }
  await session.release();

  return {
    side: "midpo",
    phase: "matmul",
    m,
    k,
    n,
    runs,
    seconds: times,
    ...processFields(),
  };
}

// ---------------------------------------------------------------------------------------------
// prefill

async function measurePrefill(model: CausalLM, plan: ForwardPlan, loadSeconds: number) {
  const ids = plan.prefill_input_ids;
  const batch = ids.length;
  const seq = ids[0].length;
  // midpo runs as a caller gets it: tokenLogprobs splits the batch into ORT calls of at most
  // 512 tokens, which bounds the activations. On the SmolLM-135M shape (ORT 1.31, 2 cores,
  // 2026-12-05), one call of all 1024 tokens was as fast and peaked 22 MiB higher.

  let start = performance.now();
  await model.llamaSession({ output: "token-logprobs" });
  const sessionCreateSeconds = seconds(start);

  start = performance.now();
  let logprobs = await model.tokenLogprobs(ids);
  const warmupSeconds = seconds(start);

  const times: number[] = [];
  for (let r = 0; r < plan.repeats; r++) {
    start = performance.now();
    logprobs = await model.tokenLogprobs(ids);
    times.push(seconds(start));
  }

  const result: PrefillResult = {
    side: "midpo",
    phase: "prefill",
    batch,
    seq,
    load_s: loadSeconds,
    session_create_s: sessionCreateSeconds,
    warmup_s: warmupSeconds,
    seconds: times,
    row_logprob_sums: logprobs.map((row) => row.reduce((a, b) => a + b, 0)),
    first_logprobs: logprobs[0].slice(0, 16),
    ...processFields(),
  };
  return result;
}

// ---------------------------------------------------------------------------------------------
// decode

interface DecodeTiming {
  promptSeconds: number;
  decodeSeconds: number;
  ortRunSeconds: number;
  firstTokens: number[];
}

/**
 * Runs one generate() call and splits its time at the moment the last row receives its first
 * token: before it is the prompt forward, after it the single-token decode steps.
 */
async function timeGenerate(
  model: CausalLM,
  prompts: number[][],
  options: GenerateOptions,
  ortClock: { seconds: number },
): Promise<DecodeTiming> {
  const lastRow = prompts.length - 1;
  let firstTokenAt = -1;
  let ortAtFirstToken = 0;
  const onToken = (row: number) => {
    if (row === lastRow && firstTokenAt < 0) {
      firstTokenAt = performance.now();
      ortAtFirstToken = ortClock.seconds;
    }
  };

  const start = performance.now();
  const generations = await generate(model, prompts, { ...options, onToken });
  const end = performance.now();
  return {
    promptSeconds: (firstTokenAt - start) / 1000,
    decodeSeconds: (end - firstTokenAt) / 1000,
    ortRunSeconds: ortClock.seconds - ortAtFirstToken,
    firstTokens: generations[0].tokens.slice(0, 16),
  };
}

async function measureDecode(
  model: CausalLM,
  plan: ForwardPlan,
  batch: number,
  loadSeconds: number,
): Promise<DecodeResult> {
  const prompts = plan.decode_prompts.slice(0, batch);
  const options: GenerateOptions = {
    ...DEFAULT_SAMPLING,
    maxNewTokens: plan.new_tokens,
    seed: 0,
    eosTokenIds: [],
  };

  let start = performance.now();
  const session = await model.llamaSession({ output: "last-logits", kvCache: true });
  const sessionCreateSeconds = seconds(start);

  // Wraps the session that generate() will fetch from the model's cache, to split each
  // decode step into time inside ORT and time in JavaScript (feeds, cache copies, argmax).
  const ortClock = { seconds: 0 };
  const run = session.run.bind(session);
  session.run = async (feeds, outputs) => {
    const runStart = performance.now();
    try {
      return await run(feeds, outputs);
    } finally {
      ortClock.seconds += seconds(runStart);
    }
  };

  start = performance.now();
  await generate(model, prompts, { ...options, maxNewTokens: 8 });
  const warmupSeconds = seconds(start);

  const timings: DecodeTiming[] = [];
  for (let r = 0; r < plan.repeats; r++) {
    timings.push(await timeGenerate(model, prompts, options, ortClock));
  }

  return {
    side: "midpo",
    phase: "decode",
    batch,
    prompt_length: prompts[0].length,
    new_tokens: plan.new_tokens,
    load_s: loadSeconds,
    session_create_s: sessionCreateSeconds,
    warmup_s: warmupSeconds,
    prompt_seconds: timings.map((t) => t.promptSeconds),
    decode_seconds: timings.map((t) => t.decodeSeconds),
    ort_run_seconds: timings.map((t) => t.ortRunSeconds),
    decode_steps: plan.new_tokens - 1,
    first_tokens: timings[0].firstTokens,
    ...processFields(),
  };
}

// ---------------------------------------------------------------------------------------------

function parsePositiveInteger(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1) {
    throw new InvalidArgumentError(`expected a positive integer, got ${value}`);
  }
  return n;
}

async function main(): Promise<void> {
  const program = new Command("forward")
    .description("Measure one phase of the midpo forward benchmark and print it as JSON")
    .requiredOption("--plan <file>", "plan file written by bench/run-forward.ts")
    .requiredOption("--phase <name>", "matmul, prefill or decode")
    .option(
      "--batch <n>",
      "decode batch size (rows of the plan's decode prompts)",
      parsePositiveInteger,
    )
    .parse();
  const opts = program.opts<{ plan: string; phase: Phase; batch?: number }>();
  const plan = readPlan(opts.plan);

  if (opts.phase === "matmul") {
    console.log(JSON.stringify(await measureMatmul(plan)));
    return;
  }

  const start = performance.now();
  const model = loadCausalLM(plan.model_dir, { mapWeights: true });
  const loadSeconds = seconds(start);

  if (opts.phase === "prefill") {
    console.log(JSON.stringify(await measurePrefill(model, plan, loadSeconds)));
  } else if (opts.phase === "decode") {
    if (opts.batch === undefined) throw new Error("--phase decode needs --batch");
    console.log(JSON.stringify(await measureDecode(model, plan, opts.batch, loadSeconds)));
  } else {
    throw new Error(`unknown phase ${String(opts.phase)}; expected matmul, prefill or decode`);
  }
  await model.release();
}

await main();
