// A synthetic preference set with a clear signal, and a DPO run on the tiny fixture model,
// shared by the trainer tests and the SIGKILL resume harness.

import { join } from "node:path";
import { Rng } from "../../src/generate/sampling.js";
import { loadCausalLM } from "../../src/model/load.js";
import { ValueCache } from "../../src/train/cache.js";
import { referenceLogps, trainDpo } from "../../src/train/dpo.js";
import { createLoraConfig } from "../../src/train/lora.js";
import type { TokenizedPair } from "../../src/train/preference-batch.js";
import type { TrainerOptions } from "../../src/train/trainer.js";

export const TINY_MODEL = join(import.meta.dirname, "..", "fixtures", "tiny", "llama-gqa");

/** Chosen responses start with token 10, rejected ones with token 20; the rest is noise. */
export function syntheticPairs(n: number, seed: number): TokenizedPair[] {
  const rng = new Rng(seed);
  const token = () => 30 + Math.floor(rng.next() * 200);
  return Array.from({ length: n }, () => {
    const prompt = [1, ...Array.from({ length: 2 + Math.floor(rng.next() * 4) }, token)];
    const tail = () => Array.from({ length: 1 + Math.floor(rng.next() * 3) }, token);
    return {
      promptIds: prompt,
      chosenIds: [10, ...tail(), 2],
      rejectedIds: [20, ...tail(), 2],
      margin: 0,
    };
  });
}

export function trainerOptions(
  outDir: string,
  overrides: Partial<TrainerOptions> = {},
): TrainerOptions {
  return {
    outDir,
    epochs: 1,
    maxSteps: 30,
    batchSize: 4,
    gradAccum: 2,
    lr: 2e-2,
    schedule: "cosine",
    warmupRatio: 0.1,
    weightDecay: 0.01,
    betas: [0.9, 0.95],
    eps: 1e-8,
    maxGradNorm: 1,
    evalEvery: 0,
    saveEvery: 5,
    keepCheckpoints: 2,
    seed: 11,
    resume: false,
    runKey: "synthetic-dpo",
    ...overrides,
  };
}

export async function runSyntheticDpo(
  outDir: string,
  cacheDir: string,
  overrides: Partial<TrainerOptions> = {},
) {
  const model = loadCausalLM(TINY_MODEL);
  const cache = new ValueCache(cacheDir);
  const train = await referenceLogps(model, TINY_MODEL, syntheticPairs(64, 1), cache);
  const evalPairs = await referenceLogps(model, TINY_MODEL, syntheticPairs(32, 2), cache);
  const result = await trainDpo(model, train, evalPairs, {
    lora: createLoraConfig({
      r: 4,
      loraAlpha: 8,
      targetModules: ["down_proj", "o_proj"],
      loraDropout: 0.05,
    }),
    loss: { type: "sigmoid", beta: 0.1, labelSmoothing: 0 },
    trainer: trainerOptions(outDir, overrides),
  });
  await model.release();
  return result;
}
