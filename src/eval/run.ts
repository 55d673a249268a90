// One evaluation run from start to finish: read the systems file and prompt sets, generate and
// score what the output directory lacks, compute the metrics, and write results.json,
// report.md and report.html. The CLI and pipeline stages call runEvaluation.

import { resolve } from "node:path";
import { MidpoError } from "../errors.js";
import type { PromptTemplate } from "../data/tokenize-pairs.js";
import { log } from "../log.js";
import { writeReports } from "../report/write.js";
import { evaluate, type SystemSetOutput } from "./evaluate.js";
import { summariseGates } from "./gates.js";
import {
  categoryMetrics,
  DEFAULT_BOOTSTRAP,
  groupMetrics,
  type BootstrapOptions,
  type ScoredResponses,
} from "./metrics.js";
import { promptSetName, readPromptSet, type PromptLabel, type PromptSet } from "./prompt-sets.js";
import { DEFAULT_REFUSAL_PHRASES, readRefusalPhrases, RefusalDetector } from "./refusal.js";
import {
  RESULTS_FORMAT,
  type EvaluationResults,
  type PromptSetResult,
  type SetMetrics,
} from "./results.js";
import { EvalStore } from "./store.js";
import { loadSystemsFile, validateSystems, type SystemSpec } from "./systems.js";

export interface RunEvaluationOptions {
  /** A systems file (YAML or JSON), or systems whose paths are relative to the working directory. */
  systems: string | readonly SystemSpec[];
  /** Prompt set files. Each set is named by its file stem. */
  prompts: readonly string[];
  /** Reward model directory (higher is more helpful). */
  reward: string;
  /** Cost model directory (positive is unsafe). */
  cost: string;
  /** Output directory: stored generations and scores, results.json and the reports. */
  out: string;
  /** Default 128. */
  maxNewTokens?: number;
  /** Default 0 (greedy). MidPO's reference evaluation samples with 0.7. */
  temperature?: number;
  /** Seed of sampling and of the bootstrap. Default 0. */
  seed?: number;
  /** Prompts per generate call. Default 16. */
  batchSize?: number;
  /** Prompt template, which must match training. Default "safe-rlhf". */
  template?: PromptTemplate;
  /** A phrase file (see readRefusalPhrases) or the phrases. Default DEFAULT_REFUSAL_PHRASES. */
  refusalPhrases?: string | readonly string[];
  /** Evaluate only the first N prompts of each set. */
  limit?: number;
  /** Prompt column of every set. Default `prompt`, else `instruction`. */
  promptColumn?: string;
  /** Label for unlabelled rows, by set name, e.g. { harmful_test: "unsafe" }. */
  setLabels?: Record<string, PromptLabel>;
  /** System that win rates compare against. Default: the first system of kind "base". */
  baseline?: string;
  /** Bootstrap of the win-rate interval. Default 1000 resamples at level 0.95, seed = `seed`. */
  bootstrap?: Partial<BootstrapOptions>;
  /** Directory for memoised model hashes. Default: the midpo cache directory. */
  cacheDir?: string;
}

/** Runs the evaluation, writes its reports, and returns the results that results.json contains. */
export async function runEvaluation(options: RunEvaluationOptions): Promise<EvaluationResults> {
  const systems =
    typeof options.systems === "string"
      ? loadSystemsFile(options.systems)
      : validateSystems(options.systems, "systems option", process.cwd());
  const sets = await readSets(options);
  const phrases = refusalPhrasesOf(options.refusalPhrases);
  const detector = new RefusalDetector(phrases);
  const baseline = pickBaseline(systems, options.baseline);
  const seed = options.seed ?? 0;
  const bootstrap: BootstrapOptions = { ...DEFAULT_BOOTSTRAP, seed, ...options.bootstrap };
  const settings = {
    maxNewTokens: options.maxNewTokens ?? 128,
    temperature: options.temperature ?? 0,
    seed,
    batchSize: options.batchSize ?? 16,
    template: options.template ?? ("safe-rlhf" as const),
  };

  const evaluated = await evaluate({
    systems,
    sets,
    scoreModels: { reward: resolve(options.reward), cost: resolve(options.cost) },
    settings,
    store: new EvalStore(options.out),
    cacheDir: options.cacheDir,
  });
  log.info(
    { generated: evaluated.work.generated.length, scored: evaluated.work.scored.length },
    "generation and scoring done",
  );

  const results: EvaluationResults = {
    format: RESULTS_FORMAT,
    settings: {
      ...settings,
      limit: options.limit ?? null,
      refusalPhrases: [...phrases],
      bootstrap,
      baseline,
    },
    scoreModels: evaluated.scoreModels,
    systems: systems.map((s) => ({ ...s, sha256: evaluated.systemHashes[s.name] })),
    sets: sets.map(describeSet),
    metrics: computeMetrics(evaluated.outputs, sets, baseline, detector, bootstrap),
    gates: evaluated.outputs
      .filter((o) => o.gates !== null)
      .map((o) => ({ system: o.system, set: o.set, ...summariseGates(o.gates!) })),
    work: evaluated.work,
  };
  await writeReports(options.out, results);
  return results;
}

async function readSets(options: RunEvaluationOptions): Promise<PromptSet[]> {
  if (options.prompts.length === 0) {
    throw new MidpoError("no prompt sets given; pass at least one --prompts FILE");
  }
  const names = options.prompts.map(promptSetName);
  const duplicate = names.find((name, i) => names.indexOf(name) !== i);
  if (duplicate !== undefined) {
    throw new MidpoError(
      `two prompt files are both named "${duplicate}" once the extension is dropped; ` +
        `rename one, because the set name keys stored generations`,
    );
  }
  for (const name of Object.keys(options.setLabels ?? {})) {
    if (!names.includes(name)) {
      throw new MidpoError(
        `a label is given for prompt set "${name}", but no --prompts file has that name ` +
          `(sets: ${names.join(", ")})`,
      );
    }
  }
  const sets: PromptSet[] = [];
  for (const path of options.prompts) {
    sets.push(
      await readPromptSet(path, {
        promptColumn: options.promptColumn,
        limit: options.limit,
        defaultLabel: options.setLabels?.[promptSetName(path)],
      }),
    );
  }
  return sets;
}

function refusalPhrasesOf(option: RunEvaluationOptions["refusalPhrases"]): readonly string[] {
  if (option === undefined) return DEFAULT_REFUSAL_PHRASES;
  return typeof option === "string" ? readRefusalPhrases(option) : option;
}

function pickBaseline(systems: readonly SystemSpec[], requested: string | undefined) {
  if (requested === undefined) {
    return systems.find((s) => s.kind === "base")?.name ?? null;
  }
  if (!systems.some((s) => s.name === requested)) {
    throw new MidpoError(
      `baseline system "${requested}" is not in the systems file ` +
        `(systems: ${systems.map((s) => s.name).join(", ")})`,
    );
  }
  return requested;
}

function describeSet(set: PromptSet): PromptSetResult {
  const count = (label: PromptLabel | null) => set.prompts.filter((p) => p.label === label).length;
  const categories = new Set(set.prompts.flatMap((p) => (p.category === null ? [] : [p.category])));
  return {
    name: set.name,
    path: set.path,
    sha256: set.hash,
    count: set.prompts.length,
    labels: { safe: count("safe"), unsafe: count("unsafe"), none: count(null) },
    categories: [...categories],
  };
}

function computeMetrics(
  outputs: readonly SystemSetOutput[],
  sets: readonly PromptSet[],
  baseline: string | null,
  detector: RefusalDetector,
  bootstrap: BootstrapOptions,
): SetMetrics[] {
  return outputs.map((output) => {
    const set = sets.find((s) => s.name === output.set)!;
    const baselineOutput = outputs.find((o) => o.system === baseline && o.set === output.set);
    const responses: ScoredResponses = {
      prompts: set.prompts,
      texts: output.responses.map((r) => r.response),
      reward: output.reward,
      cost: output.cost,
      baselineReward:
        baselineOutput === undefined || output.system === baseline ? null : baselineOutput.reward,
    };
    const all = set.prompts.map((_, i) => i);
    return {
      system: output.system,
      set: output.set,
      ...groupMetrics(responses, all, detector, bootstrap),
      categories: categoryMetrics(responses, detector, bootstrap),
    };
  });
}
