// Record and pair types shared by the readers, the validation, the derived sets (D_s, D_h,
// D_dual) and tokenisation.

/**
 * Location of a record in its source: `line` (1-based) for JSONL files, `row` (0-based) for Parquet files
 * and JSON arrays. A file-level problem such as a bad gzip stream may carry neither.
 */
export interface SourceLocation {
  file: string;
  line?: number;
  row?: number;
}

/** One turn of a multi-turn prompt. Turns alternate user, assistant, ..., user. */
export interface Turn {
  role: "user" | "assistant";
  content: string;
}

/** A prompt: one user message, or a conversation that ends with a user turn. */
export type Prompt = string | Turn[];

/** One record in the PKU-SafeRLHF schema, after validation. */
export interface PkuRecord {
  kind: "pku";
  /** Content hash of the prompt and both responses; see `recordId` in validate.ts. */
  id: string;
  prompt: Prompt;
  response_0: string;
  response_1: string;
  is_response_0_safe: boolean;
  is_response_1_safe: boolean;
  /** Index of the more helpful response. */
  better_response_id: 0 | 1;
  /** Index of the safer response. */
  safer_response_id: 0 | 1;
  /** Fields outside the schema (severity levels, harm categories, hashes), kept unchanged. */
  extras: Record<string, unknown>;
  source: SourceLocation;
}

/**
 * One preference pair read from a pairwise file (`prompt`/`chosen`/`rejected`) or split out of
 * an hh-rlhf dialogue. It carries no safety labels.
 */
export interface PairwiseRecord {
  kind: "pairwise";
  id: string;
  prompt: Prompt;
  chosen: string;
  rejected: string;
  /** Fixed margin given by the file, if it has one. */
  margin?: number;
  extras: Record<string, unknown>;
  source: SourceLocation;
}

export type DatasetRecord = PkuRecord | PairwiseRecord;

/** A preference pair of a derived set: `chosen` is y_w, `rejected` is y_l. */
export interface PreferencePair {
  /** Id of the source record, so the same record has the same id in D_s, D_h and D_dual. */
  id: string;
  prompt: Prompt;
  chosen: string;
  rejected: string;
  source: SourceLocation;
  margin?: number;
  meta?: Record<string, unknown>;
}

/** Formats a location as `file:line` or `file row N (from 0)`. */
export function formatLocation(source: SourceLocation): string {
  if (source.line !== undefined) {
    return `${source.file}:${source.line}`;
  }
  if (source.row !== undefined) {
    return `${source.file} row ${source.row} (from 0)`;
  }
  return source.file;
}
