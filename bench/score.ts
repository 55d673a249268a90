// The midpo side of the scoring benchmark: end scores of the plan's sequences with
// ScoreModel.endScores and its default batching, as `midpo score` runs it: the backbone runs on
// at most SCORE_BATCH_TOKENS tokens per ORT run, and `score.weight` is read at each row's last
// token. bench/run-train-benches.ts starts this file and reads the one JSON line it prints.
//
// Usage: npx tsx bench/score.ts --plan FILE

import { performance } from "node:perf_hooks";
import { Command } from "commander";

import { ScoreModel } from "../src/model/score-model.js";
import {
  instrumentOrt,
  measureOrtMatmul,
  processFields,
  readPlan,
  seconds,
  type ScoreResult,
} from "./train-plan.js";

async function main(): Promise<void> {
  const program = new Command("score")
    .description("Measure midpo's end-score throughput and print the result as one JSON line")
    .requiredOption("--plan <file>", "plan file written by bench/run-train-benches.ts")
    .parse();
  const plan = readPlan(program.opts<{ plan: string }>().plan);
  const ortClock = instrumentOrt();
  let matmul = await measureOrtMatmul(plan);

  const sequences = plan.score_sequences;
  const tokens = sequences.reduce((n, s) => n + s.length, 0);

  let start = performance.now();
  const model = ScoreModel.load(plan.score_model_dir);
  const loadSeconds = seconds(start);

  // The first call builds the graph and creates the session; the second is the warm-up.
  start = performance.now();
  await model.endScores(sequences.slice(0, 1));
  const sessionCreateSeconds = seconds(start);
  start = performance.now();
  let scores = await model.endScores(sequences);
  const warmupSeconds = seconds(start);

  const times: number[] = [];
  const ortTimes: number[] = [];
  for (let r = 0; r < plan.repeats; r++) {
    const ortBefore = ortClock.seconds;
    start = performance.now();
    scores = await model.endScores(sequences);
    times.push(seconds(start));
    ortTimes.push(ortClock.seconds - ortBefore);
  }

  matmul = await measureOrtMatmul(plan, matmul);
  const result: ScoreResult = {
    side: "midpo",
    bench: "score",
    sequences: sequences.length,
    tokens,
    load_s: loadSeconds,
    session_create_s: sessionCreateSeconds,
    warmup_s: warmupSeconds,
    seconds: times,
    ort_seconds: ortTimes,
    scores: Array.from(scores),
    matmul,
    ...processFields(),
  };
  console.log(JSON.stringify(result));
  await model.release();
}

await main();
