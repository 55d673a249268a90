// The `midpo` command line: parses flags and calls the library. Errors caused by input
// (MidpoError, bad flags) print one message and exit with code 1; --verbose adds the stack.

import { Command, CommanderError, Option } from "commander";
import { MidpoError } from "../errors.js";
import { convertLlama2c } from "../model/llama2c.js";
import { log } from "../log.js";
import { runGenerate } from "./generate.js";
import { runLogprobs } from "./logprobs.js";
import { registerDataCommands } from "./data.js";
import { registerEvalCommand } from "./eval.js";
import { addVariantOptions } from "./model-variant.js";
import { collect, parseIdList, parseInteger, parseNumber } from "./options.js";
import { registerPipelineCommands } from "./pipeline.js";
import { registerTrainCommands } from "./train.js";

const program = new Command("midpo")
  .description(
    "Align causal language models for safety and helpfulness with MidPO, on ONNX Runtime",
  )
  .option("--verbose", "print stack traces with errors")
  .showHelpAfterError("(run with --help for usage)");

const logprobs = program
  .command("logprobs")
  .description(
    "Write one JSON line per input line with the log-probability of each token given the ones " +
      "before it (tokens 2..n) and their sum",
  )
  .requiredOption("--model <dir-or-id>", "model directory or Hugging Face hub id")
  .requiredOption("--input <file.jsonl>", 'JSONL file; each line has "text" or "input_ids"')
  .option("--truncate", "keep the last max_position_embeddings tokens of longer inputs", false)
  .option(
    "--batch-tokens <n>",
    "max tokens per batch (rows x padded length)",
    parseInteger(1),
    512,
  );
addVariantOptions(logprobs).action(async (opts) => {
  await runLogprobs({
    model: opts.model,
    input: opts.input,
    truncate: opts.truncate,
    batchTokens: opts.batchTokens,
    adapter: opts.adapter,
    router: opts.router,
    safety: opts.safety,
    helpfulness: opts.helpfulness,
    alpha: opts.alpha,
    beta: opts.beta,
  });
});

const generateCommand = program
  .command("generate")
  .description("Stream a completion of a prompt to stdout")
  .requiredOption("--model <dir-or-id>", "model directory or Hugging Face hub id")
  .option("--prompt <text>", "prompt text (needs tokenizer.json)")
  .option("--prompt-ids <ids>", "prompt as comma-separated token ids", parseIdList)
  .addOption(
    new Option("--template <kind>", "how the prompt is wrapped before tokenizing")
      .choices(["none", "safe-rlhf", "chat"])
      .default("none"),
  )
  .option("--max-new-tokens <n>", "max tokens to generate", parseInteger(1), 128)
  .option(
    "--temperature <t>",
    "sampling temperature; 0 picks the most likely token",
    parseNumber(0),
    0,
  )
  .option("--top-k <k>", "sample among the k most likely tokens; 0 disables", parseInteger(0), 0)
  .option(
    "--top-p <p>",
    "sample among the most likely tokens reaching probability p",
    parseNumber(0, 1),
    1,
  )
  .option(
    "--repetition-penalty <r>",
    "penalty on tokens already present; 1 disables",
    parseNumber(0.01),
    1,
  )
  .option("--seed <n>", "random seed for sampling", parseInteger(0), 0)
  .option("--stop <text>", "stop when the output contains this text (repeatable)", collect, [])
  .option("--no-stream", "print the completion only when it is finished")
  .option(
    "--truncate",
    "drop the oldest prompt tokens when prompt + max new tokens is too long",
    false,
  )
  .option("--show-gates", "print the router's mean alpha and beta per layer to stderr", false);
addVariantOptions(generateCommand).action(async (opts) => {
  if (opts.prompt === undefined && opts.promptIds === undefined) {
    throw new MidpoError("generate needs --prompt TEXT or --prompt-ids IDS");
  }
  if (opts.prompt !== undefined && opts.promptIds !== undefined) {
    throw new MidpoError("generate takes --prompt TEXT or --prompt-ids IDS, not both");
  }
  await runGenerate({
    model: opts.model,
    prompt: opts.prompt,
    promptIds: opts.promptIds,
    template: opts.template,
    maxNewTokens: opts.maxNewTokens,
    temperature: opts.temperature,
    topK: opts.topK,
    topP: opts.topP,
    repetitionPenalty: opts.repetitionPenalty,
    seed: opts.seed,
    stop: opts.stop,
    stream: opts.stream,
    truncate: opts.truncate,
    showGates: opts.showGates,
    adapter: opts.adapter,
    router: opts.router,
    safety: opts.safety,
    helpfulness: opts.helpfulness,
    alpha: opts.alpha,
    beta: opts.beta,
  });
});

program
  .command("convert-llama2c")
  .description("Convert a llama2.c checkpoint (.bin) to a Hugging Face model directory")
  .requiredOption("--input <file.bin>", "llama2.c checkpoint")
  .requiredOption("--out <dir>", "output directory (config.json, model.safetensors)")
  .action((opts) => {
    const header = convertLlama2c(opts.input, opts.out);
    log.info({ out: opts.out, ...header }, "converted");
  });

registerTrainCommands(program);
registerDataCommands(program);
registerEvalCommand(program);
registerPipelineCommands(program);

async function main(): Promise<void> {
  // A reader that stops early (`midpo score ... | head`) closes the pipe. The command then
  // exits quietly, as other command-line tools do.
  process.stdout.on("error", (error: NodeJS.ErrnoException) => {
    if (error.code === "EPIPE") process.exit(0);
    throw error;
  });
  program.exitOverride();
  try {
    await program.parseAsync(process.argv);
  } catch (error) {
    if (error instanceof CommanderError) {
      // Commander has already printed its message (or the help text).
      process.exitCode = error.exitCode;
      return;
    }
    const verbose = program.opts().verbose === true;
    const pathMessage = fileSystemMessage(error);
    if (error instanceof MidpoError) {
      process.stderr.write(`error: ${error.message}\n`);
      if (verbose) process.stderr.write(`${error.stack}\n`);
    } else if (pathMessage !== null) {
      process.stderr.write(`error: ${pathMessage}\n`);
      if (verbose) process.stderr.write(`${(error as Error).stack}\n`);
    } else {
      const e = error as Error;
      process.stderr.write(
        verbose
          ? `internal error: ${e.stack}\n`
          : `internal error: ${e.message} (rerun with --verbose for the stack trace)\n`,
      );
    }
    process.exitCode = 1;
  }
}

await main();

/**
 * Returns a one-line message for file-system errors that a wrong path causes: a file where a
 * directory is needed, or the reverse. Returns null for other errors.
 */
function fileSystemMessage(error: unknown): string | null {
  const e = error as NodeJS.ErrnoException;
  if (typeof e?.path !== "string") return null;
  switch (e.code) {
    case "ENOTDIR":
      return `${e.path}: part of this path is a file, not a directory; pass another output path`;
    case "EEXIST":
      return `${e.path} already exists and is not a directory; pass another output path`;
    case "EISDIR":
      return `${e.path} is a directory, not a file; pass a file path`;
    case "EACCES":
    case "EPERM":
      return `${e.path}: permission denied (${e.syscall ?? "access"}); check its permissions`;
    default:
      return null;
  }
}
