// Generations and scores kept in the output directory, so that a rerun only computes what is
// new. Each file stores the key it was computed under, and a file whose key differs from the
// current one is recomputed and replaced:
//
//   generations/<system>/<set>.jsonl       header line { format, key, system, set, count,
//                                          settings }, then one line per prompt
//   generations/<system>/<set>.gates.json  router systems: { key, stats } (see gates.ts)
//   scores/<system>/<set>.reward.json      { key, kind, model, values }, one value per prompt
//   scores/<system>/<set>.cost.json
//
// Files are written under a temporary name and renamed, so an interrupted run leaves either
// the old file or the new one.

import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import type { FinishReason } from "../generate/generate.js";
import { writeOutputsAtomically } from "../data/write.js";
import { log } from "../log.js";
import type { GateStats } from "./gates.js";

const GENERATIONS_FORMAT = "midpo-eval-generations/v1";

export type ScoreKind = "reward" | "cost";

export interface StoredGeneration {
  index: number;
  prompt: string;
  response: string;
  /** Generated token ids, without the final EOS. */
  tokens: number[];
  finishReason: FinishReason;
}

export interface GenerationHeader {
  format: typeof GENERATIONS_FORMAT;
  key: string;
  system: string;
  set: string;
  count: number;
  /** Inputs the key covers, written out for people reading the file. */
  settings: Record<string, unknown>;
}

export interface StoredScores {
  key: string;
  kind: ScoreKind;
  model: { path: string; sha256: string };
  values: number[];
}

export class EvalStore {
  constructor(readonly outDir: string) {}

  private generationDir(system: string): string {
    return join(this.outDir, "generations", system);
  }

  private scoreDir(system: string): string {
    return join(this.outDir, "scores", system);
  }

  /** Stored generations under `key`, or undefined when missing, stale or unreadable. */
  readGenerations(system: string, set: string, key: string): StoredGeneration[] | undefined {
    const path = join(this.generationDir(system), `${set}.jsonl`);
    if (!existsSync(path)) return undefined;
    try {
      const lines = readFileSync(path, "utf8")
        .split("\n")
        .filter((line) => line !== "");
      const header = JSON.parse(lines[0]) as GenerationHeader;
      if (header.format !== GENERATIONS_FORMAT || header.key !== key) return undefined;
      const rows = lines.slice(1).map((line) => JSON.parse(line) as StoredGeneration);
      return rows.length === header.count ? rows : undefined;
    } catch (error) {
      log.warn({ path, err: error }, "failed to read stored generations, generating them again");
      return undefined;
    }
  }

  readGates(system: string, set: string, key: string): GateStats | undefined {
    const stored = this.readJson<{ key: string; stats: GateStats }>(
      join(this.generationDir(system), `${set}.gates.json`),
    );
    return stored?.key === key ? stored.stats : undefined;
  }

  async writeGenerations(
    header: Omit<GenerationHeader, "format">,
    rows: readonly StoredGeneration[],
    gates: GateStats | null,
  ): Promise<void> {
    const files = [];
    if (gates !== null) {
      files.push({ name: `${header.set}.gates.json`, json: { key: header.key, stats: gates } });
    }
    // The JSONL file goes last: writeOutputsAtomically renames the last file after the others.
    files.push({
      name: `${header.set}.jsonl`,
      lines: [{ format: GENERATIONS_FORMAT, ...header }, ...rows],
    });
    await writeOutputsAtomically(this.generationDir(header.system), files);
  }

  /** Stored scores under `key` with `count` values, or undefined. */
  readScores(
    system: string,
    set: string,
    kind: ScoreKind,
    key: string,
    count: number,
  ): number[] | undefined {
    const stored = this.readJson<StoredScores>(join(this.scoreDir(system), `${set}.${kind}.json`));
    if (stored === undefined || stored.key !== key || stored.values.length !== count) {
      return undefined;
    }
    return stored.values;
  }

  async writeScores(system: string, set: string, scores: StoredScores): Promise<void> {
    await writeOutputsAtomically(this.scoreDir(system), [
      { name: `${set}.${scores.kind}.json`, json: scores },
    ]);
  }

  private readJson<T>(path: string): T | undefined {
    if (!existsSync(path)) return undefined;
    try {
      return JSON.parse(readFileSync(path, "utf8")) as T;
    } catch (error) {
      log.warn({ path, err: error }, "failed to read a stored file, computing it again");
      return undefined;
    }
  }
}
