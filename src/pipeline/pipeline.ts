// The one-command MidPO pipeline: optional SFT, reward and cost models, both experts (and the
// plain-DPO baselines), the router, then evaluation, each stage in its own subdirectory of
// `out`.
//
// A stage is finished when its `stage.json` exists; it records a hash of the stage's settings
// and of the stages it reads from. A rerun skips finished stages whose hash still matches,
// resumes an interrupted stage from its last checkpoint, and redoes a stage whose settings or
// inputs changed, after moving its directory aside.

import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from "node:fs";
import { withoutDefaults, type LoadOptions } from "../data/load.js";
import type { FileFormat } from "../data/read.js";
import type { RecordSchema } from "../data/validate.js";
import { join } from "node:path";
import { log } from "../log.js";
import { contentHashes, hashKey } from "../train/cache.js";
import { lockOutDir } from "../train/out-lock.js";
import type { LossOptions } from "../train/losses.js";
import type { LoraConfigOptions } from "../train/lora.js";
import type { LoraSection, PipelineConfig, TrainerSection } from "./config.js";
import {
  runExpertStage,
  runRouterStage,
  runScoreStage,
  runSftStage,
  trainerDefaults,
  type DataOptions,
  type TrainerSettings,
} from "./stages.js";

export interface StageRecord {
  name: string;
  hash: string;
  seconds: number;
  finishedAt: string;
  result?: unknown;
}

export interface PipelineResult {
  stages: StageRecord[];
  /** Output directory of each stage, by name. */
  dirs: Record<string, string>;
}

/** SHA-256 of each file's bytes, so that editing a data file redoes the stages that read it. */
function filesContentHash(paths: readonly string[]): string[] {
  return contentHashes(paths, "pipeline input");
}

function toLora(section: LoraSection | null | undefined): LoraConfigOptions | null {
  if (section === null || section === undefined) return null;
  return {
    ...(section.r !== undefined ? { r: section.r } : {}),
    ...(section.alpha !== undefined ? { loraAlpha: section.alpha } : {}),
    ...(section.dropout !== undefined ? { loraDropout: section.dropout } : {}),
    ...(section.target_modules !== undefined ? { targetModules: section.target_modules } : {}),
  };
}

function toTrainer(
  section: TrainerSection,
  seed: number,
  defaults: Partial<TrainerSettings> = {},
): TrainerSettings {
  return trainerDefaults({
    ...defaults,
    seed,
    ...(section.lr !== undefined ? { lr: section.lr } : {}),
    ...(section.epochs !== undefined ? { epochs: section.epochs } : {}),
    ...(section.max_steps !== undefined ? { maxSteps: section.max_steps } : {}),
    ...(section.batch_size !== undefined ? { batchSize: section.batch_size } : {}),
    ...(section.grad_accum !== undefined ? { gradAccum: section.grad_accum } : {}),
    ...(section.warmup_ratio !== undefined ? { warmupRatio: section.warmup_ratio } : {}),
    ...(section.weight_decay !== undefined ? { weightDecay: section.weight_decay } : {}),
    ...(section.schedule !== undefined ? { schedule: section.schedule } : {}),
    ...(section.save_every !== undefined ? { saveEvery: section.save_every } : {}),
    ...(section.eval_every !== undefined ? { evalEvery: section.eval_every } : {}),
    resume: true,
  });
}

/**
 * Moves a stage directory that is about to be redone aside, to `<dir>.replaced-<time>`, so
 * that a config edit never deletes finished or partly trained work. Returns the new path.
 */
function retire(dir: string): string {
  const stamp = new Date().toISOString().replace(/[:.]/g, "-");
  let target = `${dir}.replaced-${stamp}`;
  for (let n = 2; existsSync(target); n++) target = `${dir}.replaced-${stamp}-${n}`;
  renameSync(dir, target);
  return target;
}

export class StageRunner {
  readonly records: StageRecord[] = [];

  constructor(private readonly out: string) {}

  dir(name: string): string {
    return join(this.out, name);
  }

  /** Runs `body` unless the stage finished before with the same hash. */
  async run(
    name: string,
    hash: string,
    body: (dir: string) => Promise<unknown>,
  ): Promise<StageRecord> {
    const dir = this.dir(name);
    const marker = join(dir, "stage.json");
    if (existsSync(marker)) {
      const previous = JSON.parse(readFileSync(marker, "utf8")) as StageRecord;
      if (previous.hash === hash) {
        log.info({ stage: name }, "stage already finished; skipping");
        this.records.push(previous);
        return previous;
      }
      const movedTo = retire(dir);
      log.warn({ stage: name, movedTo }, "stage settings or inputs changed; redoing it");
    } else if (existsSync(join(dir, "stage-hash.txt"))) {
      const started = readFileSync(join(dir, "stage-hash.txt"), "utf8").trim();
      if (started !== hash) {
        const movedTo = retire(dir);
        log.warn(
          { stage: name, movedTo },
          "an interrupted stage had other settings; starting it over",
        );
      } else {
        log.info({ stage: name }, "resuming an interrupted stage");
      }
    }
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, "stage-hash.txt"), hash + "\n");
    log.info({ stage: name }, "stage started");
    const start = Date.now();
    const result = await body(dir);
    const record: StageRecord = {
      name,
      hash,
      seconds: (Date.now() - start) / 1000,
      finishedAt: new Date().toISOString(),
      result,
    };
    writeFileSync(`${marker}.tmp`, JSON.stringify(record, null, 2) + "\n");
    renameSync(`${marker}.tmp`, marker);
    log.info({ stage: name, seconds: record.seconds.toFixed(1) }, "stage finished");
    this.records.push(record);
    return record;
  }
}

export type EvaluationRunner = (options: {
  config: NonNullable<PipelineConfig["eval"]>;
  dirs: Record<string, string>;
  out: string;
  seed: number;
  model: string;
  baselines: boolean;
}) => Promise<unknown>;

/** Returns the config's read settings as load options (see withoutDefaults). */
function readOptions(data: PipelineConfig["data"]): LoadOptions {
  return withoutDefaults({
    strict: data.strict,
    schema: data.format as RecordSchema | "auto",
    fileFormat: data.file_format as FileFormat | undefined,
    split: data.split,
    fields: data.fields,
  });
}

export async function runPipeline(
  config: PipelineConfig,
  evaluate?: EvaluationRunner,
  sftExamples?: { prompt: string; response: string }[],
): Promise<PipelineResult> {
  const release = lockOutDir(config.out);
  try {
    return await runStages(config, evaluate, sftExamples);
  } finally {
    release();
  }
}

async function runStages(
  config: PipelineConfig,
  evaluate?: EvaluationRunner,
  sftExamples?: { prompt: string; response: string }[],
): Promise<PipelineResult> {
  writeFileSync(join(config.out, "pipeline.json"), JSON.stringify(config, null, 2) + "\n");
  const runner = new StageRunner(config.out);
  const seed = config.seed;
  const data: DataOptions = {
    files: config.data.files,
    load: readOptions(config.data),
    evalRatio: config.data.eval_ratio,
    template: config.data.template,
    maxLength: config.data.max_length,
  };
  const dirs: Record<string, string> = {};
  const hashes: Record<string, string> = {};
  const stageHash = (name: string, settings: unknown, inputs: string[]) => {
    hashes[name] = hashKey({ name, settings, inputs: inputs.map((i) => hashes[i] ?? i) });
    return hashes[name];
  };
  const dataKey = hashKey({
    files: filesContentHash(config.data.files),
    extra: filesContentHash(config.data.extra_safety),
    data,
  });
  // Read before any stage runs, so that a wrong prompt file fails now and not after training.
  const evalPrompts = config.eval === undefined ? [] : filesContentHash(config.eval.prompts);

  // SFT (optional): the starting model of every later stage.
  let model = config.model;
  if (config.sft !== undefined) {
    const sft = config.sft;
    const sftData: DataOptions = { ...data, files: sft.data };
    await runner.run(
      "01-sft",
      stageHash(
        "01-sft",
        {
          sft,
          model,
          files: filesContentHash(sft.data),
          examples: sftExamples === undefined ? null : hashKey(sftExamples),
        },
        [dataKey],
      ),
      (dir) =>
        runSftStage(
          {
            model,
            data: sftData,
            out: dir,
            lora: toLora(sft.lora),
            trainer: toTrainer(sft, seed, { lr: 1e-3 }),
          },
          sftExamples,
        ),
    );
    model = runner.dir("01-sft");
  }
  dirs.base = model;
  const baseInput = config.sft !== undefined ? "01-sft" : model;

  for (const kind of ["reward", "cost"] as const) {
    const name = kind === "reward" ? "02-reward" : "03-cost";
    const section = config[kind];
    await runner.run(name, stageHash(name, section, [baseInput, dataKey]), (dir) =>
      runScoreStage({
        kind,
        model,
        data,
        out: dir,
        lora: toLora(section.lora),
        unfreezeLayers: section.unfreeze_layers,
        regularization: section.regularization,
        trainer: toTrainer(section, seed, { lr: 1e-3 }),
      }),
    );
    dirs[kind] = runner.dir(name);
  }

  const experts = config.experts;
  const loss: LossOptions = { type: "sigmoid", beta: experts.beta, labelSmoothing: 0 };
  const expertStages = [
    { name: "04-expert-safety", kind: "safety" as const, margin: "score" as const },
    { name: "05-expert-helpfulness", kind: "helpfulness" as const, margin: "score" as const },
    ...(experts.baselines
      ? [
          { name: "06-dpo-safety", kind: "safety" as const, margin: "none" as const },
          { name: "07-dpo-helpfulness", kind: "helpfulness" as const, margin: "none" as const },
        ]
      : []),
  ];
  for (const stage of expertStages) {
    const scoreStage = stage.kind === "safety" ? "03-cost" : "02-reward";
    const inputs =
      stage.margin === "score" ? [baseInput, dataKey, scoreStage] : [baseInput, dataKey];
    await runner.run(
      stage.name,
      stageHash(stage.name, { experts, margin: stage.margin }, inputs),
      (dir) =>
        runExpertStage({
          kind: stage.kind,
          model,
          data,
          extraSafety: config.data.extra_safety,
          out: dir,
          margin: stage.margin,
          marginScale: experts.margin_scale,
          reward: dirs.reward,
          cost: dirs.cost,
          lora: toLora(experts.lora) ?? {},
          loss,
          trainer: toTrainer(experts, seed),
          cacheDir: config.cache_dir,
        }),
    );
    dirs[stage.name.slice(3)] = runner.dir(stage.name);
  }

  const router = config.router;
  await runner.run(
    "08-router",
    stageHash("08-router", router, [
      baseInput,
      dataKey,
      "04-expert-safety",
      "05-expert-helpfulness",
      "03-cost",
    ]),
    (dir) =>
      runRouterStage({
        model,
        safety: dirs["expert-safety"],
        helpfulness: dirs["expert-helpfulness"],
        data,
        dual: router.dual,
        cost: dirs.cost,
        out: dir,
        router: { kind: router.kind, hidden: router.hidden },
        beta: router.beta,
        lambdaAlpha: router.lambda_alpha,
        lambdaBeta: router.lambda_beta,
        trainer: toTrainer(router, seed, { lr: 1e-3 }),
        cacheDir: config.cache_dir,
      }),
  );
  dirs.router = runner.dir("08-router");

  if (config.eval !== undefined && evaluate !== undefined) {
    const evalConfig = config.eval;
    const trained = Object.keys(hashes).filter((n) => n !== "09-eval");
    await runner.run(
      "09-eval",
      stageHash("09-eval", { evalConfig, prompts: evalPrompts }, trained),
      (dir) =>
        evaluate({ config: evalConfig, dirs, out: dir, seed, model, baselines: experts.baselines }),
    );
    dirs.eval = runner.dir("09-eval");
  }
  return { stages: runner.records, dirs };
}
