// Prompt sets for evaluation: CSV (RFC 4180, header row), JSONL, JSON arrays or Parquet files
// with one prompt per row. The prompt is read from `--prompt-column`, else `prompt`, else
// `instruction`, so PKU-SafeRLHF rows and Alpaca/HarmBench-style instruction files load as
// they are. Optional columns: `label` (safe or unsafe, which decides whether a refusal counts
// as over-refusal or as a correct refusal) and `category` (for the per-category breakdown).

import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { basename } from "node:path";
import { CsvError, parse as parseCsv } from "csv-parse/sync";
import { MidpoError } from "../errors.js";
import { readRecords } from "../data/read.js";
import { formatLocation, type SourceLocation } from "../data/types.js";

export type PromptLabel = "safe" | "unsafe";

export interface EvalPrompt {
  /** Row number in the set, 0-based, after `limit`. */
  index: number;
  text: string;
  label: PromptLabel | null;
  category: string | null;
}

export interface PromptSet {
  /** The file name without directory and extensions, e.g. `harmful_test`. */
  name: string;
  path: string;
  /** SHA-256 over the prompts, labels and categories, so any edit changes it. */
  hash: string;
  prompts: EvalPrompt[];
}

export interface PromptSetOptions {
  /** Column that contains the prompt. Default: `prompt`, else `instruction`. */
  promptColumn?: string;
  /** Keep only the first N rows. */
  limit?: number;
  /** Label for rows that have none, e.g. "unsafe" for a file of harmful instructions. */
  defaultLabel?: PromptLabel;
}

interface Row {
  value: Record<string, unknown>;
  source: SourceLocation;
}

const LABELS: Record<string, PromptLabel> = {
  safe: "safe",
  benign: "safe",
  harmless: "safe",
  unsafe: "unsafe",
  harmful: "unsafe",
};

/** Returns the set name for a file: its base name without `.gz` and the format extension. */
export function promptSetName(path: string): string {
  return basename(path)
    .replace(/\.gz$/i, "")
    .replace(/\.(csv|jsonl|ndjson|json|parquet)$/i, "");
}

/** Reads one prompt set. Throws MidpoError naming the file and row of any invalid value. */
export async function readPromptSet(
  path: string,
  options: PromptSetOptions = {},
): Promise<PromptSet> {
  const rows = isCsv(path) ? readCsvRows(path) : await readRecordRows(path);
  if (rows.length === 0) {
    throw new MidpoError(`prompt set ${path} has no rows; pass a file with at least one prompt`);
  }
  const selected = options.limit === undefined ? rows : rows.slice(0, options.limit);
  const column = options.promptColumn ?? pickPromptColumn(selected[0]);

  const prompts = selected.map((row, index) => ({
    index,
    text: readPromptText(row, column),
    label: readLabel(row) ?? options.defaultLabel ?? null,
    category: readCategory(row),
  }));
  return { name: promptSetName(path), path, hash: hashPrompts(prompts), prompts };
}

function isCsv(path: string): boolean {
  return /\.csv$/i.test(path);
}

function readCsvRows(path: string): Row[] {
  let records: { record: Record<string, unknown>; info: { lines: number } }[];
  try {
    records = parseCsv(readFileSync(path), {
      columns: true,
      bom: true,
      skip_empty_lines: true,
      info: true,
    });
  } catch (error) {
    if (error instanceof CsvError) {
      throw new MidpoError(`invalid CSV in ${path}: ${error.message}`);
    }
    throw error;
  }
  // `info.lines` is the line on which the record ends (a quoted field may span lines).
  return records.map(({ record, info }) => ({
    value: record,
    source: { file: path, line: info.lines },
  }));
}

async function readRecordRows(path: string): Promise<Row[]> {
  const rows: Row[] = [];
  for await (const item of readRecords(path)) {
    if (item.kind === "problem") {
      const { source, detail } = item.problem;
      throw new MidpoError(`failed to read prompt set ${formatLocation(source)}: ${detail}`);
    }
    const value = item.value;
    if (typeof value !== "object" || value === null || Array.isArray(value)) {
      throw new MidpoError(
        `${formatLocation(item.source)}: expected an object with a prompt column, ` +
          `got ${Array.isArray(value) ? "an array" : JSON.stringify(value)}`,
      );
    }
    rows.push({ value: value as Record<string, unknown>, source: item.source });
  }
  return rows;
}

function pickPromptColumn(first: Row): string {
  for (const column of ["prompt", "instruction"]) {
    if (column in first.value) return column;
  }
  throw new MidpoError(
    `${formatLocation(first.source)} has neither a "prompt" nor an "instruction" column ` +
      `(columns: ${Object.keys(first.value).join(", ")}); pass --prompt-column NAME`,
  );
}

function readPromptText(row: Row, column: string): string {
  const value = row.value[column];
  if (typeof value !== "string" || value.trim() === "") {
    throw new MidpoError(
      `${formatLocation(row.source)}: column "${column}" must be a non-empty string, ` +
        `got ${JSON.stringify(value)}`,
    );
  }
  return value;
}

function readLabel(row: Row): PromptLabel | null {
  const value = row.value.label;
  if (value === undefined || value === null || value === "") return null;
  const label = typeof value === "string" ? LABELS[value.trim().toLowerCase()] : undefined;
  if (label === undefined) {
    throw new MidpoError(
      `${formatLocation(row.source)}: label ${JSON.stringify(value)} is invalid; ` +
        `use "safe" or "unsafe" (also accepted: benign, harmless, harmful), or leave it empty`,
    );
  }
  return label;
}

function readCategory(row: Row): string | null {
  const value = row.value.category;
  if (typeof value === "string") return value.trim() === "" ? null : value;
  if (typeof value === "number" || typeof value === "boolean") return String(value);
  return null;
}

function hashPrompts(prompts: readonly EvalPrompt[]): string {
  const hash = createHash("sha256");
  for (const p of prompts) hash.update(JSON.stringify([p.text, p.label, p.category]));
  return hash.digest("hex");
}
