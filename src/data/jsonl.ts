// Line-by-line JSONL reading for the commands that take one input file (`midpo score`,
// `midpo logprobs`). It reads files as the dataset readers do, gzip included, but turns every
// problem into an error that names the file and line.

import { existsSync, statSync } from "node:fs";
import { MidpoError } from "../errors.js";
import { isGzipFile, readJsonlFile } from "./read.js";
import { formatLocation } from "./types.js";

export interface JsonlRecord {
  /** 1-based line number in the file. */
  line: number;
  value: unknown;
}

/** Yields each non-empty line of a JSONL file (gzip-compressed or not) parsed as JSON. */
export async function* readJsonl(path: string): AsyncGenerator<JsonlRecord> {
  if (!existsSync(path) || !statSync(path).isFile()) {
    throw new MidpoError(`input file ${path} does not exist or is not a file`);
  }
  for await (const item of readJsonlFile(path, await isGzipFile(path))) {
    if (item.kind === "problem") {
      const { reason, source, detail } = item.problem;
      if (reason === "bad_gzip") {
        throw new MidpoError(`${path}: cannot decompress the gzip data (${detail})`);
      }
      throw new MidpoError(
        `${formatLocation(source)}: ${detail}; each line must be one JSON object`,
      );
    }
    if (item.invalidUtf8) {
      throw new MidpoError(
        `${formatLocation(item.source)} contains bytes that are not valid UTF-8; fix the file`,
      );
    }
    yield { line: item.source.line ?? 0, value: item.value };
  }
}
