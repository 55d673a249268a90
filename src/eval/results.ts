// The results object of an evaluation, as written to results.json and read by the reports.
// Rates are shares in [0, 1], and a metric that has no prompts to average over is null.

import type { PromptTemplate } from "../data/tokenize-pairs.js";
import type { EvaluationWork } from "./evaluate.js";
import type { GateSummary } from "./gates.js";
import type { BootstrapOptions, CategoryMetrics, GroupMetrics } from "./metrics.js";
import type { SystemSpec } from "./systems.js";

export const RESULTS_FORMAT = "midpo-eval-results/v1";

export interface SystemResult extends SystemSpec {
  /** Content hash of everything that decides the system's outputs. */
  sha256: string;
}

export interface PromptSetResult {
  name: string;
  path: string;
  sha256: string;
  count: number;
  /** Prompts labelled safe, labelled unsafe, and without a label. */
  labels: { safe: number; unsafe: number; none: number };
  categories: string[];
}

export interface SetMetrics extends GroupMetrics {
  system: string;
  set: string;
  categories: CategoryMetrics[];
}

export interface GateResult extends GateSummary {
  system: string;
  set: string;
}

export interface EvaluationResults {
  format: typeof RESULTS_FORMAT;
  settings: {
    maxNewTokens: number;
    temperature: number;
    seed: number;
    batchSize: number;
    template: PromptTemplate;
    limit: number | null;
    refusalPhrases: string[];
    bootstrap: BootstrapOptions;
    /** The system that win rates compare against, or null when there is none. */
    baseline: string | null;
  };
  scoreModels: { reward: { path: string; sha256: string }; cost: { path: string; sha256: string } };
  systems: SystemResult[];
  sets: PromptSetResult[];
  /** One entry per system and set, systems in file order, then sets in flag order. */
  metrics: SetMetrics[];
  /** Router systems only, one entry per set. */
  gates: GateResult[];
  /** Generations and scores this run computed, as opposed to read from the output directory. */
  work: EvaluationWork;
}
