// The midpo side of the scoring benchmark: end scores of the plan's sequences with
// ScoreModel.endScores and its default settings, as `midpo score` runs it: the backbone runs on
// at most SCORE_BATCH_TOKENS tokens per ORT run, sequences that share a prompt run it once,
// and `score.weight` is read at each row's last token. Each timed run is followed by one with
// prompt sharing off, which does the PyTorch side's work. bench/run-train-benches.ts starts
// this file and reads the one JSON line it prints.
//
// Usage: npx tsx bench/score.ts --plan FILE

import { performance } from "node:perf_hooks";
import { Command } from "commander";

import { ScoreModel, type EndScoreOptions } from "../src/model/score-model.js";
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

  // The first calls build the graph and create the session, and the next are the warm-up.
  const alone = { minSharedPrefix: Infinity };
  start = performance.now();
  await model.endScores(sequences.slice(0, 2));
  await model.endScores(sequences.slice(0, 1), alone);
  const sessionCreateSeconds = seconds(start);
  start = performance.now();
  let scores = await model.endScores(sequences);
  const warmupSeconds = seconds(start);
  let aloneScores = await model.endScores(sequences, alone);

  const times: number[] = [];
  const ortTimes: number[] = [];
  const aloneTimes: number[] = [];
  const aloneOrtTimes: number[] = [];
  const timed = async (options: EndScoreOptions, wall: number[], ort: number[]) => {
    const ortBefore = ortClock.seconds;
    const begin = performance.now();
    const result = await model.endScores(sequences, options);
    wall.push(seconds(begin));
    ort.push(ortClock.seconds - ortBefore);
    return result;
  };
  for (let r = 0; r < plan.repeats; r++) {
    scores = await timed({}, times, ortTimes);
    aloneScores = await timed(alone, aloneTimes, aloneOrtTimes);
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
    prompt_length: plan.score_prompt_length,
    alone: {
      seconds: aloneTimes,
      ort_seconds: aloneOrtTimes,
      scores_max_abs_diff: Math.max(...Array.from(scores, (v, i) => Math.abs(v - aloneScores[i]))),
    },
    matmul,
    ...processFields(),
  };
  console.log(JSON.stringify(result));
  await model.release();
}

await main();
