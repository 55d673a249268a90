// Line-by-line JSONL reading with errors that name the file and line.

import { createReadStream, existsSync, statSync } from "node:fs";
import { createInterface } from "node:readline";
import { MidpoError } from "../errors.js";

export interface JsonlRecord {
  /** 1-based line number in the file. */
  line: number;
  value: unknown;
}

/** Yields each non-empty line of a JSONL file parsed as JSON. */
export async function* readJsonl(path: string): AsyncGenerator<JsonlRecord> {
  if (!existsSync(path) || !statSync(path).isFile()) {
    throw new MidpoError(`input file ${path} does not exist or is not a file`);
  }
  const lines = createInterface({ input: createReadStream(path, "utf8"), crlfDelay: Infinity });
  let line = 0;
  for await (const raw of lines) {
    line++;
    // A byte-order mark before the first line is not part of the JSON.
    const text = line === 1 ? raw.replace(/^\uFEFF/, "") : raw;
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
