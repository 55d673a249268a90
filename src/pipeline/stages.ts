// The MidPO stages as library functions: each reads its inputs from files, trains, and writes
// its output directory. The CLI commands and the pipeline both call these.

import { join } from "node:path";
import { existsSync, readFileSync } from "node:fs";
import { MidpoError } from "../errors.js";
import { loadDataset, type LoadOptions } from "../data/load.js";
import {
  buildDualSetByCost,
  buildDualSetByLabel,
  buildHelpfulnessSet,
  buildSafetySet,
  pairsFromPairwise,
  splitTrainEval,
} from "../data/sets.js";
import { tokenizePairs, type PromptTemplate } from "../data/tokenize-pairs.js";
import { readRecords } from "../data/read.js";
import { formatLocation, type PkuRecord, type PreferencePair } from "../data/types.js";
import { log } from "../log.js";
import { expertWeights, type Experts } from "../midpo/mixed.js";
import { provenance } from "../midpo/router-files.js";
import type { RouterKind } from "../midpo/router.js";
import { trainRouter } from "../midpo/train-router.js";
import type { CausalLM } from "../model/causal-lm.js";
import { checkTokenizerFits, loadModel } from "../model/load.js";
import { copyTokenizerFiles, saveCausalLM } from "../model/save.js";
import { ScoreModel } from "../model/score-model.js";
import type { Tokenizer } from "../tokenize/tokenizer.js";
import { ValueCache, contentHashes, hashKey, modelContentHash } from "../train/cache.js";
import { referenceLogps, trainDpo, type ScoredPair } from "../train/dpo.js";
import {
  createLoraConfig,
  decoderLinearModules,
  loadLoraAdapter,
  type LoraConfigOptions,
} from "../train/lora.js";
import type { LossOptions } from "../train/losses.js";
import type { TokenizedPair } from "../train/preference-batch.js";
import { trainScoreModel, type ScorePair } from "../train/score-train.js";
import { trainSft, type SftExample } from "../train/sft.js";
import {
  checkOutDir,
  checkResume,
  flattenSettings,
  type TrainSummary,
  type TrainerOptions,
} from "../train/trainer.js";

export interface DataOptions {
  files: string[];
  load?: LoadOptions;
  /** Fraction of prompts held out for evaluation. */
  evalRatio: number;
  template: PromptTemplate;
  /** Max tokens of prompt + response. */
  maxLength: number;
}

export type TrainerSettings = Omit<TrainerOptions, "outDir" | "runKey" | "runSettings">;

/** Trainer defaults shared by the stages; each stage overrides what differs. */
export function trainerDefaults(overrides: Partial<TrainerSettings> = {}): TrainerSettings {
  return {
    epochs: 1,
    batchSize: 4,
    gradAccum: 1,
    lr: 5e-4,
    schedule: "cosine",
    warmupRatio: 0.03,
    weightDecay: 0.01,
    betas: [0.9, 0.95],
    eps: 1e-8,
    maxGradNorm: 1,
    evalEvery: 0,
    saveEvery: 50,
    keepCheckpoints: 2,
    seed: 0,
    resume: true,
    ...overrides,
  };
}

export interface LoadedBase {
  model: CausalLM;
  tokenizer: Tokenizer;
  directory: string;
}

export async function loadBase(model: string): Promise<LoadedBase> {
  const loaded = await loadModel(model, "required");
  return { model: loaded.model, tokenizer: loaded.tokenizer!, directory: loaded.directory };
}

export async function loadPku(data: DataOptions): Promise<PkuRecord[]> {
  const { pku, pairwise } = await loadDataset(data.files, data.load);
  if (pku.length === 0) {
    throw new MidpoError(
      `${data.files.join(", ")} contain no PKU-SafeRLHF records (prompt, response_0, response_1, ` +
        `is_response_0_safe, is_response_1_safe, better_response_id, safer_response_id)` +
        (pairwise.length > 0 ? `; they hold ${pairwise.length} pairwise records instead` : ""),
    );
  }
  return pku;
}

function tokenize(
  pairs: readonly PreferencePair[],
  tokenizer: Tokenizer,
  data: DataOptions,
): TokenizedPair[] {
  const result = tokenizePairs(pairs, tokenizer, {
    template: data.template,
    maxLength: data.maxLength,
  });
  if (result.stats.promptsTruncated + result.stats.responsesTruncated > 0) {
    log.info(result.stats, "pairs truncated to fit max length");
  }
  return result.pairs.map((p, i) => ({
    promptIds: p.promptIds,
    chosenIds: p.chosenIds,
    rejectedIds: p.rejectedIds,
    margin: pairs[i].margin ?? 0,
  }));
}

/** End scores of full sequences from a score model, computed once per model and sequences. */
export async function cachedEndScores(
  scoreDir: string,
  sequences: readonly number[][],
  cache: ValueCache,
  maxBatchTokens?: number,
): Promise<Float64Array> {
  const key = hashKey({
    kind: "end-scores/v1",
    model: modelContentHash(scoreDir, cache.dir),
    sequences,
  });
  const { values, hit } = await cache.getOrCompute(
    "end-scores",
    key,
    sequences.length,
    { model: scoreDir },
    async () => {
      const model = ScoreModel.load(scoreDir);
      try {
        return await model.endScores(sequences, { maxBatchTokens });
      } finally {
        await model.release();
      }
    },
  );
  log.info({ model: scoreDir, sequences: sequences.length, cached: hit }, "end scores ready");
  return values;
}

/** Raises a MidpoError before any loading when the --`kind` score model directory is missing. */
function checkScoreModelDir(dir: string | undefined, kind: "reward" | "cost"): void {
  if (dir !== undefined && !existsSync(join(dir, "config.json"))) {
    const problem = existsSync(dir) ? "has no config.json" : "was not found";
    throw new MidpoError(
      `${kind} model ${dir} ${problem}. Pass the directory that train-score --kind ${kind} wrote.`,
    );
  }
}

/**
 * Returns the trainer's run key and run settings: everything that must match for --resume to
 * continue a run. The resume flag itself is left out, because it differs between the first
 * run and its resume.
 */
function runIdentity(
  stage: string,
  options: {
    trainer: TrainerSettings;
    data: DataOptions;
    extraSafety?: string[];
    cacheDir?: string;
  },
  extra: unknown,
  models: readonly (string | undefined)[],
): { runKey: string; runSettings: Record<string, string> } {
  const identity = {
    stage,
    options: { ...options, trainer: { ...options.trainer, resume: null } },
    extra,
  };
  // The key keeps the layout it had before the settings existed, so that older checkpoints
  // still resume. The settings add hashes of the data files and of the model, score model and
  // adapter directories, so that a file changed in place before a resume is rejected too.
  const files = [...options.data.files, ...(options.extraSafety ?? [])].filter(existsSync);
  return {
    runKey: hashKey(identity),
    runSettings: flattenSettings({
      stage,
      ...identity.options,
      records: extra,
      // The start of a sha256 is enough to tell contents apart, and short enough to show.
      dataContents: `#${hashKey(contentHashes(files)).slice(0, 12)}`,
      modelContents: `#${hashKey(
        models.filter((d) => d !== undefined).map((d) => modelContentHash(d, options.cacheDir)),
      ).slice(0, 12)}`,
    }),
  };
}

function split<T extends { prompt: PreferencePair["prompt"] }>(
  items: T[],
  data: DataOptions,
  seed: number,
) {
  return splitTrainEval(items, { evalRatio: data.evalRatio, seed });
}

// ---------------------------------------------------------------------------------------------
// Score models

export interface ScoreStageOptions {
  kind: "reward" | "cost";
  model: string;
  data: DataOptions;
  out: string;
  /** LoRA settings, or null to unfreeze the last `unfreezeLayers` layers. */
  lora: LoraConfigOptions | null;
  unfreezeLayers: number;
  regularization: number;
  trainer: TrainerSettings;
}

/** Reward model on D_h (better vs worse); cost model on safer vs less safe with labels. */
function scorePairs(
  kind: "reward" | "cost",
  records: PkuRecord[],
): (PreferencePair & { labels: [boolean, boolean] })[] {
  return records.map((r) => {
    const chosen = kind === "reward" ? r.better_response_id : r.safer_response_id;
    const responses = [r.response_0, r.response_1];
    const unsafe = [!r.is_response_0_safe, !r.is_response_1_safe];
    return {
      id: r.id,
      prompt: r.prompt,
      chosen: responses[chosen],
      rejected: responses[1 - chosen],
      source: r.source,
      labels: [unsafe[chosen], unsafe[1 - chosen]] as [boolean, boolean],
    };
  });
}

export async function runScoreStage(o: ScoreStageOptions): Promise<TrainSummary> {
  checkOutDir(o.out, o.trainer.resume);
  const base = await loadBase(o.model);
  const records = await loadPku(o.data);
  const pairs = scorePairs(o.kind, records);
  const { train, eval: evalPairs } = split(pairs, o.data, o.trainer.seed);
  const toScorePairs = (ps: typeof pairs): ScorePair[] => {
    const tokenized = tokenize(ps, base.tokenizer, o.data);
    return tokenized.map((t, i) => ({
      chosenIds: [...t.promptIds, ...t.chosenIds],
      rejectedIds: [...t.promptIds, ...t.rejectedIds],
      chosenUnsafe: o.kind === "cost" ? ps[i].labels[0] : null,
      rejectedUnsafe: o.kind === "cost" ? ps[i].labels[1] : null,
    }));
  };
  const rawConfig = JSON.parse(readFileSync(join(base.directory, "config.json"), "utf8"));
  const summary = await trainScoreModel(
    base.model.config,
    rawConfig,
    base.model.weights,
    toScorePairs(train),
    toScorePairs(evalPairs),
    {
      kind: o.kind,
      lora:
        o.lora === null
          ? null
          : createLoraConfig({ ...o.lora, baseModelNameOrPath: base.directory }),
      unfreezeLayers: o.unfreezeLayers,
      regularization: o.regularization,
      trainer: {
        ...o.trainer,
        outDir: o.out,
        ...runIdentity(
          o.kind,
          o,
          records.map((r) => r.id),
          [base.directory],
        ),
      },
    },
  );
  copyTokenizerFiles(base.directory, o.out);
  await base.model.release();
  return summary;
}

// ---------------------------------------------------------------------------------------------
// Experts and plain DPO

export interface ExpertStageOptions {
  kind: "safety" | "helpfulness";
  model: string;
  data: DataOptions;
  /** Extra pairwise files (chosen = more harmless) added to D_s. */
  extraSafety?: string[];
  out: string;
  /** "score": SPE-DPO margins from the score model; "none": plain DPO. */
  margin: "score" | "none";
  marginScale: number;
  reward?: string;
  cost?: string;
  lora: LoraConfigOptions;
  loss: LossOptions;
  trainer: TrainerSettings;
  cacheDir?: string;
}

/**
 * Margins of SPE-DPO: safety m = max(0, C(y_l) − C(y_w)), helpfulness m = max(0, R(y_w) −
 * R(y_l)), times `scale`. The clip at zero falls back to plain DPO where the score model
 * disagrees with the label.
 */
export async function speMargins(
  kind: "safety" | "helpfulness",
  scoreDir: string,
  pairs: readonly TokenizedPair[],
  scale: number,
  cache: ValueCache,
): Promise<number[]> {
  const seqs = pairs.flatMap((p) => [
    [...p.promptIds, ...p.chosenIds],
    [...p.promptIds, ...p.rejectedIds],
  ]);
  const scores = await cachedEndScores(scoreDir, seqs, cache);
  return pairs.map((_, i) => {
    const w = scores[2 * i];
    const l = scores[2 * i + 1];
    return scale * Math.max(0, kind === "safety" ? l - w : w - l);
  });
}

export async function runExpertStage(o: ExpertStageOptions): Promise<TrainSummary> {
  checkOutDir(o.out, o.trainer.resume);
  checkScoreModelDir(o.cost, "cost");
  checkScoreModelDir(o.reward, "reward");
  const base = await loadBase(o.model);
  const cache = new ValueCache(o.cacheDir);
  const records = await loadPku(o.data);
  let pairs = (o.kind === "safety" ? buildSafetySet(records) : buildHelpfulnessSet(records)).pairs;
  if (o.kind === "safety" && o.extraSafety && o.extraSafety.length > 0) {
    // Extra files have their own schema (hh-rlhf or pairwise), so only strictness carries over
    // from the read settings of the main files.
    const { pairwise } = await loadDataset(o.extraSafety, { strict: o.data.load?.strict });
    pairs = [...pairs, ...pairsFromPairwise(pairwise)];
  }
  if (pairs.length === 0) throw new MidpoError(`no ${o.kind} pairs in ${o.data.files.join(", ")}`);
  const { train, eval: evalPairs } = split(pairs, o.data, o.trainer.seed);
  log.info({ expert: o.kind, train: train.length, eval: evalPairs.length }, "preference pairs");

  const scoreDir = o.kind === "safety" ? o.cost : o.reward;
  const identity = runIdentity(
    `expert-${o.kind}`,
    o,
    records.map((r) => r.id),
    [base.directory, scoreDir],
  );
  checkResume(o.out, o.trainer.resume, identity);
  const prepare = async (ps: PreferencePair[]): Promise<ScoredPair[]> => {
    const tokenized = tokenize(ps, base.tokenizer, o.data);
    if (o.margin === "score") {
      if (scoreDir === undefined) {
        throw new MidpoError(
          `the ${o.kind} expert takes its margins from the ${o.kind === "safety" ? "cost" : "reward"} ` +
            `model: pass --${o.kind === "safety" ? "cost" : "reward"} DIR, or --margin none for plain DPO`,
        );
      }
      const margins = await speMargins(o.kind, scoreDir, tokenized, o.marginScale, cache);
      tokenized.forEach((t, i) => (t.margin = margins[i]));
    }
    return referenceLogps(base.model, base.directory, tokenized, cache);
  };
  const trainScored = await prepare(train);
  const evalScored = await prepare(evalPairs);

  const { summary } = await trainDpo(base.model, trainScored, evalScored, {
    lora: createLoraConfig({ ...o.lora, baseModelNameOrPath: base.directory }),
    loss: o.loss,
    trainer: {
      ...o.trainer,
      outDir: o.out,
      ...identity,
    },
  });
  await base.model.release();
  return summary;
}

// ---------------------------------------------------------------------------------------------
// Router

export interface RouterStageOptions {
  model: string;
  safety: string;
  helpfulness: string;
  data: DataOptions;
  /** D_dual rule: by labels, or by the cost model (both costs negative). */
  dual: "label" | "cost";
  cost?: string;
  out: string;
  router: { kind: RouterKind; hidden: number };
  beta: number;
  lambdaAlpha: number;
  lambdaBeta: number;
  trainer: TrainerSettings;
  cacheDir?: string;
}

export async function loadExperts(
  base: CausalLM,
  safetyDir: string,
  helpfulnessDir: string,
): Promise<Experts> {
  const modules = decoderLinearModules(base.config);
  return {
    safety: loadLoraAdapter(safetyDir, modules),
    helpfulness: loadLoraAdapter(helpfulnessDir, modules),
  };
}

export async function runRouterStage(o: RouterStageOptions): Promise<TrainSummary> {
  checkOutDir(o.out, o.trainer.resume);
  checkScoreModelDir(o.cost, "cost");
  const base = await loadBase(o.model);
  const cache = new ValueCache(o.cacheDir);
  const experts = await loadExperts(base.model, o.safety, o.helpfulness);
  const records = await loadPku(o.data);
  const identity = runIdentity("router", o, Object.keys(expertWeights(experts)), [
    base.directory,
    o.safety,
    o.helpfulness,
    o.cost,
  ]);
  checkResume(o.out, o.trainer.resume, identity);

  let dual: PreferencePair[];
  if (o.dual === "label") {
    dual = buildDualSetByLabel(records).pairs;
  } else {
    if (o.cost === undefined) throw new MidpoError("--dual cost needs --cost DIR");
    const byResponse = records.flatMap((r) => [
      { prompt: r.prompt, response: r.response_0 },
      { prompt: r.prompt, response: r.response_1 },
    ]);
    const seqs = byResponse.map((x) => {
      const t = tokenize(
        [
          {
            id: "",
            prompt: x.prompt,
            chosen: x.response,
            rejected: x.response,
            source: { file: "" },
          },
        ],
        base.tokenizer,
        o.data,
      )[0];
      return [...t.promptIds, ...t.chosenIds];
    });
    const costs = await cachedEndScores(o.cost, seqs, cache);
    const costMap = new Map(
      records.map((r, i) => [r.id, [costs[2 * i], costs[2 * i + 1]] as [number, number]]),
    );
    dual = buildDualSetByCost(records, costMap).pairs;
  }
  if (dual.length === 0) {
    throw new MidpoError(
      `D_dual is empty: no pair in ${o.data.files.join(", ")} has two safe responses with the safer ` +
        `one also the better one; check the labels or use --dual cost`,
    );
  }
  const { train, eval: evalPairs } = split(dual, o.data, o.trainer.seed);
  const prepare = (ps: PreferencePair[]) =>
    referenceLogps(
      base.model,
      base.directory,
      tokenize(ps, base.tokenizer, o.data).map((t) => ({ ...t, margin: 0 })),
      cache,
    );
  const shape = {
    kind: o.router.kind,
    hidden: o.router.hidden,
    intermediateSize: base.model.config.intermediateSize,
    layers: base.model.config.numHiddenLayers,
  };
  const { summary } = await trainRouter(
    base.model,
    experts,
    await prepare(train),
    await prepare(evalPairs),
    {
      shape,
      beta: o.beta,
      lambdaAlpha: o.lambdaAlpha,
      lambdaBeta: o.lambdaBeta,
      trainer: {
        ...o.trainer,
        outDir: o.out,
        ...identity,
      },
      provenance: provenance(base.directory, o.safety, o.helpfulness),
    },
  );
  await base.model.release();
  return summary;
}

// ---------------------------------------------------------------------------------------------
// SFT

export interface SftStageOptions {
  model: string;
  /** JSONL/JSON/Parquet with `prompt` and `response`, or PKU records (their better responses). */
  data: DataOptions;
  out: string;
  lora: LoraConfigOptions | null;
  trainer: TrainerSettings;
}

/**
 * Prompt/response pairs for SFT: records with string `prompt` and `response`, or PKU-SafeRLHF
 * records (their more helpful response), or pairwise records (their chosen response).
 */
export async function readSftExamples(
  files: readonly string[],
): Promise<{ prompt: string; response: string }[]> {
  const out: { prompt: string; response: string }[] = [];
  for (const file of files) {
    for await (const item of readRecords(file)) {
      if (item.kind === "problem") {
        throw new MidpoError(`${formatLocation(item.problem.source)}: ${item.problem.detail}`);
      }
      const v = item.value as Record<string, unknown>;
      const where = formatLocation(item.source);
      if (typeof v !== "object" || v === null || typeof v.prompt !== "string") {
        throw new MidpoError(`${where}: an SFT record needs a string "prompt"`);
      }
      let response: unknown = v.response;
      if (response === undefined && (v.better_response_id === 0 || v.better_response_id === 1)) {
        response = v[`response_${v.better_response_id}`];
      }
      if (response === undefined) response = v.chosen;
      if (typeof response !== "string" || response.trim() === "") {
        throw new MidpoError(
          `${where}: an SFT record needs a non-empty "response" (or PKU-SafeRLHF fields, or "chosen")`,
        );
      }
      out.push({ prompt: v.prompt, response });
    }
  }
  if (out.length === 0) throw new MidpoError(`no SFT records in ${files.join(", ")}`);
  return out;
}

export async function runSftStage(
  o: SftStageOptions,
  examples?: { prompt: string; response: string }[],
): Promise<TrainSummary> {
  checkOutDir(o.out, o.trainer.resume);
  const base = await loadBase(o.model);
  checkTokenizerFits(base.tokenizer, base.model);
  const items = examples ?? (await readSftExamples(o.data.files));
  const asPairs: PreferencePair[] = items.map((x, i) => ({
    id: String(i),
    prompt: x.prompt,
    chosen: x.response,
    rejected: x.response,
    source: { file: o.data.files[0] ?? "(built in)" },
  }));
  const { train, eval: evalPairs } = split(asPairs, o.data, o.trainer.seed);
  const toExamples = (ps: PreferencePair[]): SftExample[] =>
    tokenize(ps, base.tokenizer, o.data).map((t) => ({
      promptIds: t.promptIds,
      responseIds: t.chosenIds,
    }));
  const rawConfig = JSON.parse(readFileSync(join(base.directory, "config.json"), "utf8"));
  const { summary } = await trainSft(base.model, toExamples(train), toExamples(evalPairs), {
    lora:
      o.lora === null ? null : createLoraConfig({ ...o.lora, baseModelNameOrPath: base.directory }),
    trainer: {
      ...o.trainer,
      outDir: o.out,
      ...runIdentity("sft", o, items.length, [base.directory]),
    },
    saveFull: (dir, weights) => {
      saveCausalLM(dir, base.model.config, rawConfig, weights);
      copyTokenizerFiles(base.directory, dir);
    },
  });
  await base.model.release();
  return summary;
}

// ---------------------------------------------------------------------------------------------
// Plain DPO on a pairwise file

export interface DpoStageOptions {
  model: string;
  /** Pairwise files (prompt, chosen, rejected, optional margin), or PKU files (D_h). */
  data: DataOptions;
  out: string;
  lora: LoraConfigOptions;
  loss: LossOptions;
  trainer: TrainerSettings;
  cacheDir?: string;
}

export async function runDpoStage(o: DpoStageOptions): Promise<TrainSummary> {
  checkOutDir(o.out, o.trainer.resume);
  const base = await loadBase(o.model);
  const cache = new ValueCache(o.cacheDir);
  const { pku, pairwise } = await loadDataset(o.data.files, o.data.load);
  const pairs = [...pairsFromPairwise(pairwise), ...buildHelpfulnessSet(pku).pairs];
  if (pairs.length === 0) throw new MidpoError(`no preference pairs in ${o.data.files.join(", ")}`);
  const { train, eval: evalPairs } = split(pairs, o.data, o.trainer.seed);
  const identity = runIdentity("dpo", o, pairs.length, [base.directory]);
  checkResume(o.out, o.trainer.resume, identity);
  const prepare = (ps: PreferencePair[]) =>
    referenceLogps(base.model, base.directory, tokenize(ps, base.tokenizer, o.data), cache);
  const { summary } = await trainDpo(base.model, await prepare(train), await prepare(evalPairs), {
    lora: createLoraConfig({ ...o.lora, baseModelNameOrPath: base.directory }),
    loss: o.loss,
    trainer: {
      ...o.trainer,
      outDir: o.out,
      ...identity,
    },
  });
  await base.model.release();
  return summary;
}
