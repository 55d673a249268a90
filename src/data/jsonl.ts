// Line-by-line JSONL reading with errors that name the file and line. Gzip files are read
// through gunzip, and a line with bytes that are not valid UTF-8 is an error.

import { createReadStream, existsSync, openSync, readSync, closeSync, statSync } from "node:fs";
import { createGunzip } from "node:zlib";
import { MidpoError } from "../errors.js";

export interface JsonlRecord {
  /** 1-based line number in the file. */
  line: number;
  value: unknown;
}

const utf8 = new TextDecoder("utf-8", { fatal: true });

/** Yields each non-empty line of a JSONL file (gzip-compressed or not) parsed as JSON. */
export async function* readJsonl(path: string): AsyncGenerator<JsonlRecord> {
  if (!existsSync(path) || !statSync(path).isFile()) {
    throw new MidpoError(`input file ${path} does not exist or is not a file`);
  }
  let line = 0;
  for await (const bytes of byteLines(path)) {
    line++;
    let text: string;
    try {
      text = utf8.decode(bytes);
    } catch {
      throw new MidpoError(`${path}:${line} contains bytes that are not valid UTF-8; fix the file`);
    }
    // A byte-order mark before the first line is not part of the JSON.
    if (line === 1) text = text.replace(/^\uFEFF/, "");
    if (text.trim() === "") continue;
    let value: unknown;
    try {
      value = JSON.parse(text);
    } catch (error) {
      throw new MidpoError(
        `${path}:${line} is not valid JSON (${(error as Error).message}); ` +
          `each line must be one JSON object`,
      );
    }
    yield { line, value };
  }
}

/**
 * Yields the lines of a file as bytes. Lines end at \n, \r\n or a lone \r, as for Node's
 * readline.
 */
async function* byteLines(path: string): AsyncGenerator<Buffer> {
  const gzip = isGzip(path);
  const raw = createReadStream(path);
  const input = gzip ? raw.pipe(createGunzip()) : raw;
  let pending: Buffer[] = [];
  let afterCr = false;
  const take = (tail: Buffer): Buffer => {
    const bytes = pending.length === 0 ? tail : Buffer.concat([...pending, tail]);
    pending = [];
    return bytes;
  };
  try {
    for await (const chunk of input as AsyncIterable<Buffer>) {
      let start = 0;
      for (let i = 0; i < chunk.length; i++) {
        const byte = chunk[i];
        if (byte !== 0x0a && byte !== 0x0d) {
          afterCr = false;
          continue;
        }
        // The \n of a \r\n pair ends no second line.
        if (!(byte === 0x0a && afterCr)) yield take(chunk.subarray(start, i));
        afterCr = byte === 0x0d;
        start = i + 1;
      }
      if (start < chunk.length) pending.push(chunk.subarray(start));
    }
  } catch (error) {
    const what = gzip ? "decompress the gzip data" : "read the file";
    throw new MidpoError(`${path}: cannot ${what} (${(error as Error).message})`);
  }
  if (pending.length > 0) yield take(Buffer.alloc(0));
}

function isGzip(path: string): boolean {
  const fd = openSync(path, "r");
  try {
    const head = Buffer.alloc(2);
    return readSync(fd, head, 0, 2, 0) === 2 && head[0] === 0x1f && head[1] === 0x8b;
  } finally {
    closeSync(fd);
  }
}
