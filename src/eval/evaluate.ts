// Generation and scoring of every (system, prompt set) pair, reusing what the output
// directory already holds. Work runs in three phases so that at most one large model is in
// memory at a time:
//
//   1. for each system with missing generations: load it, generate the missing sets, release;
//   2. if any reward scores are missing: load the reward model, score them, release;
//   3. the same for the cost model.
//
// A response is scored as the score models were trained: prompt ids (same template, BOS first)
// + response ids + EOS id, read at the last token (the end score).
//
// Keys (see store.ts):
//   generations: system content hash, prompt set hash, tokenisation hash, generation settings
//   scores:      generation key, score model content hash

import { MidpoError } from "../errors.js";
import { tokenizationConfigHash } from "../data/tokenize-pairs.js";
import { log } from "../log.js";
import { ScoreModel } from "../model/score-model.js";
import type { Tokenizer } from "../tokenize/tokenizer.js";
import { defaultCacheDir, hashKey, modelContentHash } from "../train/cache.js";
import type { GateStats } from "./gates.js";
import { encodeEvalPrompt, generateResponses, type GenerationSettings } from "./generation.js";
import type { PromptSet } from "./prompt-sets.js";
import { EvalProgress } from "./progress.js";
import type { EvalStore, ScoreKind, StoredGeneration } from "./store.js";
import { buildSystemModel, loadSystemTokenizer, systemContentHash } from "./system-model.js";
import type { SystemSpec } from "./systems.js";

/** Version of the generation and scoring rules here. Bump it when they change outputs. */
const EVAL_RULES_VERSION = 1;

export interface EvaluateInput {
  systems: readonly SystemSpec[];
  sets: readonly PromptSet[];
  scoreModels: Record<ScoreKind, string>;
  settings: GenerationSettings;
  store: EvalStore;
  /** Directory for memoised model hashes. Default: the midpo cache directory. */
  cacheDir?: string;
}

/** Responses, scores and gates of one system on one set. */
export interface SystemSetOutput {
  system: string;
  set: string;
  generationKey: string;
  responses: StoredGeneration[];
  reward: number[];
  cost: number[];
  gates: GateStats | null;
}

/** Generations and scores a run computed, as opposed to read from the store. */
export interface EvaluationWork {
  generated: { system: string; set: string }[];
  scored: { system: string; set: string; kind: ScoreKind }[];
}

export interface EvaluateOutput {
  outputs: SystemSetOutput[];
  systemHashes: Record<string, string>;
  scoreModels: Record<ScoreKind, { path: string; sha256: string }>;
  work: EvaluationWork;
}

/** One system on one set, with what the phases fill in. */
interface Entry {
  spec: SystemSpec;
  tokenizer: Tokenizer;
  output: SystemSetOutput;
  set: PromptSet;
}

/** Generates and scores whatever the store lacks, as the file header describes. */
export async function evaluate(input: EvaluateInput): Promise<EvaluateOutput> {
  const cacheDir = input.cacheDir ?? defaultCacheDir();
  const work: EvaluationWork = { generated: [], scored: [] };
  const systemHashes: Record<string, string> = {};
  const entries: Entry[] = [];

  for (const spec of input.systems) {
    const tokenizer = loadSystemTokenizer(spec);
    systemHashes[spec.name] = systemContentHash(spec, cacheDir);
    const tokenization = tokenizationConfigHash(tokenizer, { template: input.settings.template });
    for (const set of input.sets) {
      const generationKey = hashKey({
        version: EVAL_RULES_VERSION,
        system: systemHashes[spec.name],
        set: set.hash,
        tokenization,
        settings: keyedSettings(input.settings),
      });
      entries.push({
        spec,
        tokenizer,
        set,
        output: {
          system: spec.name,
          set: set.name,
          generationKey,
          responses: [],
          reward: [],
          cost: [],
          gates: null,
        },
      });
    }
  }

  await generateMissing(entries, input, work);
  const scoreModels = {
    reward: await scoreMissing(entries, "reward", input, cacheDir, work),
    cost: await scoreMissing(entries, "cost", input, cacheDir, work),
  };
  return { outputs: entries.map((e) => e.output), systemHashes, scoreModels, work };
}

/**
 * Returns the settings that change responses. The seed and batch size only matter when sampling:
 * greedy decoding gives the same tokens for any seed, and for any batch size up to float
 * rounding in padded batches.
 */
function keyedSettings(settings: GenerationSettings): Record<string, unknown> {
  const sampling = settings.temperature > 0;
  return {
    maxNewTokens: settings.maxNewTokens,
    temperature: settings.temperature,
    template: settings.template,
    ...(sampling ? { seed: settings.seed, batchSize: settings.batchSize } : {}),
  };
}

async function generateMissing(
  entries: Entry[],
  input: EvaluateInput,
  work: EvaluationWork,
): Promise<void> {
  const missing = new Map<string, Entry[]>();
  for (const entry of entries) {
    const { output } = entry;
    const stored = input.store.readGenerations(output.system, output.set, output.generationKey);
    const gates =
      entry.spec.kind === "router"
        ? input.store.readGates(output.system, output.set, output.generationKey)
        : null;
    if (stored !== undefined && gates !== undefined) {
      output.responses = stored;
      output.gates = gates;
      continue;
    }
    const list = missing.get(entry.spec.name) ?? [];
    list.push(entry);
    missing.set(entry.spec.name, list);
  }

  for (const list of missing.values()) {
    const { spec, tokenizer } = list[0];
    log.info({ system: spec.name, kind: spec.kind, sets: list.length }, "loading system");
    const system = buildSystemModel(spec, tokenizer);
    try {
      for (const entry of list) {
        const { output, set } = entry;
        const label = `${output.system}/${output.set}`;
        const generated = await generateResponses(
          system,
          tokenizer,
          set.prompts,
          input.settings,
          label,
        );
        await input.store.writeGenerations(
          {
            key: output.generationKey,
            system: output.system,
            set: output.set,
            count: generated.rows.length,
            settings: { ...input.settings, systemKind: spec.kind, setPath: set.path },
          },
          generated.rows,
          generated.gates,
        );
        output.responses = generated.rows;
        output.gates = generated.gates;
        work.generated.push({ system: output.system, set: output.set });
      }
    } finally {
      await system.release();
    }
  }
}

async function scoreMissing(
  entries: Entry[],
  kind: ScoreKind,
  input: EvaluateInput,
  cacheDir: string,
  work: EvaluationWork,
): Promise<{ path: string; sha256: string }> {
  const path = input.scoreModels[kind];
  const model = { path, sha256: modelContentHash(path, cacheDir) };
  const missing: { entry: Entry; key: string }[] = [];
  for (const entry of entries) {
    const { output } = entry;
    const key = hashKey({ generation: output.generationKey, kind, model: model.sha256 });
    const count = output.responses.length;
    const stored = input.store.readScores(output.system, output.set, kind, key, count);
    if (stored === undefined) missing.push({ entry, key });
    else output[kind] = stored;
  }
  if (missing.length === 0) return model;

  log.info({ kind, path, outputs: missing.length }, "loading score model");
  const scorer = ScoreModel.load(path);
  const total = missing.reduce((n, m) => n + m.entry.output.responses.length, 0);
  const progress = new EvalProgress(`score ${kind}`, total, "responses");
  try {
    for (const { entry, key } of missing) {
      const { output } = entry;
      const sequences = scoredSequences(entry, input.settings, scorer, kind);
      const values = Array.from(await scorer.endScores(sequences));
      await input.store.writeScores(output.system, output.set, { key, kind, model, values });
      output[kind] = values;
      work.scored.push({ system: output.system, set: output.set, kind });
      progress.advance(sequences.length);
    }
  } finally {
    progress.stop();
    await scorer.release();
  }
  return model;
}

/** prompt ids + response ids + EOS for each response, checked against the score model. */
function scoredSequences(
  entry: Entry,
  settings: GenerationSettings,
  scorer: ScoreModel,
  kind: ScoreKind,
): number[][] {
  const { tokenizer, output } = entry;
  const eos = tokenizer.eosTokenId;
  if (eos === undefined) {
    throw new MidpoError(
      `the tokenizer of system "${output.system}" defines no EOS token, which ends every ` +
        `scored response; set eos_token in its tokenizer_config.json`,
    );
  }
  const config = scorer.files.config;
  return output.responses.map((row) => {
    const ids = [...encodeEvalPrompt(row.prompt, tokenizer, settings.template), ...row.tokens, eos];
    const where = `${kind} model ${scorer.files.directory}, system "${output.system}", set "${output.set}" prompt ${row.index}`;
    if (ids.length > config.maxPositionEmbeddings) {
      throw new MidpoError(
        `${where}: prompt + response + EOS is ${ids.length} tokens, longer than the score ` +
          `model's max_position_embeddings ${config.maxPositionEmbeddings}; lower --max-new-tokens`,
      );
    }
    const outside = ids.find((id) => id >= config.vocabSize);
    if (outside !== undefined) {
      throw new MidpoError(
        `${where}: token id ${outside} is outside the score model's vocabulary ` +
          `(vocab_size ${config.vocabSize}); the score model must use the policy's tokenizer`,
      );
    }
    return ids;
  });
}
