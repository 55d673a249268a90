// `midpo data inspect` and `midpo data build`: flag parsing over src/data.

import { Command, Option } from "commander";
import { buildDatasets } from "../data/build.js";
import { formatInspectReport, inspectDataset } from "../data/inspect.js";
import { loadDataset } from "../data/load.js";
import { PROMPT_TEMPLATES, type PromptTemplate } from "../data/tokenize-pairs.js";
import { resolveModel } from "../hub/resolve.js";
import { log } from "../log.js";
import { Tokenizer } from "../tokenize/tokenizer.js";
import { collect, parseInteger, parseNumber } from "./options.js";
import { addReadOptions, readOptionsFrom, type ReadFlags } from "./read-options.js";

interface CommonFlags extends ReadFlags {
  model?: string;
  template: PromptTemplate;
}

/** Adds the `data` command group with `inspect` and `build` to `program`. */
export function registerDataCommands(program: Command): void {
  const data = program
    .command("data")
    .description("Inspect preference datasets and build the D_s, D_h and D_dual sets");

  addCommonOptions(
    data
      .command("inspect")
      .description(
        "Print record counts, the safety-label mix, D_s/D_h/D_dual sizes, length percentiles " +
          "and the problems found in a dataset file or directory",
      )
      .argument("<file>", "JSONL, JSON or Parquet file (optionally .gz), or a dataset directory")
      .option("--json", "print the report as JSON", false),
  ).action(async (file: string, opts: CommonFlags & { json: boolean }) => {
    const dataset = await loadDataset(file, readOptionsFrom(opts));
    const tokenizer = await loadTokenizer(opts.model);
    const report = inspectDataset(dataset, { tokenizer, template: opts.template });
    process.stdout.write(
      opts.json ? `${JSON.stringify(report, null, 2)}\n` : `${formatInspectReport(report)}\n`,
    );
  });

  addCommonOptions(
    data
      .command("build")
      .description(
        "Write ds/dh/ddual .train.jsonl and .eval.jsonl pairwise files and summary.json, " +
          "split by prompt",
      )
      .argument("<files...>", "PKU-SafeRLHF files or dataset directories")
      .requiredOption("--out <dir>", "output directory")
      .option(
        "--eval-ratio <r>",
        "expected fraction of prompts in the eval split",
        parseNumber(0, 1),
        0.1,
      )
      .option("--seed <n>", "seed of the prompt hash that assigns the split", parseInteger(0), 0)
      .option(
        "--hh-as-safety <file>",
        "pairwise or hh-rlhf file whose chosen response is the more harmless one; its pairs " +
          "join D_s (repeatable)",
        collect,
        [],
      )
      .option(
        "--max-length <n>",
        "drop pairs whose prompt plus longer response exceeds n tokens (with --model) or " +
          "characters",
        parseInteger(1),
      ),
  ).action(
    async (
      files: string[],
      opts: CommonFlags & {
        out: string;
        evalRatio: number;
        seed: number;
        hhAsSafety: string[];
        maxLength?: number;
      },
    ) => {
      const tokenizer = await loadTokenizer(opts.model);
      if (opts.maxLength !== undefined && tokenizer === undefined) {
        log.info(
          { maxLength: opts.maxLength },
          "no --model given, so --max-length counts characters",
        );
      }
      await buildDatasets({
        inputs: files,
        safetyPairwise: opts.hhAsSafety,
        out: opts.out,
        evalRatio: opts.evalRatio,
        seed: opts.seed,
        maxLength: opts.maxLength,
        tokenizer,
        template: opts.template,
        load: readOptionsFrom(opts),
        safetyLoad: { ...readOptionsFrom(opts), schema: "auto", split: undefined },
      });
    },
  );
}

function addCommonOptions(command: Command): Command {
  return addReadOptions(command)
    .option("--model <dir-or-id>", "model directory or hub id whose tokenizer counts tokens")
    .addOption(
      new Option("--template <kind>", "prompt template for token counts")
        .choices(PROMPT_TEMPLATES)
        .default("safe-rlhf"),
    );
}

async function loadTokenizer(model: string | undefined): Promise<Tokenizer | undefined> {
  if (model === undefined) {
    return undefined;
  }
  return Tokenizer.fromDirectory(await resolveModel(model));
}
