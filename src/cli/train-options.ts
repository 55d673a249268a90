// Flags shared by the training commands, and their conversion to library options.

import { Command, Option } from "commander";
import type { PromptTemplate } from "../data/tokenize-pairs.js";
import type { DataOptions, TrainerSettings } from "../pipeline/stages.js";
import { trainerDefaults } from "../pipeline/stages.js";
import type { LoraConfigOptions } from "../train/lora.js";
import type { LossOptions, LossType } from "../train/losses.js";
import type { ScheduleKind } from "../train/schedule.js";
import { parseInteger, parseNumber } from "./options.js";
import { addReadOptions, readOptionsFrom, type ReadFlags } from "./read-options.js";

export function addTrainerOptions(
  cmd: Command,
  defaults: { lr: number; maxSteps?: number },
): Command {
  return cmd
    .option("--lr <x>", "peak learning rate", parseNumber(0), defaults.lr)
    .option("--epochs <n>", "passes over the training data", parseInteger(1), 1)
    .option(
      "--max-steps <n>",
      "stop after this many optimizer steps (overrides --epochs)",
      parseInteger(1),
      defaults.maxSteps,
    )
    .option("--batch-size <n>", "examples (pairs) per micro-batch", parseInteger(1), 4)
    .option("--grad-accum <n>", "micro-batches per optimizer step", parseInteger(1), 1)
    .addOption(
      new Option("--schedule <kind>", "learning-rate schedule")
        .choices(["constant", "linear", "cosine"])
        .default("cosine"),
    )
    .option("--warmup-ratio <x>", "share of steps spent warming up", parseNumber(0, 1), 0.03)
    .option("--weight-decay <x>", "AdamW decoupled weight decay", parseNumber(0), 0.01)
    .option("--adam-beta1 <x>", "AdamW beta1", parseNumber(0, 1), 0.9)
    .option("--adam-beta2 <x>", "AdamW beta2", parseNumber(0, 1), 0.95)
    .option("--max-grad-norm <x>", "clip the global gradient norm; 0 disables", parseNumber(0), 1)
    .option("--eval-every <n>", "evaluate every N steps (0: at the end only)", parseInteger(0), 0)
    .option(
      "--save-every <n>",
      "checkpoint every N steps (0: at the end only)",
      parseInteger(0),
      50,
    )
    .option("--keep-checkpoints <n>", "checkpoints kept on disk", parseInteger(1), 2)
    .option("--seed <n>", "seed for initialisation, shuffling and dropout", parseInteger(0), 0)
    .option("--resume", "continue from the latest checkpoint in --out", false);
}

/**
 * Adds the data flags. Commands that read preference records (`preferences`) also get the
 * schema, container, split and field-mapping flags of `midpo data`.
 */
export function addDataOptions(cmd: Command, preferences = true): Command {
  if (preferences) addReadOptions(cmd);
  return cmd
    .option(
      "--eval-ratio <x>",
      "share of prompts held out for evaluation",
      parseNumber(0, 0.9),
      0.1,
    )
    .addOption(
      new Option("--template <kind>", "prompt template, the same in every stage of a run")
        .choices(["safe-rlhf", "chat"])
        .default("safe-rlhf"),
    )
    .option(
      "--max-length <n>",
      "max tokens of prompt + response (prompts are cut from the left)",
      parseInteger(8),
      512,
    );
}

export function addLoraOptions(
  cmd: Command,
  defaults: { r: number; alpha: number; targets: string },
): Command {
  return cmd
    .option("--lora-r <n>", "LoRA rank", parseInteger(1), defaults.r)
    .option("--lora-alpha <x>", "LoRA alpha (scale = alpha / r)", parseNumber(0), defaults.alpha)
    .option("--lora-dropout <p>", "dropout on the LoRA input", parseNumber(0, 0.9), 0)
    .option(
      "--target-modules <list>",
      "comma-separated module names, e.g. down_proj,q_proj",
      defaults.targets,
    )
    .option("--use-rslora", "scale by alpha / sqrt(r)", false);
}

export function addLossOptions(cmd: Command): Command {
  return cmd
    .addOption(
      new Option("--loss <type>", "preference loss")
        .choices(["sigmoid", "ipo", "hinge", "robust"])
        .default("sigmoid"),
    )
    .option("--beta <x>", "beta of the implicit reward", parseNumber(0), 0.1)
    .option(
      "--label-smoothing <x>",
      "label smoothing (cDPO with sigmoid, noise rate with robust)",
      parseNumber(0, 0.49),
      0,
    );
}

type Opts = Record<string, unknown>;

export function trainerFrom(o: Opts): TrainerSettings {
  return trainerDefaults({
    lr: o.lr as number,
    epochs: o.epochs as number,
    ...(o.maxSteps !== undefined ? { maxSteps: o.maxSteps as number } : {}),
    batchSize: o.batchSize as number,
    gradAccum: o.gradAccum as number,
    schedule: o.schedule as ScheduleKind,
    warmupRatio: o.warmupRatio as number,
    weightDecay: o.weightDecay as number,
    betas: [o.adamBeta1 as number, o.adamBeta2 as number],
    maxGradNorm: o.maxGradNorm as number,
    evalEvery: o.evalEvery as number,
    saveEvery: o.saveEvery as number,
    keepCheckpoints: o.keepCheckpoints as number,
    seed: o.seed as number,
    resume: o.resume as boolean,
  });
}

export function dataFrom(o: Opts, files: string[]): DataOptions {
  return {
    files,
    // SFT stops at the first invalid record (see readSftExamples) and has no read flags.
    load: o.format === undefined ? { strict: false } : readOptionsFrom(o as unknown as ReadFlags),
    evalRatio: o.evalRatio as number,
    template: o.template as PromptTemplate,
    maxLength: o.maxLength as number,
  };
}

export function loraFrom(o: Opts): LoraConfigOptions {
  return {
    r: o.loraR as number,
    loraAlpha: o.loraAlpha as number,
    loraDropout: o.loraDropout as number,
    targetModules: String(o.targetModules)
      .split(",")
      .map((s) => s.trim())
      .filter((s) => s !== ""),
    useRslora: o.useRslora as boolean,
  };
}

export function lossFrom(o: Opts): LossOptions {
  return {
    type: o.loss as LossType,
    beta: o.beta as number,
    labelSmoothing: o.labelSmoothing as number,
  };
}
