// Learning-rate schedules with linear warmup, as transformers defines them in
// `transformers/optimization.py` (`get_constant_schedule_with_warmup`,
// `get_linear_schedule_with_warmup`, `get_cosine_schedule_with_warmup` with num_cycles 0.5).
//
// Those functions return a torch LambdaLR. LambdaLR sets the learning rate to
// `baseLr * multiplier(0)` on construction and to `baseLr * multiplier(k)` after its k-th
// `scheduler.step()`. The trainer calls `scheduler.step()` once after each optimizer step, so
// optimizer step k (0-based) runs at `baseLr * multiplier(k)`. With warmup, step 0 therefore
// runs at learning rate 0.

import { MidpoError } from "../errors.js";

export const SCHEDULE_KINDS = ["constant", "linear", "cosine"] as const;

export type ScheduleKind = (typeof SCHEDULE_KINDS)[number];

export interface ScheduleOptions {
  /** Peak learning rate, reached at the end of warmup. */
  baseLr: number;
  /** Optimizer steps of linear warmup from 0 to `baseLr`. */
  warmupSteps: number;
  /** Optimizer steps of the whole run. The linear and cosine schedules reach 0 here. */
  totalSteps: number;
}

/** Returns the learning rate of optimizer step `step` (0-based). */
export function learningRate(kind: ScheduleKind, step: number, options: ScheduleOptions): number {
  if (!(Number.isFinite(options.baseLr) && options.baseLr >= 0)) {
    throw new MidpoError(
      `Learning rate ${options.baseLr} is invalid. Pass a finite non-negative number.`,
    );
  }
  checkStepCount("step", step);
  checkStepCount("warmupSteps", options.warmupSteps);
  checkStepCount("totalSteps", options.totalSteps);
  return options.baseLr * lrMultiplier(kind, step, options.warmupSteps, options.totalSteps);
}

function lrMultiplier(
  kind: ScheduleKind,
  step: number,
  warmupSteps: number,
  totalSteps: number,
): number {
  if (step < warmupSteps) {
    return step / Math.max(1, warmupSteps);
  }

  // Fraction of the post-warmup steps already done. Past totalSteps it exceeds 1: the linear
  // schedule stays at 0 there, while transformers' cosine formula rises again, and so does this.
  const decaySteps = Math.max(1, totalSteps - warmupSteps);
  switch (kind) {
    case "constant":
      return 1;
    case "linear":
      return Math.max(0, (totalSteps - step) / decaySteps);
    case "cosine": {
      const progress = (step - warmupSteps) / decaySteps;
      // num_cycles 0.5: half a cosine period, from 1 at the end of warmup to 0 at totalSteps.
      // transformers writes the angle as pi * num_cycles * 2 * progress, which is exactly this.
      return Math.max(0, 0.5 * (1 + Math.cos(Math.PI * progress)));
    }
  }
}

/**
 * Converts a warmup ratio into steps as transformers' `TrainingArguments.get_warmup_steps`
 * does: `ceil(ratio * totalSteps)`. The float product is not corrected, so 0.07 * 100 =
 * 7.000000000000001 gives 8 warmup steps there and here.
 */
export function warmupStepsFromRatio(ratio: number, totalSteps: number): number {
  if (!(ratio >= 0 && ratio <= 1)) {
    throw new MidpoError(`Warmup ratio ${ratio} is invalid. Pass a number from 0 to 1.`);
  }
  checkStepCount("totalSteps", totalSteps);
  return Math.ceil(ratio * totalSteps);
}

function checkStepCount(name: string, value: number): void {
  if (!Number.isSafeInteger(value) || value < 0) {
    throw new MidpoError(
      `Learning-rate schedule: ${name} is ${value}, expected a non-negative integer ` +
        `number of optimizer steps.`,
    );
  }
}
