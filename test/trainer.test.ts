// The DPO trainer end to end on the tiny fixture model: learning a clear synthetic signal,
// exact resume after SIGKILL, refusing to overwrite a run, and stopping on a NaN loss.

import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { runDpoStage } from "../src/pipeline/stages.js";
import { createLoraConfig, loadLoraAdapter } from "../src/train/lora.js";
import { epochBatches, flattenSettings } from "../src/train/trainer.js";
import { runSyntheticDpo, trainerOptions } from "./helpers/synthetic-dpo.js";

const work = mkdtempSync(join(tmpdir(), "midpo-trainer-"));
const cacheDir = join(work, "cache");
afterAll(() => rmSync(work, { recursive: true, force: true }));

function runChild(outDir: string, resume: boolean, killAt?: number) {
  return spawnSync(
    process.execPath,
    [
      "--import",
      "tsx",
      join(import.meta.dirname, "helpers", "dpo-run.ts"),
      outDir,
      cacheDir,
      resume ? "resume" : "",
    ],
    {
      env: {
        ...process.env,
        ...(killAt === undefined ? {} : { KILL_AT_CHECKPOINT: String(killAt) }),
      },
      encoding: "utf8",
    },
  );
}

function maxAbsDiff(a: Float32Array, b: Float32Array): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

describe("epochBatches", () => {
  it("covers every example once and depends only on seed and epoch", () => {
    const lengths = Array.from({ length: 103 }, (_, i) => (i * 37) % 50);
    const a = epochBatches(lengths, 8, 3, 0);
    expect(a.flat().sort((x, y) => x - y)).toEqual(lengths.map((_, i) => i));
    expect(epochBatches(lengths, 8, 3, 0)).toEqual(a);
    expect(epochBatches(lengths, 8, 3, 1)).not.toEqual(a);
  });
});

function trainerOptionsFor(outDir: string) {
  const options: Partial<ReturnType<typeof trainerOptions>> = trainerOptions(outDir);
  delete options.outDir;
  delete options.runKey;
  return {
    trainer: options as Required<Omit<typeof options, "outDir" | "runKey" | "runSettings">>,
  };
}

describe("flattenSettings", () => {
  it("flattens nested keys and hashes long values", () => {
    const flat = flattenSettings({
      stage: "dpo",
      trainer: { lr: 0.001, betas: [0.9, 0.95], resume: null },
      records: Array.from({ length: 40 }, (_, i) => `record-${i}`),
    });
    expect(flat.stage).toBe('"dpo"');
    expect(flat["trainer.lr"]).toBe("0.001");
    expect(flat["trainer.betas"]).toBe("[0.9,0.95]");
    expect(flat["trainer.resume"]).toBe("null");
    expect(flat.records).toMatch(/^#[0-9a-f]{12}$/);
  });
});

describe("DPO trainer", () => {
  it("learns a clear preference signal on held-out pairs", async () => {
    const { summary } = await runSyntheticDpo(join(work, "learn"), cacheDir);
    expect(summary.eval!["rewards/accuracies"]).toBeGreaterThanOrEqual(0.9);
    const lines = readFileSync(join(work, "learn", "metrics.jsonl"), "utf8")
      .trim()
      .split("\n");
    const first = JSON.parse(lines[0]);
    for (const key of [
      "loss",
      "rewards/chosen",
      "rewards/rejected",
      "rewards/accuracies",
      "rewards/margins",
      "logps/chosen",
      "logps/rejected",
      "grad_norm",
      "lr",
    ]) {
      expect(first, key).toHaveProperty(key);
    }
    expect(existsSync(join(work, "learn", "adapter_model.safetensors"))).toBe(true);
  });

  it("resumes after SIGKILL to the same adapter as an uninterrupted run", () => {
    const straight = join(work, "straight");
    const killed = join(work, "killed");
    const ok = runChild(straight, false);
    expect(ok.status, ok.stderr).toBe(0);

    const first = runChild(killed, false, 10);
    expect(first.signal).toBe("SIGKILL");
    expect(existsSync(join(killed, "training_summary.json"))).toBe(false);
    const second = runChild(killed, true);
    expect(second.status, second.stderr).toBe(0);
    expect(second.stderr).toMatch(/resuming/);

    const a = loadLoraAdapter(straight);
    const b = loadLoraAdapter(killed);
    for (const [name, m] of a.modules) {
      const other = b.modules.get(name)!;
      expect(maxAbsDiff(m.A, other.A), `${name} lora_A`).toBeLessThanOrEqual(1e-6);
      expect(maxAbsDiff(m.B, other.B), `${name} lora_B`).toBeLessThanOrEqual(1e-6);
    }
    const logA = readFileSync(join(straight, "metrics.jsonl"), "utf8");
    const logB = readFileSync(join(killed, "metrics.jsonl"), "utf8");
    expect(logB.trim().split("\n").length).toBe(logA.trim().split("\n").length);
  });

  it("refuses to overwrite an earlier run without --resume", async () => {
    await expect(runSyntheticDpo(join(work, "learn"), cacheDir)).rejects.toThrow(
      /already has checkpoints/,
    );
  });

  it("rejects a used --out before loading", async () => {
    const { trainer } = trainerOptionsFor(join(work, "learn"));
    const stage = runDpoStage({
      model: join(work, "no-such-model"),
      data: {
        files: [join(work, "no-such-data.jsonl")],
        load: {},
        evalRatio: 0.1,
        template: "safe-rlhf",
        maxLength: 64,
      },
      out: join(work, "learn"),
      lora: createLoraConfig({ r: 4 }),
      loss: { type: "sigmoid", beta: 0.1, labelSmoothing: 0 },
      trainer,
    });
    await expect(stage).rejects.toThrow(/learn already has checkpoints/);
  });

  it("names differing settings on resume", async () => {
    const out = join(work, "mismatch");
    const settings = (lr: string) => ({
      stage: '"dpo"',
      "trainer.lr": lr,
      records: "#0123456789ab",
    });
    await runSyntheticDpo(out, cacheDir, {
      maxSteps: 2,
      saveEvery: 1,
      runKey: "first",
      runSettings: settings("0.02"),
    });
    const resumed = runSyntheticDpo(out, cacheDir, {
      maxSteps: 2,
      resume: true,
      runKey: "second",
      runSettings: settings("0.001"),
    });
    await expect(resumed).rejects.toThrow(
      /different data, model or settings \(--lr: 0\.02 then, 0\.001 now\)/,
    );
  });

  it("resumes with paths written differently", async () => {
    const out = join(work, "moved-paths");
    const settings = (prefix: string) => ({
      "trainer.lr": "0.02",
      model: `"${prefix}model"`,
      "data.files": `["${prefix}pairs.jsonl"]`,
      cacheDir: `"${prefix}cache"`,
      dataContents: '"#aaaa"',
    });
    await runSyntheticDpo(out, cacheDir, {
      maxSteps: 2,
      saveEvery: 1,
      runKey: "relative",
      runSettings: settings(""),
    });
    rmSync(join(out, "checkpoint-2"), { recursive: true });
    const resumed = await runSyntheticDpo(out, cacheDir, {
      maxSteps: 2,
      saveEvery: 1,
      resume: true,
      runKey: "absolute",
      runSettings: { ...settings("/abs/"), added: '"by a newer version"' },
    });
    expect(resumed.summary.steps).toBe(2);
  });

  it("rejects data edited in place", async () => {
    const out = join(work, "edited-data");
    const settings = (contents: string) => ({ "trainer.lr": "0.02", dataContents: contents });
    const options = { maxSteps: 2, saveEvery: 1, runKey: "same" };
    await runSyntheticDpo(out, cacheDir, { ...options, runSettings: settings('"#aaaa"') });
    const resumed = runSyntheticDpo(out, cacheDir, {
      ...options,
      resume: true,
      runSettings: settings('"#bbbb"'),
    });
    await expect(resumed).rejects.toThrow(
      /the contents of the data files: "#aaaa" then, "#bbbb" now/,
    );
  });

  it("removes partial checkpoints on resume", async () => {
    const out = join(work, "partial");
    const options = { maxSteps: 2, saveEvery: 1, runKey: "partial" };
    await runSyntheticDpo(out, cacheDir, options);
    rmSync(join(out, "checkpoint-2"), { recursive: true });
    const partial = join(out, "checkpoint-2.tmp-99999");
    mkdirSync(partial);
    writeFileSync(join(partial, "adapter_model.safetensors"), "cut off");
    await runSyntheticDpo(out, cacheDir, { ...options, resume: true });
    expect(existsSync(partial)).toBe(false);
    expect(existsSync(join(out, "checkpoint-2", "adapter_model.safetensors"))).toBe(true);
  });

  it("names a corrupt trainer state", async () => {
    const out = join(work, "corrupt-state");
    const options = { maxSteps: 2, saveEvery: 1, runKey: "corrupt" };
    await runSyntheticDpo(out, cacheDir, options);
    writeFileSync(join(out, "checkpoint-2", "trainer_state.json"), '{"step": 2, "ep');
    await expect(runSyntheticDpo(out, cacheDir, { ...options, resume: true })).rejects.toThrow(
      /cannot read .*checkpoint-2\/trainer_state\.json .*; delete .*checkpoint-2 to resume from the checkpoint before it/,
    );
  });

  it("stops on a NaN loss and keeps the last good checkpoint", async () => {
    const out = join(work, "nan");
    // A learning rate of 1e30 makes the first update overflow the activations.
    const run = runSyntheticDpo(out, cacheDir, {
      lr: 1e30,
      warmupRatio: 0,
      saveEvery: 1,
      schedule: "constant",
    });
    await expect(run).rejects.toThrow(
      /became (NaN|Infinity|-Infinity) at step \d+.*last good checkpoint is .*checkpoint-1/,
    );
    expect(existsSync(join(out, "checkpoint-1", "adapter_model.safetensors"))).toBe(true);
    const log = readFileSync(join(out, "metrics.jsonl"), "utf8");
    expect(log).toMatch(/"error"/);
  });
});
