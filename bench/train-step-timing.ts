// The timed loop shared by the midpo side of the DPO step and router step benchmarks: the
// reference forward pass, the step, and the optimizer update after it, each timed on its own.

import { performance } from "node:perf_hooks";

import type { CausalLM } from "../src/model/causal-lm.js";
import { AdamW, clipGradNorm } from "../src/train/optimizer.js";
import {
  collatePairs,
  responseLogps,
  type CollatedPairs,
  type TokenizedPair,
} from "../src/train/preference-batch.js";
import type {
  PreferenceStep,
  StepResult as PreferenceStepResult,
} from "../src/train/preference-step.js";
import type { Param } from "../src/train/trainer.js";
import {
  globalNorm,
  seconds,
  type StepMode,
  type StepResult,
  type TrainPlan,
} from "./train-plan.js";

/** Converts the plan's pairs to midpo's form, margins included. */
export function planPairs(plan: TrainPlan): TokenizedPair[] {
  return plan.pairs.map((p) => ({
    promptIds: p.prompt_ids,
    chosenIds: p.chosen_ids,
    rejectedIds: p.rejected_ids,
    margin: p.margin,
  }));
}

/**
 * Computes the reference model's sequence log-probs for the batch, chosen rows then rejected
 * rows, as src/train/dpo.ts fills its cache: CausalLM.tokenLogprobs on the base model, then the
 * sum over response tokens. The whole batch goes through one ORT run.
 */
export async function referenceLogps(
  model: CausalLM,
  pairs: readonly TokenizedPair[],
  batch: CollatedPairs,
): Promise<Float32Array> {
  const rows = [
    ...pairs.map((p) => [...p.promptIds, ...p.chosenIds]),
    ...pairs.map((p) => [...p.promptIds, ...p.rejectedIds]),
  ];
  const tokenLogprobs = await model.tokenLogprobs(rows, {
    maxBatchTokens: rows.length * batch.width,
  });
  const flat = new Float32Array(batch.rows * (batch.width - 1));
  tokenLogprobs.forEach((lp, r) => flat.set(lp, r * (batch.width - 1)));
  return Float32Array.from(responseLogps(flat, batch));
}

export interface StepTimingInputs {
  plan: TrainPlan;
  mode: StepMode;
  /** The batch: the plan's pairs, with margins set to 0 for plain DPO where the step has none. */
  pairs: TokenizedPair[];
  /** The base model, which computes the reference log-probs. */
  model: CausalLM;
  step: PreferenceStep;
  /** Trainable parameters, updated in place by the optimizer after each timed run. */
  params: Map<string, Param>;
  /** Accumulated seconds inside ORT's session.run (see instrumentOrt). */
  ortClock: { seconds: number };
  /** Gradients whose first 8 values go into the result. */
  sampledGrads: string[];
}

type TimedFields = Pick<
  StepResult,
  | "mode"
  | "rows"
  | "width"
  | "warmup_s"
  | "seconds"
  | "ref_seconds"
  | "ort_seconds"
  | "optimizer_seconds"
  | "loss"
  | "logps"
  | "ref_logps"
  | "grad_norm"
  | "grad_samples"
>;

/**
 * Runs one untimed warm-up step, whose outputs (at the initial parameters) are kept for the
 * comparison with PyTorch, then `plan.repeats` timed runs. After each timed run, gradient
 * clipping and one AdamW update (what the Trainer does per optimizer step) are timed apart.
 */
export async function timeSteps(
  inputs: StepTimingInputs,
): Promise<{ fields: TimedFields; first: PreferenceStepResult }> {
  const { plan, mode, pairs, model, step, params, ortClock } = inputs;
  const batch = collatePairs(pairs);
  const optimizer = new AdamW(Object.fromEntries([...params].map(([name, p]) => [name, p.data])), {
    lr: plan.learning_rate,
    betas: [0.9, 0.95],
    weightDecay: 0.01,
  });

  let start = performance.now();
  let ref = await referenceLogps(model, pairs, batch);
  const first = await step.run(batch, ref, params);
  const warmupSeconds = seconds(start);
  const firstRef = Array.from(ref);

  const times: number[] = [];
  const refTimes: number[] = [];
  const ortTimes: number[] = [];
  const optimizerTimes: number[] = [];
  for (let r = 0; r < plan.repeats; r++) {
    start = performance.now();
    if (mode === "step+ref") ref = await referenceLogps(model, pairs, batch);
    refTimes.push(mode === "step+ref" ? seconds(start) : 0);
    const ortBefore = ortClock.seconds;
    const result = await step.run(batch, ref, params);
    ortTimes.push(ortClock.seconds - ortBefore);
    times.push(seconds(start));

    const updateStart = performance.now();
    const grads = Object.fromEntries(result.grads);
    clipGradNorm(Object.values(grads), plan.max_grad_norm);
    optimizer.step(grads);
    optimizerTimes.push(seconds(updateStart));
  }

  const gradSamples: Record<string, number[]> = {};
  for (const name of inputs.sampledGrads) {
    const grad = first.grads.get(name);
    if (grad === undefined) throw new Error(`the step has no gradient named ${name}`);
    gradSamples[name] = Array.from(grad.subarray(0, 8));
  }
  return {
    first,
    fields: {
      mode,
      rows: batch.rows,
      width: batch.width,
      warmup_s: warmupSeconds,
      seconds: times,
      ref_seconds: refTimes,
      ort_seconds: ortTimes,
      optimizer_seconds: optimizerTimes,
      loss: first.loss,
      logps: first.logps,
      ref_logps: firstRef,
      grad_norm: globalNorm(first.grads.values()),
      grad_samples: gradSamples,
    },
  };
}
