// AdamW and global gradient-norm clipping over named float32 parameters, computing what
// torch.optim.AdamW and torch.nn.utils.clip_grad_norm_ compute (torch 1.13, the single-tensor
// code path, amsgrad and maximize off).
//
// Parameters, gradients and optimizer state are Float32Arrays, as torch keeps them for float32
// parameters. Each element's update is evaluated in float64 and rounded once when stored, so
// results can differ from torch in the last float32 bit, which rounds after every operation.
// The updates are plain loops on the CPU, meant for the trainable adapter and router weights
// rather than for a whole model.

import { MidpoError } from "../errors.js";

/** Named tensors of one model part, each flattened in row-major order. */
export type NamedArrays = Record<string, Float32Array>;

export interface AdamWOptions {
  /** Learning rate used when `step` is called without one. */
  lr: number;
  /** Decay rates of the first and second moment estimates. torch's default is (0.9, 0.999). */
  betas?: readonly [number, number];
  /** Term added to the denominator for numerical stability. torch's default is 1e-8. */
  eps?: number;
  /** Decoupled weight decay: each step multiplies a parameter by `1 - lr * weightDecay`. */
  weightDecay?: number;
}

/** Checkpointable optimizer state, with the names torch's AdamW `state_dict` uses. */
export interface AdamWState {
  /** Optimizer steps taken so far. The next step uses bias corrections for `step + 1`. */
  step: number;
  /** First moment estimate per parameter. */
  expAvg: NamedArrays;
  /** Second moment estimate (uncentred variance) per parameter. */
  expAvgSq: NamedArrays;
}

/** AdamW with decoupled weight decay, updating the parameters in place. */
export class AdamW {
  readonly lr: number;
  readonly betas: readonly [number, number];
  readonly eps: number;
  readonly weightDecay: number;
  private stepCount = 0;
  private readonly expAvg: NamedArrays = {};
  private readonly expAvgSq: NamedArrays = {};

  /** `params` are updated in place by `step`. The optimizer keeps references to them. */
  constructor(
    private readonly params: NamedArrays,
    options: AdamWOptions,
  ) {
    this.lr = options.lr;
    this.betas = options.betas ?? [0.9, 0.999];
    this.eps = options.eps ?? 1e-8;
    // torch.optim.AdamW defaults to 0.01, unlike torch.optim.Adam.
    this.weightDecay = options.weightDecay ?? 0.01;
    checkHyperparameters(this);

    for (const [name, param] of Object.entries(params)) {
      this.expAvg[name] = new Float32Array(param.length);
      this.expAvgSq[name] = new Float32Array(param.length);
    }
  }

  /** Optimizer steps taken so far. */
  get steps(): number {
    return this.stepCount;
  }

  /**
   * Applies one AdamW update to every parameter. `grads` must have an entry of the same length
   * for each parameter, and `lr` (this step's scheduled learning rate) defaults to `this.lr`.
   */
  step(grads: NamedArrays, lr: number = this.lr): void {
    checkGrads(this.params, grads);
    if (!(Number.isFinite(lr) && lr >= 0)) {
      throw new Error(`AdamW.step: learning rate ${lr} is not a finite non-negative number`);
    }

    this.stepCount += 1;
    const [beta1, beta2] = this.betas;
    const biasCorrection1 = 1 - beta1 ** this.stepCount;
    const biasCorrection2Sqrt = Math.sqrt(1 - beta2 ** this.stepCount);
    const coefficients: StepCoefficients = {
      decay: 1 - lr * this.weightDecay,
      beta1,
      beta2,
      stepSize: lr / biasCorrection1,
      biasCorrection2Sqrt,
      eps: this.eps,
    };

    for (const [name, param] of Object.entries(this.params)) {
      updateParameter(param, grads[name], this.expAvg[name], this.expAvgSq[name], coefficients);
    }
  }

  /** Returns copies of the step count and moment estimates, for a checkpoint. */
  state(): AdamWState {
    return {
      step: this.stepCount,
      expAvg: copyArrays(this.expAvg),
      expAvgSq: copyArrays(this.expAvgSq),
    };
  }

  /**
   * Restores state saved by `state()` for the same parameters. Throws MidpoError when the state
   * belongs to other parameters (names or sizes differ), so a checkpoint of another run or
   * adapter shape is rejected before it changes anything.
   */
  loadState(state: AdamWState): void {
    if (!Number.isSafeInteger(state.step) || state.step < 0) {
      throw new MidpoError(
        `Optimizer state has step ${state.step}, expected a non-negative integer. ` +
          `The checkpoint is corrupt. Resume from another checkpoint or start again.`,
      );
    }
    checkStateArrays("exp_avg", this.params, state.expAvg);
    checkStateArrays("exp_avg_sq", this.params, state.expAvgSq);

    this.stepCount = state.step;
    for (const name of Object.keys(this.params)) {
      this.expAvg[name].set(state.expAvg[name]);
      this.expAvgSq[name].set(state.expAvgSq[name]);
    }
  }
}

interface StepCoefficients {
  decay: number;
  beta1: number;
  beta2: number;
  stepSize: number;
  biasCorrection2Sqrt: number;
  eps: number;
}

/**
 * Applies one AdamW update to a parameter, in the order of torch's `_single_tensor_adamw`:
 *   p   = p * (1 - lr * wd)
 *   m   = beta1 * m + (1 - beta1) * g
 *   v   = beta2 * v + (1 - beta2) * g^2
 *   p  -= lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
 */
function updateParameter(
  param: Float32Array,
  grad: Float32Array,
  expAvg: Float32Array,
  expAvgSq: Float32Array,
  c: StepCoefficients,
): void {
  for (let i = 0; i < param.length; i++) {
    const g = grad[i];
    const m = expAvg[i] * c.beta1 + g * (1 - c.beta1);
    const v = expAvgSq[i] * c.beta2 + g * g * (1 - c.beta2);
    expAvg[i] = m;
    expAvgSq[i] = v;

    // Read the moments back after float32 rounding, because torch divides the stored values.
    const denominator = Math.sqrt(expAvgSq[i]) / c.biasCorrection2Sqrt + c.eps;
    param[i] = param[i] * c.decay - (c.stepSize * expAvg[i]) / denominator;
  }
}

/**
 * Scales `grads` in place so that their global L2 norm is at most `maxNorm`, as
 * `torch.nn.utils.clip_grad_norm_` does: the scale is `maxNorm / (norm + 1e-6)` when that is
 * below 1, and the gradients are left as they are otherwise. Returns the norm before clipping.
 *
 * Unlike torch, which would multiply every gradient by 0 or NaN, a non-finite norm leaves the
 * gradients unchanged, so the caller can see it in the return value and skip the step.
 */
export function clipGradNorm(
  grads: NamedArrays | readonly Float32Array[],
  maxNorm: number,
): number {
  if (!(maxNorm > 0)) {
    throw new MidpoError(`Max gradient norm ${maxNorm} is invalid. Pass a positive number.`);
  }
  const arrays = Array.isArray(grads) ? grads : Object.values(grads);
  const norm = globalNorm(arrays);
  if (!Number.isFinite(norm)) {
    return norm;
  }

  const scale = maxNorm / (norm + 1e-6);
  if (scale < 1) {
    for (const grad of arrays) {
      for (let i = 0; i < grad.length; i++) {
        grad[i] *= scale;
      }
    }
  }
  return norm;
}

/** L2 norm of all elements of `arrays` together, summed in float64. */
export function globalNorm(arrays: readonly Float32Array[]): number {
  let sumOfSquares = 0;
  for (const array of arrays) {
    for (let i = 0; i < array.length; i++) {
      sumOfSquares += array[i] * array[i];
    }
  }
  return Math.sqrt(sumOfSquares);
}

function checkHyperparameters(optimizer: AdamW): void {
  const [beta1, beta2] = optimizer.betas;
  const problems: string[] = [];
  if (!(Number.isFinite(optimizer.lr) && optimizer.lr >= 0)) {
    problems.push(`learning rate ${optimizer.lr} must be a finite number >= 0`);
  }
  if (!(beta1 >= 0 && beta1 < 1) || !(beta2 >= 0 && beta2 < 1)) {
    problems.push(`betas (${beta1}, ${beta2}) must each be in [0, 1)`);
  }
  if (!(optimizer.eps >= 0)) {
    problems.push(`eps ${optimizer.eps} must be >= 0`);
  }
  if (!(optimizer.weightDecay >= 0)) {
    problems.push(`weight decay ${optimizer.weightDecay} must be >= 0`);
  }
  if (problems.length > 0) {
    throw new MidpoError(`Invalid AdamW settings: ${problems.join("; ")}.`);
  }
}

/** Rejects gradients that do not match the parameters, which is a bug in the caller. */
function checkGrads(params: NamedArrays, grads: NamedArrays): void {
  for (const [name, param] of Object.entries(params)) {
    const grad = grads[name];
    if (grad === undefined) {
      throw new Error(`AdamW.step: no gradient for parameter "${name}"`);
    }
    if (grad.length !== param.length) {
      throw new Error(
        `AdamW.step: gradient of "${name}" has ${grad.length} elements, ` +
          `the parameter has ${param.length}`,
      );
    }
  }
}

function checkStateArrays(field: string, params: NamedArrays, arrays: NamedArrays): void {
  for (const [name, param] of Object.entries(params)) {
    const array = arrays[name];
    if (array === undefined) {
      throw new MidpoError(
        `Optimizer state has no ${field} for parameter "${name}". The checkpoint was saved for ` +
          `other parameters (another adapter or model). Resume from a matching checkpoint.`,
      );
    }
    if (array.length !== param.length) {
      throw new MidpoError(
        `Optimizer state ${field} of "${name}" has ${array.length} elements, but the ` +
          `parameter has ${param.length}. The checkpoint was saved for another LoRA rank or ` +
          `model. Resume from a matching checkpoint.`,
      );
    }
  }
  const extra = Object.keys(arrays).filter((name) => !(name in params));
  if (extra.length > 0) {
    throw new MidpoError(
      `Optimizer state has ${field} for unknown parameters: ${extra.slice(0, 5).join(", ")}. ` +
        `The checkpoint was saved for other parameters. Resume from a matching checkpoint.`,
    );
  }
}

function copyArrays(arrays: NamedArrays): NamedArrays {
  const copies: NamedArrays = {};
  for (const [name, array] of Object.entries(arrays)) {
    copies[name] = Float32Array.from(array);
  }
  return copies;
}
