// Problems found while loading a dataset, counted by reason with the location of each. Every
// record that validation rejects gets exactly one problem (the first check it fails), so
// `recordsRead = recordsKept + sum of record-level problem counts`. File-level problems (a
// corrupt gzip stream or Parquet file) lose an unknown number of records and are counted apart.

import { MidpoError } from "../errors.js";
import { formatLocation, type SourceLocation } from "./types.js";

export const RECORD_PROBLEMS = [
  "unparseable_line",
  "wrong_type",
  "missing_field",
  "invalid_utf8",
  "empty_text",
  "id_out_of_range",
  "identical_responses",
  "malformed_dialogue",
  "prefix_mismatch",
  "duplicate",
] as const;

export const FILE_PROBLEMS = ["bad_gzip", "bad_parquet"] as const;

/**
 * Why a record or file was rejected:
 * - `unparseable_line`: a line (or a whole JSON file) that is not valid JSON;
 * - `wrong_type`: a record that is not an object, or a field of the wrong type;
 * - `missing_field`: a required field is absent or null;
 * - `invalid_utf8`: bytes that are not UTF-8 (decoded to U+FFFD) or a lone UTF-16 surrogate;
 * - `empty_text`: a prompt or response that is empty or only whitespace;
 * - `id_out_of_range`: `better_response_id` or `safer_response_id` is an integer other than 0, 1;
 * - `identical_responses`: both responses are the same text after trimming whitespace;
 * - `malformed_dialogue`: an hh-rlhf transcript without alternating Human/Assistant turns ending
 *   in an Assistant turn;
 * - `prefix_mismatch`: the two hh-rlhf transcripts differ before their final Assistant turn;
 * - `duplicate`: same prompt and same two responses (in either order) as an earlier record;
 * - `bad_gzip`: the gzip stream is corrupt or truncated, so the rest of the file is lost;
 * - `bad_parquet`: the Parquet file or one of its row groups cannot be decoded.
 */
export type ProblemReason = (typeof RECORD_PROBLEMS)[number] | (typeof FILE_PROBLEMS)[number];

export interface Problem {
  reason: ProblemReason;
  source: SourceLocation;
  /** Description of the fault, e.g. `"better_response_id" is 2`. */
  detail: string;
}

/** Counts and locations of the problems of one load. */
export interface ProblemSummary {
  counts: Partial<Record<ProblemReason, number>>;
  /**
   * The problems with their locations, in the order they were found: every problem up to a
   * limit per reason (1000 when loading a dataset), so that memory stays bounded.
   */
  examples: Problem[];
}

const FILE_PROBLEM_SET: ReadonlySet<ProblemReason> = new Set(FILE_PROBLEMS);

export function isRecordProblem(reason: ProblemReason): boolean {
  return !FILE_PROBLEM_SET.has(reason);
}

/**
 * Collects problems. With `strict`, the first problem raises a MidpoError that names the file,
 * line or row, and reason.
 */
export class ProblemLog {
  private readonly counts = new Map<ProblemReason, number>();
  private readonly examples: Problem[] = [];

  constructor(
    private readonly strict: boolean,
    private readonly examplesPerReason = 1000,
  ) {}

  add(problem: Problem): void {
    if (this.strict) {
      throw new MidpoError(
        `${formatLocation(problem.source)}: ${problem.reason}: ${problem.detail}. ` +
          `Fix or remove the record, or load without strict mode to skip and count such records.`,
      );
    }

    const count = (this.counts.get(problem.reason) ?? 0) + 1;
    this.counts.set(problem.reason, count);
    if (count <= this.examplesPerReason) {
      this.examples.push(problem);
    }
  }

  /** Records rejected by validation, leaving out file-level problems. */
  get recordProblemCount(): number {
    let total = 0;
    for (const [reason, count] of this.counts) {
      if (isRecordProblem(reason)) {
        total += count;
      }
    }
    return total;
  }

  summary(): ProblemSummary {
    const counts: Partial<Record<ProblemReason, number>> = {};
    for (const [reason, count] of this.counts) {
      counts[reason] = count;
    }
    return { counts, examples: [...this.examples] };
  }
}
