// `midpo eval`: generate responses of several systems to prompt sets, score them with a reward
// and a cost model, and write results.json, report.md and report.html. The comparison table
// is printed to stdout.

import { Command, InvalidArgumentError, Option } from "commander";
import { PROMPT_TEMPLATES } from "../data/tokenize-pairs.js";
import type { PromptLabel } from "../eval/prompt-sets.js";
import { runEvaluation } from "../eval/run.js";
import { formatComparisonTable } from "../report/table.js";
import { parseInteger, parseNumber } from "./options.js";

export { runEvaluation, type RunEvaluationOptions } from "../eval/run.js";
export { formatComparisonTable } from "../report/table.js";

/** Parses repeated `--set-label NAME=safe|unsafe` flags into a map. */
function collectSetLabel(
  value: string,
  previous: Record<string, PromptLabel> = {},
): Record<string, PromptLabel> {
  const match = /^(.+)=(safe|unsafe)$/.exec(value);
  if (match === null) {
    throw new InvalidArgumentError(`expected SET=safe or SET=unsafe, got "${value}"`);
  }
  return { ...previous, [match[1]]: match[2] as PromptLabel };
}

export function registerEvalCommand(program: Command): void {
  program
    .command("eval")
    .description(
      "Generate responses of each system to each prompt set, score them with the reward and " +
        "cost models, and write results.json, report.md and report.html; reruns reuse stored " +
        "generations and scores",
    )
    .requiredOption("--systems <file>", "systems file (YAML or JSON) listing the models to compare")
    .requiredOption(
      "--prompts <files...>",
      "prompt sets (CSV, JSONL, JSON or Parquet) with a prompt or instruction column",
    )
    .requiredOption("--reward <dir>", "reward model directory (higher is more helpful)")
    .requiredOption("--cost <dir>", "cost model directory (positive is unsafe)")
    .requiredOption("--out <dir>", "output directory for generations, scores and reports")
    .option("--max-new-tokens <n>", "max tokens generated per response", parseInteger(1), 128)
    .option(
      "--temperature <t>",
      "sampling temperature; 0 decodes greedily, MidPO's reference samples with 0.7",
      parseNumber(0),
      0,
    )
    .option("--seed <n>", "seed of sampling and of the bootstrap", parseInteger(0), 0)
    .option("--batch-size <n>", "prompts generated together", parseInteger(1), 16)
    .option(
      "--refusal-phrases <file>",
      "refusal phrases, one per line, replacing the built-in list (# starts a comment)",
    )
    .option("--limit <n>", "evaluate only the first n prompts of each set", parseInteger(1))
    .option(
      "--prompt-column <name>",
      "column that contains the prompt (default: prompt, else instruction)",
    )
    .addOption(
      new Option("--template <kind>", "prompt template; must match training")
        .choices([...PROMPT_TEMPLATES])
        .default("safe-rlhf"),
    )
    .option(
      "--set-label <set=label>",
      "label for unlabelled prompts of a set, e.g. harmful_test=unsafe (repeatable)",
      collectSetLabel,
    )
    .option("--baseline <system>", "system that win rates compare against (default: first base)")
    .option(
      "--bootstrap-resamples <n>",
      "resamples of the win-rate bootstrap interval",
      parseInteger(1),
      1000,
    )
    .action(async (opts) => {
      const results = await runEvaluation({
        systems: opts.systems,
        prompts: opts.prompts,
        reward: opts.reward,
        cost: opts.cost,
        out: opts.out,
        maxNewTokens: opts.maxNewTokens,
        temperature: opts.temperature,
        seed: opts.seed,
        batchSize: opts.batchSize,
        refusalPhrases: opts.refusalPhrases,
        limit: opts.limit,
        promptColumn: opts.promptColumn,
        template: opts.template,
        setLabels: opts.setLabel,
        baseline: opts.baseline,
        bootstrap: { resamples: opts.bootstrapResamples },
      });
      process.stdout.write(`${formatComparisonTable(results)}\n`);
    });
}
