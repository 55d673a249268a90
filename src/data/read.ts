// Readers for JSONL, JSON arrays and Parquet files, each optionally gzip-compressed. A reader
// yields raw JSON values with their location, and the read problems it meets (unparseable
// lines, corrupt gzip or Parquet data) as items of the same stream, so the caller decides
// whether a problem is fatal. Validation against a schema happens later, in validate.ts.

import { createReadStream } from "node:fs";
import { open, readFile } from "node:fs/promises";
import { basename } from "node:path";
import { constants as zlibConstants, createGunzip, gunzipSync } from "node:zlib";
import { MidpoError } from "../errors.js";
import { containsString, decodeUtf8, readProblem, type ReadItem } from "./read-common.js";
import { readParquetFile } from "./read-parquet.js";

export type { RawRecord, ReadItem, ReadProblem } from "./read-common.js";

export type FileFormat = "jsonl" | "json" | "parquet";

export const FILE_FORMATS: readonly FileFormat[] = ["jsonl", "json", "parquet"];

export interface DetectedFormat {
  format: FileFormat;
  gzip: boolean;
}

const GZIP_MAGIC = [0x1f, 0x8b];
const PARQUET_MAGIC = "PAR1";
const SNIFF_BYTES = 64 * 1024;

/**
 * Detects the container of `path`. Gzip is recognised by its magic bytes, so a `.gz` name is
 * not needed. The format comes from the extension after any `.gz` (`.jsonl`, `.ndjson`,
 * `.json`, `.parquet`), and otherwise from the content: `PAR1` for Parquet, a first `[` for a
 * JSON array, a first `{` for JSONL. A `.json` file that starts with `{` is read as JSONL,
 * because many datasets name JSONL files `.json`.
 */
export async function detectFormat(path: string): Promise<DetectedFormat> {
  const head = await readHead(path);
  const gzip = startsWithGzipMagic(head);
  const name = basename(path).toLowerCase().replace(/\.gz$/, "");

  if (name.endsWith(".parquet")) {
    return { format: "parquet", gzip };
  }
  if (name.endsWith(".jsonl") || name.endsWith(".ndjson")) {
    return { format: "jsonl", gzip };
  }

  const content = gzip ? gunzipHead(head) : head;
  if (content.subarray(0, 4).toString("latin1") === PARQUET_MAGIC) {
    return { format: "parquet", gzip };
  }
  const first = content.toString("utf8").trimStart()[0];
  if (first === "[") {
    return { format: "json", gzip };
  }
  if (first === "{" || name.endsWith(".json")) {
    return { format: "jsonl", gzip };
  }
  throw new MidpoError(
    `Cannot tell the format of ${path}: it is not Parquet and does not start with "[" or "{". ` +
      `Use a .jsonl, .json or .parquet file (optionally gzip-compressed).`,
  );
}

/**
 * Yields the records of one file. `format` overrides detection of the JSONL/JSON/Parquet
 * container. A file named `.gz` that is not gzip data yields one `bad_gzip` problem.
 */
export async function* readRecords(path: string, format?: FileFormat): AsyncGenerator<ReadItem> {
  const detected = await detectFormat(path);
  const gzip = detected.gzip;
  if (path.toLowerCase().endsWith(".gz") && !gzip) {
    yield readProblem("bad_gzip", { file: path }, "the file is named .gz but is not gzip data");
    return;
  }

  switch (format ?? detected.format) {
    case "jsonl":
      yield* readJsonlFile(path, gzip);
      break;
    case "json":
      yield* readJsonArrayFile(path, gzip);
      break;
    case "parquet":
      yield* readParquetFile(path, gzip);
      break;
  }
}

/** Returns whether `path` starts with the gzip magic bytes. */
export async function isGzipFile(path: string): Promise<boolean> {
  return startsWithGzipMagic(await readHead(path));
}

function startsWithGzipMagic(head: Buffer): boolean {
  return head[0] === GZIP_MAGIC[0] && head[1] === GZIP_MAGIC[1];
}

async function readHead(path: string): Promise<Buffer> {
  let handle;
  try {
    handle = await open(path, "r");
  } catch (error) {
    throw new MidpoError(`Cannot open data file ${path}: ${(error as Error).message}`);
  }
  try {
    const buffer = Buffer.alloc(SNIFF_BYTES);
    const { bytesRead } = await handle.read(buffer, 0, SNIFF_BYTES, 0);
    return buffer.subarray(0, bytesRead);
  } finally {
    await handle.close();
  }
}

/** Decompresses what it can of a gzip prefix; the partial stream would make gunzipSync throw. */
function gunzipHead(head: Buffer): Buffer {
  try {
    return gunzipSync(head, { finishFlush: zlibConstants.Z_SYNC_FLUSH });
  } catch {
    return Buffer.alloc(0);
  }
}

/**
 * Streams a JSONL file line by line. Lines are split on raw bytes and each is decoded on its
 * own, so invalid UTF-8 is pinned to its line. A line ends at \n, \r\n or a lone \r, as in
 * Node's readline. Blank lines are skipped but still counted.
 */
export async function* readJsonlFile(path: string, gzip: boolean): AsyncGenerator<ReadItem> {
  const input = createReadStream(path);
  const stream = gzip ? input.pipe(createGunzip()) : input;
  if (gzip) {
    // pipe() does not forward errors, and an unhandled one on the file stream would crash.
    input.on("error", (error) => stream.destroy(error));
  }

  let pending: Buffer[] = [];
  let line = 0;
  let afterCr = false;
  try {
    for await (const chunk of stream as AsyncIterable<Buffer>) {
      let start = 0;
      for (let i = 0; i < chunk.length; i++) {
        const byte = chunk[i];
        if (byte !== 0x0a && byte !== 0x0d) {
          afterCr = false;
          continue;
        }
        // The \n of a \r\n pair ends no second line.
        const endsLine = byte === 0x0d || !afterCr;
        afterCr = byte === 0x0d;
        if (!endsLine) {
          start = i + 1;
          continue;
        }
        pending.push(chunk.subarray(start, i));
        line++;
        const item = parseJsonlLine(Buffer.concat(pending), path, line);
        pending = [];
        if (item !== undefined) {
          yield item;
        }
        start = i + 1;
      }
      if (start < chunk.length) {
        pending.push(chunk.subarray(start));
      }
    }
  } catch (error) {
    if (!gzip || (error as NodeJS.ErrnoException).code?.startsWith("Z_") !== true) {
      throw error;
    }
    // NOTE: gzip checks its CRC only at the end of the stream, so lines yielded before a
    // checksum error may already contain corrupted bytes.
    yield readProblem(
      "bad_gzip",
      { file: path, line: line + 1 },
      `gzip decompression failed (${(error as Error).message}); ` +
        `lines from ${line + 1} on are lost`,
    );
    return;
  }

  if (pending.length > 0) {
    line++;
    const item = parseJsonlLine(Buffer.concat(pending), path, line);
    if (item !== undefined) {
      yield item;
    }
  }
}

function parseJsonlLine(bytes: Buffer, path: string, line: number): ReadItem | undefined {
  const { text: decoded, invalid } = decodeUtf8(bytes);
  let text = line === 1 ? decoded.replace(/^\uFEFF/, "") : decoded;
  text = text.endsWith("\r") ? text.slice(0, -1) : text;
  if (text.trim() === "") {
    return undefined;
  }

  const source = { file: path, line };
  try {
    return { kind: "record", value: JSON.parse(text), source, invalidUtf8: invalid };
  } catch (error) {
    return readProblem("unparseable_line", source, `invalid JSON: ${(error as Error).message}`);
  }
}

/**
 * Reads a file that contains one JSON array of records. The whole file is parsed at once, because
 * JSON.parse has no streaming mode. Invalid UTF-8 can only be detected for the file as a whole,
 * so then every record that contains U+FFFD is flagged.
 */
async function* readJsonArrayFile(path: string, gzip: boolean): AsyncGenerator<ReadItem> {
  let bytes: Buffer = await readFile(path);
  if (gzip) {
    try {
      bytes = gunzipSync(bytes);
    } catch (error) {
      yield readProblem(
        "bad_gzip",
        { file: path },
        `gzip decompression failed (${(error as Error).message}); the whole file is lost`,
      );
      return;
    }
  }

  const { text, invalid } = decodeUtf8(bytes);
  let parsed: unknown;
  try {
    parsed = JSON.parse(text.replace(/^\uFEFF/, ""));
  } catch (error) {
    yield readProblem(
      "unparseable_line",
      { file: path },
      `invalid JSON: ${(error as Error).message}; the whole file is lost`,
    );
    return;
  }

  if (!Array.isArray(parsed)) {
    yield readProblem(
      "wrong_type",
      { file: path },
      `the file holds a JSON ${typeof parsed}, expected an array of records`,
    );
    return;
  }

  for (const [row, value] of parsed.entries()) {
    const invalidUtf8 = invalid && containsString(value, (s) => s.includes("\uFFFD"));
    yield { kind: "record", value, source: { file: path, row }, invalidUtf8 };
  }
}
