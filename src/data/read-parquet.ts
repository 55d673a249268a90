// Parquet reading with hyparquet, one row group at a time, so memory contains one row group of
// decoded rows (plus, for a gzip-compressed file, the decompressed file). hyparquet-compressors
// adds the codecs that Hugging Face Parquet files may use besides Snappy (zstd, gzip, brotli,
// lz4).

import { readFile } from "node:fs/promises";
import { gunzipSync } from "node:zlib";
import {
  asyncBufferFromFile,
  parquetMetadataAsync,
  parquetReadObjects,
  type AsyncBuffer,
  type FileMetaData,
  type ParquetParsers,
} from "hyparquet";
import { compressors } from "hyparquet-compressors";
import { containsString, decodeUtf8, readProblem, type ReadItem } from "./read-common.js";

/**
 * Yields each row of a Parquet file as an object with `row` = its 0-based index in the file.
 * A file whose footer cannot be read yields one `bad_parquet` problem. A row group that fails to
 * decode yields one `bad_parquet` problem naming its rows, and reading goes on with the next.
 */
export async function* readParquetFile(path: string, gzip: boolean): AsyncGenerator<ReadItem> {
  let file: AsyncBuffer;
  if (gzip) {
    try {
      file = bufferOf(gunzipSync(await readFile(path)));
    } catch (error) {
      const detail = `gzip decompression failed (${(error as Error).message})`;
      yield readProblem("bad_gzip", { file: path }, `${detail}; the whole file is lost`);
      return;
    }
  } else {
    file = await asyncBufferFromFile(path);
  }

  // Strings whose bytes were not valid UTF-8. Rows keep only the decoded text, so the reader
  // remembers which decoded strings came from invalid bytes.
  const invalidStrings = new Set<string>();
  const parsers: Partial<ParquetParsers> = {
    stringFromBytes(bytes: Uint8Array | undefined) {
      if (bytes === undefined) {
        return bytes;
      }
      const { text, invalid } = decodeUtf8(bytes);
      if (invalid) {
        invalidStrings.add(text);
      }
      return text;
    },
  };

  let metadata: FileMetaData;
  try {
    metadata = await parquetMetadataAsync(file, { parsers });
  } catch (error) {
    const detail = `cannot read the Parquet footer (${(error as Error).message})`;
    yield readProblem("bad_parquet", { file: path }, `${detail}; the whole file is lost`);
    return;
  }

  let rowStart = 0;
  for (const group of metadata.row_groups) {
    const rowEnd = rowStart + Number(group.num_rows);
    let rows: Record<string, unknown>[];
    try {
      rows = await parquetReadObjects({
        file,
        metadata,
        rowStart,
        rowEnd,
        compressors,
        parsers,
      });
    } catch (error) {
      yield readProblem(
        "bad_parquet",
        { file: path, row: rowStart },
        `cannot decode the row group of rows ${rowStart}..${rowEnd - 1} ` +
          `(${(error as Error).message}); its ${rowEnd - rowStart} rows are lost`,
      );
      rowStart = rowEnd;
      continue;
    }

    for (const [offset, row] of rows.entries()) {
      const value = numbersFromBigInts(row);
      const invalidUtf8 =
        invalidStrings.size > 0 && containsString(value, (s) => invalidStrings.has(s));
      yield { kind: "record", value, source: { file: path, row: rowStart + offset }, invalidUtf8 };
    }
    rowStart = rowEnd;
  }
}

function bufferOf(bytes: Buffer): AsyncBuffer {
  return {
    byteLength: bytes.byteLength,
    slice: (start, end) => {
      const part = bytes.subarray(start, end);
      return part.buffer.slice(part.byteOffset, part.byteOffset + part.byteLength) as ArrayBuffer;
    },
  };
}

/**
 * Converts INT64 values, which hyparquet returns as bigint, to numbers when they are safe
 * integers, so that label columns such as `better_response_id` validate like JSON numbers.
 */
function numbersFromBigInts(value: unknown): unknown {
  if (typeof value === "bigint") {
    const n = Number(value);
    return Number.isSafeInteger(n) ? n : value;
  }
  if (Array.isArray(value)) {
    return value.map(numbersFromBigInts);
  }
  if (typeof value === "object" && value !== null && !(value instanceof Date)) {
    const out: Record<string, unknown> = {};
    for (const [key, item] of Object.entries(value)) {
      out[key] = numbersFromBigInts(item);
    }
    return out;
  }
  return value;
}
