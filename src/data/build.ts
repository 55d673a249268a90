// `midpo data build` as a library call: load PKU-SafeRLHF files (and pairwise files), derive
// D_s, D_h and D_dual, filter by length, split each set into train and eval by prompt, and write
// everything with a summary.json.

import { log } from "../log.js";
import type { Tokenizer } from "../tokenize/tokenizer.js";
import { loadDataset, type LoadOptions, type LoadSummary } from "./load.js";
import {
  buildDualSetByLabel,
  buildHelpfulnessSet,
  buildSafetySet,
  filterByLength,
  pairsFromPairwise,
  splitTrainEval,
  type SetName,
} from "./sets.js";
import { tokenizationConfigHash, tokenLengths, type PromptTemplate } from "./tokenize-pairs.js";
import type { PreferencePair } from "./types.js";
import { checkOutputDir, pairToJson, writeOutputsAtomically, type OutputFile } from "./write.js";

export interface BuildOptions {
  /** PKU-SafeRLHF files or dataset directories. Pairwise records among them join D_h. */
  inputs: readonly string[];
  /**
   * Pairwise or hh-rlhf files whose chosen response is the more harmless one (hh-rlhf
   * harmless-base); their pairs join D_s.
   */
  safetyPairwise?: readonly string[];
  /** Output directory. */
  out: string;
  /** Expected fraction of prompts in the eval split. Default 0.1. */
  evalRatio?: number;
  /** Seed of the prompt hash that assigns the split. Default 0. */
  seed?: number;
  /** Drop pairs whose prompt plus longer response is longer than this. */
  maxLength?: number;
  /** Measure `maxLength` in this tokenizer's tokens; without it, in characters. */
  tokenizer?: Tokenizer;
  /** Template used to count tokens. Default "safe-rlhf". */
  template?: PromptTemplate;
  load?: LoadOptions;
  /** Load options of `safetyPairwise`. Default: `load` with the schema detected per file. */
  safetyLoad?: LoadOptions;
}

export interface SetSummary {
  /** Pairs derived before length filtering. */
  pairs: number;
  /** Records left out of the set, or noted, by reason (see sets.ts). */
  counts: Record<string, number>;
  /** Pairs from pairwise files included in `pairs`. */
  fromPairwise: number;
  droppedTooLong: number;
  train: number;
  eval: number;
}

export interface BuildSummary {
  inputs: readonly string[];
  safetyPairwiseInputs: readonly string[];
  load: LoadSummary;
  safetyPairwiseLoad?: LoadSummary;
  split: { evalRatio: number; seed: number; rule: string };
  lengthFilter?: {
    maxLength: number;
    unit: "tokens" | "characters";
    template?: PromptTemplate;
    tokenizationConfigHash?: string;
  };
  sets: Record<SetName, SetSummary>;
  files: string[];
}

const SET_NAMES: readonly SetName[] = ["ds", "dh", "ddual"];

/** Builds the three sets and writes `{ds,dh,ddual}.{train,eval}.jsonl` and summary.json. */
export async function buildDatasets(options: BuildOptions): Promise<BuildSummary> {
  const evalRatio = options.evalRatio ?? 0.1;
  const seed = options.seed ?? 0;
  const template = options.template ?? "safe-rlhf";

  checkOutputDir(options.out, "--out");
  const main = await loadDataset(options.inputs, options.load);
  const safetyInputs = options.safetyPairwise ?? [];
  const safety =
    safetyInputs.length > 0
      ? await loadDataset(safetyInputs, options.safetyLoad ?? { ...options.load, schema: "auto" })
      : undefined;
  if (safety !== undefined && safety.pku.length > 0) {
    log.warn(
      { records: safety.pku.length },
      "PKU-SafeRLHF records among the safety pairwise inputs are used like the main inputs",
    );
  }

  const pku = [...main.pku, ...(safety?.pku ?? [])];
  const helpfulnessPairwise = pairsFromPairwise(main.pairwise);
  const safetyPairwise = pairsFromPairwise(safety?.pairwise ?? []);
  if (helpfulnessPairwise.length > 0) {
    log.info({ pairs: helpfulnessPairwise.length }, "pairwise records of the inputs join D_h");
  }

  const derived = {
    ds: withPairwise(buildSafetySet(pku), safetyPairwise),
    dh: withPairwise(buildHelpfulnessSet(pku), helpfulnessPairwise),
    ddual: withPairwise(buildDualSetByLabel(pku), []),
  };

  const measure =
    options.tokenizer === undefined ? undefined : tokenLengths(options.tokenizer, { template });
  const files: OutputFile[] = [];
  const sets = {} as Record<SetName, SetSummary>;
  for (const name of SET_NAMES) {
    const { pairs, counts, fromPairwise } = derived[name];
    const filtered =
      options.maxLength === undefined
        ? { kept: pairs, dropped: [] }
        : filterByLength(pairs, options.maxLength, measure);
    const split = splitTrainEval(filtered.kept, { evalRatio, seed });

    sets[name] = {
      pairs: pairs.length,
      counts,
      fromPairwise,
      droppedTooLong: filtered.dropped.length,
      train: split.train.length,
      eval: split.eval.length,
    };
    files.push({ name: `${name}.train.jsonl`, lines: split.train.map(pairToJson) });
    files.push({ name: `${name}.eval.jsonl`, lines: split.eval.map(pairToJson) });
    log.info({ set: name, ...sets[name] }, "built preference set");
  }

  const summary: BuildSummary = {
    inputs: options.inputs,
    safetyPairwiseInputs: safetyInputs,
    load: main.summary,
    ...(safety === undefined ? {} : { safetyPairwiseLoad: safety.summary }),
    split: {
      evalRatio,
      seed,
      rule:
        "a prompt is in eval when the first 48 bits of SHA-256('midpo-split' NUL seed NUL " +
        "prompt key), as a fraction of 2^48, are below evalRatio",
    },
    sets,
    files: [...files.map((file) => file.name), "summary.json"],
  };
  if (options.maxLength !== undefined) {
    summary.lengthFilter = {
      maxLength: options.maxLength,
      unit: options.tokenizer === undefined ? "characters" : "tokens",
      ...(options.tokenizer === undefined
        ? {}
        : {
            template,
            tokenizationConfigHash: tokenizationConfigHash(options.tokenizer, { template }),
          }),
    };
  }

  files.push({ name: "summary.json", json: summary });
  await writeOutputsAtomically(options.out, files);
  log.info({ out: options.out, files: summary.files.length }, "wrote preference sets");
  return summary;
}

function withPairwise(
  built: { pairs: PreferencePair[]; counts: Record<string, number> },
  pairwise: readonly PreferencePair[],
): { pairs: PreferencePair[]; counts: Record<string, number>; fromPairwise: number } {
  return {
    pairs: [...built.pairs, ...pairwise],
    counts: built.counts,
    fromPairwise: pairwise.length,
  };
}
