// Training and scoring commands: sft, train-dpo, train-score, score, train-expert, train-router.

import { Command, Option } from "commander";
import { MidpoError } from "../errors.js";
import { log } from "../log.js";
import {
  cachedEndScores,
  runDpoStage,
  runExpertStage,
  runRouterStage,
  runScoreStage,
  runSftStage,
} from "../pipeline/stages.js";
import { SCORE_BATCH_TOKENS, ScoreModel } from "../model/score-model.js";
import { readScoreInputs } from "./score-input.js";
import { ValueCache } from "../train/cache.js";
import { formatMetrics, type TrainSummary } from "../train/trainer.js";
import { parseInteger, parseNumber } from "./options.js";
import {
  addDataOptions,
  addLoraOptions,
  addLossOptions,
  addTrainerOptions,
  dataFrom,
  loraFrom,
  lossFrom,
  trainerFrom,
} from "./train-options.js";

function printSummary(what: string, summary: TrainSummary): void {
  const evalPart = summary.eval ? `; held-out: ${formatMetrics(summary.eval)}` : "";
  process.stdout.write(
    `${what} finished: ${summary.steps} steps in ${summary.seconds.toFixed(1)} s, written to ${summary.outDir}${evalPart}\n`,
  );
}

export function registerTrainCommands(program: Command): void {
  const sft = program
    .command("sft")
    .description(
      "Supervised fine-tuning on prompt/response pairs (LoRA, merged at the end, or full)",
    )
    .requiredOption("--model <dir-or-id>", "starting model")
    .requiredOption(
      "--data <files...>",
      'files with "prompt" and "response" (or PKU-SafeRLHF records)',
    )
    .requiredOption("--out <dir>", "output directory (merged full model, adapter, checkpoints)")
    .option("--full", "train every weight instead of a LoRA adapter", false);
  addDataOptions(sft, false);
  addLoraOptions(sft, {
    r: 16,
    alpha: 32,
    targets: "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj",
  });
  addTrainerOptions(sft, { lr: 2e-4 });
  sft.action(async (o) => {
    const summary = await runSftStage({
      model: o.model,
      data: dataFrom(o, o.data),
      out: o.out,
      lora: o.full ? null : loraFrom(o),
      trainer: trainerFrom(o),
    });
    printSummary("SFT", summary);
  });

  const dpo = program
    .command("train-dpo")
    .description(
      "Train a LoRA adapter with a DPO-family loss on a pairwise file (prompt, chosen, rejected)",
    )
    .requiredOption("--model <dir-or-id>", "base model (also the frozen reference)")
    .requiredOption(
      "--data <files...>",
      'pairwise files with "prompt", "chosen", "rejected" and optional "margin"',
    )
    .requiredOption("--out <dir>", "output directory (PEFT adapter, checkpoints, metrics.jsonl)")
    .option("--cache-dir <dir>", "where reference log-probs are cached (default ~/.cache/midpo)");
  addDataOptions(dpo);
  addLossOptions(dpo);
  addLoraOptions(dpo, { r: 16, alpha: 32, targets: "down_proj" });
  addTrainerOptions(dpo, { lr: 5e-4 });
  dpo.action(async (o) => {
    const summary = await runDpoStage({
      model: o.model,
      data: dataFrom(o, o.data),
      out: o.out,
      lora: loraFrom(o),
      loss: lossFrom(o),
      trainer: trainerFrom(o),
      cacheDir: o.cacheDir,
    });
    printSummary("DPO", summary);
  });

  const expert = program
    .command("train-expert")
    .description(
      "Train a MidPO expert with SPE-DPO: safety on D_s (cost margins) or helpfulness on D_h (reward margins)",
    )
    .addOption(
      new Option("--kind <kind>", "which expert")
        .choices(["safety", "helpfulness"])
        .makeOptionMandatory(),
    )
    .requiredOption("--model <dir-or-id>", "base model (also the frozen reference)")
    .requiredOption("--data <files...>", "PKU-SafeRLHF files")
    .requiredOption("--out <dir>", "output directory (PEFT adapter, checkpoints, metrics.jsonl)")
    .option("--reward <dir>", "reward model (margins of the helpfulness expert)")
    .option("--cost <dir>", "cost model (margins of the safety expert)")
    .option("--margin <kind>", '"score" for SPE-DPO margins, "none" for plain DPO', "score")
    .option("--margin-scale <x>", "multiplies every margin", parseNumber(0), 1)
    .option("--extra-safety <files...>", "pairwise files (chosen = more harmless) added to D_s")
    .option("--cache-dir <dir>", "where reference log-probs and scores are cached");
  addDataOptions(expert);
  addLossOptions(expert);
  addLoraOptions(expert, { r: 16, alpha: 32, targets: "down_proj" });
  addTrainerOptions(expert, { lr: 5e-4 });
  expert.action(async (o) => {
    if (o.margin !== "score" && o.margin !== "none") {
      throw new MidpoError(`--margin must be "score" or "none", got "${o.margin}"`);
    }
    const summary = await runExpertStage({
      kind: o.kind,
      model: o.model,
      data: dataFrom(o, o.data),
      extraSafety: o.extraSafety,
      out: o.out,
      margin: o.margin,
      marginScale: o.marginScale,
      reward: o.reward,
      cost: o.cost,
      lora: loraFrom(o),
      loss: lossFrom(o),
      trainer: trainerFrom(o),
      cacheDir: o.cacheDir,
    });
    printSummary(`${o.kind} expert`, summary);
  });

  const score = program
    .command("train-score")
    .description(
      "Train a reward model (Bradley-Terry on helpfulness) or a cost model (pairwise + sign terms on safety)",
    )
    .addOption(
      new Option("--kind <kind>", "which score model")
        .choices(["reward", "cost"])
        .makeOptionMandatory(),
    )
    .requiredOption("--model <dir-or-id>", "backbone to start from")
    .requiredOption("--data <files...>", "PKU-SafeRLHF files")
    .requiredOption(
      "--out <dir>",
      "output directory (model in transformers' SequenceClassification layout)",
    )
    .option(
      "--unfreeze-layers <n>",
      "train the last N layers in full instead of LoRA",
      parseInteger(0),
      0,
    )
    .option("--regularization <x>", "coefficient of mean(score^2)", parseNumber(0), 0.001);
  addDataOptions(score);
  addLoraOptions(score, { r: 16, alpha: 32, targets: "q_proj,v_proj,down_proj" });
  addTrainerOptions(score, { lr: 5e-4 });
  score.action(async (o) => {
    const summary = await runScoreStage({
      kind: o.kind,
      model: o.model,
      data: dataFrom(o, o.data),
      out: o.out,
      lora: o.unfreezeLayers > 0 ? null : loraFrom(o),
      unfreezeLayers: o.unfreezeLayers,
      regularization: o.regularization,
      trainer: trainerFrom(o),
    });
    printSummary(`${o.kind} model`, summary);
  });

  program
    .command("score")
    .description(
      "Write the end score of each response as JSONL: one line per input record, with its " +
        "line number in the input and score (or score_0 and score_1, or score_chosen and " +
        "score_rejected)",
    )
    .requiredOption("--model <dir>", "score model directory")
    .requiredOption(
      "--data <file.jsonl>",
      'JSONL with "prompt" and "response", PKU-SafeRLHF "response_0"/"response_1", pairwise ' +
        '"chosen"/"rejected", or "input_ids"',
    )
    .option("--cache-dir <dir>", "where scores are cached")
    .option(
      "--batch-tokens <n>",
      "max tokens per model run (rows x padded length)",
      parseInteger(1),
      SCORE_BATCH_TOKENS,
    )
    .addOption(
      new Option("--template <kind>", "prompt template of lines with text, as in train-score")
        .choices(["safe-rlhf", "chat"])
        .default("safe-rlhf"),
    )
    .action(async (o) => {
      // Loading checks the model directory before the data is read. The weights stay in
      // their file until scoring creates a session.
      const model = ScoreModel.load(o.model);
      const { sequences, lines, keys } = await readScoreInputs(
        o.data,
        o.model,
        model.files.config,
        {
          template: o.template,
        },
      );
      await model.release();
      if (sequences.length === 0) {
        log.warn({ data: o.data }, "no records to score");
        return;
      }
      const scores = await cachedEndScores(
        o.model,
        sequences,
        new ValueCache(o.cacheDir),
        o.batchTokens,
      );
      // One output line per input record, with the scores of its responses.
      const records: Record<string, number>[] = [];
      scores.forEach((score, i) => {
        if (i === 0 || lines[i] !== lines[i - 1]) records.push({ line: lines[i] });
        records.at(-1)![keys[i]] = score;
      });
      process.stdout.write(records.map((r) => JSON.stringify(r)).join("\n") + "\n");
      log.info({ records: records.length, responses: sequences.length }, "scored");
    });

  const router = program
    .command("train-router")
    .description("Train the MidPO router on D_dual with both experts frozen")
    .requiredOption("--model <dir-or-id>", "base model")
    .requiredOption("--safety <dir>", "safety expert adapter")
    .requiredOption("--helpfulness <dir>", "helpfulness expert adapter")
    .requiredOption("--data <files...>", "PKU-SafeRLHF files")
    .requiredOption("--out <dir>", "output directory (router.safetensors, router_config.json)")
    .addOption(
      new Option("--router <kind>", "gate network")
        .choices(["reference", "compact"])
        .default("reference"),
    )
    .option("--router-hidden <n>", "hidden width of the gate network", parseInteger(1), 512)
    .option("--lambda-alpha <x>", "weight of mean|alpha|", parseNumber(0), 1)
    .option("--lambda-beta <x>", "weight of mean|beta - 1|", parseNumber(0), 1)
    .option("--beta <x>", "DPO beta", parseNumber(0), 0.1)
    .addOption(
      new Option("--dual <rule>", "D_dual rule").choices(["label", "cost"]).default("label"),
    )
    .option("--cost <dir>", "cost model (for --dual cost)")
    .option("--cache-dir <dir>", "where reference log-probs and scores are cached");
  addDataOptions(router);
  addTrainerOptions(router, { lr: 1e-3 });
  router.action(async (o) => {
    const summary = await runRouterStage({
      model: o.model,
      safety: o.safety,
      helpfulness: o.helpfulness,
      data: dataFrom(o, o.data),
      dual: o.dual,
      cost: o.cost,
      out: o.out,
      router: { kind: o.router, hidden: o.routerHidden },
      beta: o.beta,
      lambdaAlpha: o.lambdaAlpha,
      lambdaBeta: o.lambdaBeta,
      trainer: trainerFrom(o),
      cacheDir: o.cacheDir,
    });
    printSummary("router", summary);
  });
}
