// The pipeline end to end on the demo corpus with small step counts: a run killed with SIGKILL
// in the middle of the expert stage and rerun skips the finished stages and ends with the same
// adapters and router as an uninterrupted run. Also the config validation.

import { spawnSync } from "node:child_process";
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { parsePipelineConfig } from "../src/pipeline/config.js";
import { runPipeline, StageRunner } from "../src/pipeline/pipeline.js";
import { SafetensorsCheckpoint } from "../src/model/safetensors-checkpoint.js";

const work = mkdtempSync(join(tmpdir(), "midpo-pipeline-"));
afterAll(() => rmSync(work, { recursive: true, force: true }));

function run(out: string, killWhen?: string) {
  return spawnSync(
    process.execPath,
    [
      "--import",
      "tsx",
      join(import.meta.dirname, "helpers", "pipeline-run.ts"),
      out,
      join(work, "assets"),
    ],
    { env: { ...process.env, ...(killWhen ? { KILL_WHEN: killWhen } : {}) }, encoding: "utf8" },
  );
}

function tensors(file: string): Map<string, Float32Array> {
  const ck = SafetensorsCheckpoint.open(file);
  return new Map(ck.names().map((n) => [n, ck.readFloat32(n)]));
}

function maxAbsDiff(a: Map<string, Float32Array>, b: Map<string, Float32Array>): number {
  let m = 0;
  for (const [name, x] of a) {
    const y = b.get(name)!;
    for (let i = 0; i < x.length; i++) m = Math.max(m, Math.abs(x[i] - y[i]));
  }
  return m;
}

describe("pipeline", () => {
  it("resumes after SIGKILL in the expert stage with the same results", () => {
    const straight = join(work, "straight");
    const killed = join(work, "killed");
    const a = run(straight);
    expect(a.status, a.stderr.slice(-2000)).toBe(0);

    const first = run(killed, "04-expert-safety/checkpoint-10");
    expect(first.signal).toBe("SIGKILL");
    expect(existsSync(join(killed, "04-expert-safety", "stage.json"))).toBe(false);
    const second = run(killed);
    expect(second.status, second.stderr.slice(-2000)).toBe(0);
    for (const stage of ["01-sft", "02-reward", "03-cost"]) {
      expect(second.stderr).toMatch(
        new RegExp(`stage already finished; skipping[\\s\\S]*${stage}|${stage}[\\s\\S]*skipping`),
      );
    }
    expect(second.stderr).toMatch(/resuming an interrupted stage/);

    for (const file of [
      "04-expert-safety/adapter_model.safetensors",
      "05-expert-helpfulness/adapter_model.safetensors",
      "08-router/router.safetensors",
    ]) {
      expect(
        maxAbsDiff(tensors(join(straight, file)), tensors(join(killed, file))),
        file,
      ).toBeLessThanOrEqual(1e-6);
    }
    const stages = JSON.parse(readFileSync(join(killed, "04-expert-safety", "stage.json"), "utf8"));
    expect(stages.name).toBe("04-expert-safety");
  });
});

describe("pipeline config", () => {
  it("names the invalid key", () => {
    const bad = {
      out: "x",
      model: "m",
      data: { files: ["a.jsonl"], eval_ratoi: 0.1 },
      router: { lambda_alpha: -1 },
    };
    expect(() => parsePipelineConfig(bad, "midpo.yaml", "/")).toThrow(
      /data: Unrecognized key: "eval_ratoi"/,
    );
    expect(() => parsePipelineConfig(bad, "midpo.yaml", "/")).toThrow(/router.lambda_alpha/);
  });

  it("model under an existing folder: a path, not a hub id", () => {
    const dir = join(work, "model-paths");
    mkdirSync(join(dir, "models"), { recursive: true });
    const parse = (model: string) =>
      parsePipelineConfig({ out: "run", model, data: { files: ["a.jsonl"] } }, "m.yaml", dir).model;
    expect(parse("models/tiny")).toBe(join(dir, "models", "tiny"));
    expect(parse("HuggingFaceTB/SmolLM-135M")).toBe("HuggingFaceTB/SmolLM-135M");
    expect(parse("models/tiny@main")).toBe("models/tiny@main");
  });

  it("validates the data read settings", () => {
    const data = { files: ["a.jsonl"], format: "pairwise", fields: { chosen: "good" } };
    const config = parsePipelineConfig({ out: "run", model: "org/m", data }, "m.yaml", "/");
    expect(config.data.fields).toEqual({ chosen: "good" });
    const bad = { ...data, fields: { choosen: "good" } };
    expect(() =>
      parsePipelineConfig({ out: "run", model: "org/m", data: bad }, "m.yaml", "/"),
    ).toThrow(/data.fields.choosen: unknown field "choosen"; fields are prompt/);
  });

  it("keeps a redone stage aside", async () => {
    const out = join(work, "retire");
    const runner = new StageRunner(out);
    await runner.run("02-reward", "hash-a", async (dir) => writeFileSync(join(dir, "w.txt"), "a"));
    await new StageRunner(out).run("02-reward", "hash-b", async (dir) => {
      writeFileSync(join(dir, "w.txt"), "b");
    });
    const replaced = readdirSync(out).filter((name) => name.startsWith("02-reward.replaced-"));
    expect(replaced.length).toBe(1);
    expect(readFileSync(join(out, replaced[0], "w.txt"), "utf8")).toBe("a");
    expect(readFileSync(join(out, "02-reward", "w.txt"), "utf8")).toBe("b");
  });

  it("checks eval prompt files before training", async () => {
    const dir = join(work, "missing-prompts");
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, "rows.jsonl"), "");
    const config = parsePipelineConfig(
      {
        out: "run",
        model: "./no-model-needed",
        data: { files: ["rows.jsonl"] },
        eval: { prompts: ["harmfull_test.json"] },
      },
      "midpo.yaml",
      dir,
    );
    await expect(runPipeline(config, async () => null)).rejects.toThrow(
      /pipeline input .*harmfull_test\.json does not exist/,
    );
    expect(existsSync(join(dir, "run", "02-reward"))).toBe(false);
  });
});
