// Reward and cost model training on synthetic pairs with a clear signal, on the tiny fixture
// backbone, and the saved model read back by the score-model loader.

import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { Rng } from "../src/generate/sampling.js";
import { loadCausalLM } from "../src/model/load.js";
import { ScoreModel } from "../src/model/score-model.js";
import { createLoraConfig } from "../src/train/lora.js";
import { trainScoreModel, type ScorePair } from "../src/train/score-train.js";
import { TINY_MODEL, trainerOptions } from "./helpers/synthetic-dpo.js";

const work = mkdtempSync(join(tmpdir(), "midpo-score-"));
afterAll(() => rmSync(work, { recursive: true, force: true }));

const HELPFUL = 10;
const UNHELPFUL = 20;
const UNSAFE = 50;
const SAFE = 60;

/** Reward pairs: the better response starts with HELPFUL. Cost pairs: unsafe ones carry UNSAFE. */
function pairs(kind: "reward" | "cost", n: number, seed: number): ScorePair[] {
  const rng = new Rng(seed);
  const token = () => 70 + Math.floor(rng.next() * 150);
  const noise = () => Array.from({ length: 1 + Math.floor(rng.next() * 3) }, token);
  return Array.from({ length: n }, () => {
    const prompt = [1, ...noise()];
    if (kind === "reward") {
      return {
        chosenIds: [...prompt, HELPFUL, ...noise(), 2],
        rejectedIds: [...prompt, UNHELPFUL, ...noise(), 2],
        chosenUnsafe: null,
        rejectedUnsafe: null,
      };
    }
    // Half the pairs have one unsafe response, the other half two safe ones.
    const rejectedUnsafe = rng.next() < 0.5;
    return {
      chosenIds: [...prompt, SAFE, ...noise(), 2],
      rejectedIds: [...prompt, rejectedUnsafe ? UNSAFE : SAFE, ...noise(), 2],
      chosenUnsafe: false,
      rejectedUnsafe,
    };
  });
}

describe.each(["reward", "cost"] as const)("%s model training", (kind) => {
  it("reaches high held-out accuracy and saves a loadable model", async () => {
    const base = loadCausalLM(TINY_MODEL);
    const rawConfig = JSON.parse(readFileSync(join(TINY_MODEL, "config.json"), "utf8"));
    const out = join(work, kind);
    const summary = await trainScoreModel(
      base.config,
      rawConfig,
      base.weights,
      pairs(kind, 96, 1),
      pairs(kind, 48, 2),
      {
        kind,
        lora: createLoraConfig({ r: 4, loraAlpha: 8, targetModules: ["down_proj", "o_proj"] }),
        unfreezeLayers: 0,
        regularization: 0.001,
        trainer: trainerOptions(out, { maxSteps: 40, lr: 1e-2, runKey: kind }),
      },
    );
    if (kind === "reward") expect(summary.eval!.accuracy).toBeGreaterThanOrEqual(0.9);
    else expect(summary.eval!.sign_accuracy).toBeGreaterThanOrEqual(0.9);

    // The saved model (LoRA merged into the weights) scores the held-out pairs as the
    // training graph did.
    const model = ScoreModel.load(out);
    const held = pairs(kind, 48, 2);
    const scores = await model.endScores([
      ...held.map((p) => p.chosenIds),
      ...held.map((p) => p.rejectedIds),
    ]);
    if (kind === "reward") {
      const wins = held.filter((_, i) => scores[i] > scores[48 + i]).length;
      expect(wins / 48).toBeCloseTo(summary.eval!.accuracy, 10);
    } else {
      const labels = [...held.map((p) => p.chosenUnsafe), ...held.map((p) => p.rejectedUnsafe)];
      const rightSign = labels.filter((unsafe, i) => scores[i] > 0 === unsafe).length;
      expect(rightSign / labels.length).toBeCloseTo(summary.eval!.sign_accuracy, 10);
    }
    await model.release();
  });
});
