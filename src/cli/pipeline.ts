// `midpo pipeline` and `midpo demo`.

import { Command } from "commander";
import { join, resolve } from "node:path";
import { writeDemoAssets, demoPipelineConfig } from "../demo/demo.js";
import { demoSftPairs } from "../demo/corpus.js";
import { runEvaluation } from "../eval/run.js";
import type { SystemSpec } from "../eval/systems.js";
import { log } from "../log.js";
import { readPipelineConfig, type PipelineConfig } from "../pipeline/config.js";
import { runPipeline, type EvaluationRunner } from "../pipeline/pipeline.js";
import { formatComparisonTable } from "../report/table.js";
import type { EvaluationResults } from "../eval/results.js";
import { parseInteger } from "./options.js";

/** The systems the pipeline compares: base, plain DPO baselines, each expert, a static mix, the router. */
function pipelineSystems(
  dirs: Record<string, string>,
  config: NonNullable<PipelineConfig["eval"]>,
  baselines: boolean,
): SystemSpec[] {
  const base = resolve(dirs.base);
  const systems: SystemSpec[] = [{ name: "base", kind: "base", base }];
  if (baselines) {
    systems.push({
      name: "dpo-helpfulness",
      kind: "adapter",
      base,
      adapter: dirs["dpo-helpfulness"],
    });
    systems.push({ name: "dpo-safety", kind: "adapter", base, adapter: dirs["dpo-safety"] });
  }
  systems.push(
    { name: "helpfulness-expert", kind: "adapter", base, adapter: dirs["expert-helpfulness"] },
    { name: "safety-expert", kind: "adapter", base, adapter: dirs["expert-safety"] },
    {
      name: `static-mix`,
      kind: "static-mix",
      base,
      safety: dirs["expert-safety"],
      helpfulness: dirs["expert-helpfulness"],
      alpha: config.static_mix.alpha,
      beta: config.static_mix.beta,
    },
    {
      name: "midpo-router",
      kind: "router",
      base,
      safety: dirs["expert-safety"],
      helpfulness: dirs["expert-helpfulness"],
      router: dirs.router,
    },
  );
  return systems;
}

let lastResults: EvaluationResults | null = null;

const evaluate: EvaluationRunner = async ({ config, dirs, out, seed, baselines }) => {
  const results = await runEvaluation({
    systems: pipelineSystems(dirs, config, baselines),
    prompts: config.prompts,
    reward: dirs.reward,
    cost: dirs.cost,
    out,
    maxNewTokens: config.max_new_tokens,
    temperature: config.temperature,
    seed,
    limit: config.limit,
    setLabels: config.set_labels,
  });
  lastResults = results;
  return { results: join(out, "results.json") };
};

async function runAndReport(
  config: PipelineConfig,
  sftExamples?: { prompt: string; response: string }[],
) {
  const start = Date.now();
  const result = await runPipeline(config, evaluate, sftExamples);
  const lines = result.stages.map(
    (s) => `  ${s.name.padEnd(24)} ${s.seconds.toFixed(1).padStart(7)} s`,
  );
  process.stdout.write(`\nStages (wall time when they ran):\n${lines.join("\n")}\n`);
  const evalDir = result.dirs.eval;
  if (evalDir !== undefined) {
    const results =
      lastResults ??
      (JSON.parse(
        (await import("node:fs")).readFileSync(join(evalDir, "results.json"), "utf8"),
      ) as EvaluationResults);
    process.stdout.write(`\n${formatComparisonTable(results)}\n`);
    process.stdout.write(
      `\nReport: ${join(evalDir, "report.html")} and ${join(evalDir, "report.md")}\n`,
    );
  }
  log.info(
    { seconds: ((Date.now() - start) / 1000).toFixed(1), out: config.out },
    "pipeline finished",
  );
}

export function registerPipelineCommands(program: Command): void {
  program
    .command("pipeline")
    .description(
      "Run every MidPO stage from a config file; a rerun skips finished stages and resumes an interrupted one",
    )
    .requiredOption("--config <file>", "pipeline config (YAML or JSON)")
    .action(async (o) => {
      await runAndReport(readPipelineConfig(o.config));
    });

  program
    .command("demo")
    .description(
      "Run the whole pipeline on a built-in synthetic corpus and a tiny model trained from scratch",
    )
    .option("--out <dir>", "output directory", "midpo-demo")
    .option("--seed <n>", "seed of the corpus, the model and every stage", parseInteger(0), 0)
    .action(async (o) => {
      const out = resolve(o.out);
      const assets = writeDemoAssets(join(out, "assets"), o.seed);
      await runAndReport(demoPipelineConfig(out, assets, o.seed), demoSftPairs(o.seed));
    });
}
