// Items that the file readers yield, and the UTF-8 and value helpers they share.

import type { Problem } from "./problems.js";
import type { SourceLocation } from "./types.js";

/** A JSON value read from a file, before validation. */
export interface RawRecord {
  kind: "record";
  value: unknown;
  source: SourceLocation;
  /** The bytes behind this record were not valid UTF-8 and were decoded with U+FFFD. */
  invalidUtf8: boolean;
}

/**
 * A problem met while reading. An `unparseable_line` stands for one record that was read but
 * could not be parsed, while `bad_gzip` and `bad_parquet` end the file or skip a row group.
 */
export interface ReadProblem {
  kind: "problem";
  problem: Problem;
}

export type ReadItem = RawRecord | ReadProblem;

export function readProblem(
  reason: Problem["reason"],
  source: SourceLocation,
  detail: string,
): ReadProblem {
  return { kind: "problem", problem: { reason, source, detail } };
}

const fatalDecoder = new TextDecoder("utf-8", { fatal: true });
const lossyDecoder = new TextDecoder("utf-8");

/** Decodes UTF-8, replacing invalid bytes with U+FFFD and reporting whether there were any. */
export function decodeUtf8(bytes: Uint8Array): { text: string; invalid: boolean } {
  try {
    return { text: fatalDecoder.decode(bytes), invalid: false };
  } catch {
    return { text: lossyDecoder.decode(bytes), invalid: true };
  }
}

/** Returns whether any string inside `value` (at any depth) satisfies `test`. */
export function containsString(value: unknown, test: (s: string) => boolean): boolean {
  if (typeof value === "string") {
    return test(value);
  }
  if (Array.isArray(value)) {
    return value.some((item) => containsString(item, test));
  }
  if (typeof value === "object" && value !== null) {
    return Object.values(value).some((item) => containsString(item, test));
  }
  return false;
}
