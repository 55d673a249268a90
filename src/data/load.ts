// Loading: files or dataset directories -> readers -> validation -> duplicate removal, with
// every rejected record counted in a ProblemLog and a summary logged at the end.

import { MidpoError } from "../errors.js";
import { log } from "../log.js";
import { resolveDataFiles } from "./dataset-dir.js";
import { isRecordProblem, ProblemLog, type ProblemSummary } from "./problems.js";
import {
  detectFormat,
  readRecords,
  type FileFormat,
  type RawRecord,
  type ReadItem,
} from "./read.js";
import {
  DEFAULT_FIELDS,
  detectSchema,
  duplicateKey,
  validateRecord,
  type FieldNames,
  type RecordSchema,
} from "./validate.js";
import {
  formatLocation,
  type DatasetRecord,
  type PairwiseRecord,
  type PkuRecord,
} from "./types.js";

export interface LoadOptions {
  /** Record schema; "auto" (the default) detects it per file from the first object record. */
  schema?: RecordSchema | "auto";
  /** Field names that differ from the defaults, e.g. `{ chosen: "response_chosen" }`. */
  fields?: Partial<FieldNames>;
  /** Split to read from dataset directories, e.g. "train" or "test". */
  split?: string;
  /** Container format for every file, overriding detection. */
  fileFormat?: FileFormat;
  /** Raise a MidpoError at the first problem instead of skipping and counting. Default false. */
  strict?: boolean;
  /** Problems of each reason whose location the summary keeps. Default 1000. */
  examplesPerReason?: number;
}

/**
 * Returns `options` without the settings left at their defaults. Run keys and stage hashes
 * hash load options, so this keeps the hashes of runs made before a setting existed.
 */
export function withoutDefaults(options: LoadOptions & { strict: boolean }): LoadOptions {
  const { strict, schema, fileFormat, split, fields } = options;
  return {
    strict,
    ...(schema !== undefined && schema !== "auto" ? { schema } : {}),
    ...(fileFormat !== undefined ? { fileFormat } : {}),
    ...(split !== undefined ? { split } : {}),
    ...(fields !== undefined && Object.keys(fields).length > 0 ? { fields } : {}),
  };
}

export interface FileLoadSummary {
  file: string;
  format: FileFormat;
  gzip: boolean;
  /** Undefined when the file had no object record to detect the schema from. */
  schema: RecordSchema | undefined;
  recordsRead: number;
  recordsKept: number;
}

/**
 * Outcome of a load. `recordsRead` counts every record or line that was read, parseable or
 * not, and equals `recordsKept` plus the record-level problem counts. Records lost to a
 * `bad_gzip` or `bad_parquet` problem were never read and are not in `recordsRead`.
 */
export interface LoadSummary {
  files: FileLoadSummary[];
  recordsRead: number;
  recordsKept: number;
  recordsDropped: number;
  problems: ProblemSummary;
}

export interface LoadedDataset {
  /** All valid records in file order. */
  records: DatasetRecord[];
  pku: PkuRecord[];
  pairwise: PairwiseRecord[];
  summary: LoadSummary;
}

/**
 * Loads and validates records from files and dataset directories, then logs and returns the
 * load summary.
 */
export async function loadDataset(
  paths: string | readonly string[],
  options: LoadOptions = {},
): Promise<LoadedDataset> {
  const problems = new ProblemLog(options.strict ?? false, options.examplesPerReason ?? 1000);
  const files: FileLoadSummary[] = [];
  const records: DatasetRecord[] = [];
  for await (const record of streamDataset(paths, options, problems, files)) {
    records.push(record);
  }

  const summary = summarize(files, problems);
  logLoadSummary(summary);
  return {
    records,
    pku: records.filter((record): record is PkuRecord => record.kind === "pku"),
    pairwise: records.filter((record): record is PairwiseRecord => record.kind === "pairwise"),
    summary,
  };
}

/**
 * Yields valid records one at a time. Problems go to `problems` and per-file counts to `files`
 * as reading proceeds. Duplicates are found across all files of the call, which keeps one
 * SHA-256 key per record in memory.
 */
export async function* streamDataset(
  paths: string | readonly string[],
  options: LoadOptions,
  problems: ProblemLog,
  files: FileLoadSummary[] = [],
): AsyncGenerator<DatasetRecord> {
  const fields = { ...DEFAULT_FIELDS, ...options.fields };
  const seen = new Map<string, string>();
  const inputs = await resolveDataFiles(typeof paths === "string" ? [paths] : paths, options.split);

  for (const file of inputs) {
    const detected = await detectFormat(file);
    const summary: FileLoadSummary = {
      file,
      format: options.fileFormat ?? detected.format,
      gzip: detected.gzip,
      schema: options.schema === "auto" ? undefined : options.schema,
      recordsRead: 0,
      recordsKept: 0,
    };
    files.push(summary);

    for await (const item of withSchema(readRecords(file, options.fileFormat), summary, fields)) {
      if (item.kind === "problem") {
        summary.recordsRead += isRecordProblem(item.problem.reason) ? 1 : 0;
        problems.add(item.problem);
        continue;
      }

      summary.recordsRead++;
      const result = validateRecord(item, summary.schema ?? "pku", fields);
      if (!result.ok) {
        problems.add(result.problem);
        continue;
      }

      const key = duplicateKey(result.record);
      const first = seen.get(key);
      if (first !== undefined) {
        problems.add({
          reason: "duplicate",
          source: item.source,
          detail: `same prompt and responses as the record at ${first}`,
        });
        continue;
      }
      seen.set(key, formatLocation(item.source));

      summary.recordsKept++;
      yield result.record;
    }
  }
}

/**
 * Passes items through, first setting `summary.schema` from the first object record when the
 * schema is "auto". Items before that record are held back until it is found.
 */
async function* withSchema(
  items: AsyncGenerator<ReadItem>,
  summary: FileLoadSummary,
  fields: FieldNames,
): AsyncGenerator<ReadItem> {
  if (summary.schema !== undefined) {
    yield* items;
    return;
  }

  const beforeSchema: ReadItem[] = [];
  for await (const item of items) {
    if (summary.schema === undefined) {
      beforeSchema.push(item);
      if (!isObjectRecord(item)) {
        continue;
      }
      summary.schema = schemaOf(item, summary.file, fields);
      yield* beforeSchema;
      beforeSchema.length = 0;
      continue;
    }
    yield item;
  }
  yield* beforeSchema;
}

function isObjectRecord(item: ReadItem): item is RawRecord & { value: Record<string, unknown> } {
  return (
    item.kind === "record" &&
    typeof item.value === "object" &&
    item.value !== null &&
    !Array.isArray(item.value)
  );
}

function schemaOf(
  item: RawRecord & { value: Record<string, unknown> },
  file: string,
  fields: FieldNames,
): RecordSchema {
  const schema = detectSchema(item.value, fields);
  if (schema === undefined) {
    throw new MidpoError(
      `Cannot tell the schema of ${file}: its first record has the fields ` +
        `${Object.keys(item.value).join(", ")}. Expected PKU-SafeRLHF fields (prompt, response_0, ` +
        `response_1, ...), pairwise fields (prompt, chosen, rejected) or hh-rlhf fields ` +
        `(chosen, rejected). Pass the schema and the field names that map onto them.`,
    );
  }
  log.debug({ file, schema }, "detected record schema");
  return schema;
}

function summarize(files: FileLoadSummary[], problems: ProblemLog): LoadSummary {
  const recordsRead = files.reduce((total, file) => total + file.recordsRead, 0);
  const recordsKept = files.reduce((total, file) => total + file.recordsKept, 0);
  return {
    files,
    recordsRead,
    recordsKept,
    recordsDropped: recordsRead - recordsKept,
    problems: problems.summary(),
  };
}

/** Problems of each reason that logLoadSummary logs one by one. */
const LOGGED_PER_REASON = 3;

/**
 * Logs the totals at info level, and at warn level the first problems of each reason and
 * a load that kept no record.
 */
export function logLoadSummary(summary: LoadSummary): void {
  log.info(
    {
      files: summary.files.length,
      recordsRead: summary.recordsRead,
      recordsKept: summary.recordsKept,
      recordsDropped: summary.recordsDropped,
      problems: summary.problems.counts,
    },
    "loaded dataset",
  );
  const logged = new Map<string, number>();
  for (const example of summary.problems.examples) {
    const count = (logged.get(example.reason) ?? 0) + 1;
    logged.set(example.reason, count);
    if (count <= LOGGED_PER_REASON) {
      log.warn({ ...example.source, reason: example.reason }, example.detail);
    }
  }
  if (summary.recordsKept === 0) {
    log.warn(
      { recordsRead: summary.recordsRead },
      "no record was kept: check the files, --format and the --field mappings",
    );
  }
}
