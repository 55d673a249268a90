// Atomic output of a build. Every file is first written under a temporary name in the output
// directory, then all are renamed into place, the last file (the summary) after the others, so a
// reader that finds the summary never sees a half-written build.

import { randomBytes } from "node:crypto";
import { accessSync, constants, createWriteStream, existsSync, statSync } from "node:fs";
import { mkdir, readdir, rename, rm } from "node:fs/promises";
import { dirname, join, resolve } from "node:path";
import { MidpoError } from "../errors.js";
import { isRunning } from "../process.js";
import { once } from "node:events";
import type { PreferencePair } from "./types.js";

export interface OutputFile {
  name: string;
  /** JSONL content: one JSON value per line. */
  lines?: Iterable<unknown>;
  /** JSON content, pretty-printed. */
  json?: unknown;
}

/**
 * Checks, before any work, that `dir` is a directory or can be created as one: an existing
 * path must be a writable directory, and otherwise its nearest existing parent must be.
 */
export function checkOutputDir(dir: string, flag: string): void {
  let path = resolve(dir);
  while (!existsSync(path)) path = dirname(path);
  if (!statSync(path).isDirectory()) {
    throw new MidpoError(`${flag} ${dir}: ${path} is a file, not a directory; pass another path`);
  }
  try {
    accessSync(path, constants.W_OK);
  } catch {
    throw new MidpoError(`${flag} ${dir}: cannot write in ${path}; pass a writable directory`);
  }
}

/**
 * Writes `files` into `dir` (created if missing). The last file marks a complete output: it is
 * removed before the others are renamed into place and renamed last itself, so when it exists
 * the files beside it belong to the same run. On failure the temporary files are removed and
 * files from an earlier run stay as they were, except the removed marker.
 */
export async function writeOutputsAtomically(
  dir: string,
  files: readonly OutputFile[],
): Promise<void> {
  await mkdir(dir, { recursive: true });
  await removeStaleTemporaries(dir, files);
  const suffix = `.tmp-${process.pid}-${randomBytes(4).toString("hex")}`;
  const temporary = files.map((file) => join(dir, `.${file.name}${suffix}`));

  try {
    for (const [i, file] of files.entries()) {
      await writeFileContent(temporary[i], file);
    }

    const marker = files.length - 1;
    await rm(join(dir, files[marker].name), { force: true });
    for (const [i, file] of files.entries()) {
      await rename(temporary[i], join(dir, file.name));
    }
  } catch (error) {
    await Promise.all(temporary.map((path) => rm(path, { force: true })));
    throw error;
  }
}

/**
 * Removes temporary files that an interrupted run left in `dir` for the same output names.
 * Files of a process that is still running are kept: it may be writing them now.
 */
async function removeStaleTemporaries(dir: string, files: readonly OutputFile[]): Promise<void> {
  const names = new Set(files.map((file) => file.name));
  for (const entry of await readdir(dir)) {
    const match = /^\.(.+)\.tmp-(\d+)-[0-9a-f]{8}$/.exec(entry);
    if (match === null || !names.has(match[1]) || isRunning(Number(match[2]))) continue;
    await rm(join(dir, entry), { force: true });
  }
}

async function writeFileContent(path: string, file: OutputFile): Promise<void> {
  const stream = createWriteStream(path, { encoding: "utf8" });
  const closed = once(stream, "close");
  // Marks the rejection as handled until it is awaited below, so an early write error does not
  // surface as an unhandled rejection.
  closed.catch(() => undefined);
  try {
    if (file.json !== undefined) {
      stream.write(`${JSON.stringify(file.json, null, 2)}\n`);
    }
    for (const value of file.lines ?? []) {
      if (!stream.write(`${JSON.stringify(value)}\n`)) {
        await once(stream, "drain");
      }
    }
  } finally {
    stream.end();
  }
  await closed;
}

/** Converts a pair to its JSONL form in `data build` output. */
export function pairToJson(pair: PreferencePair): Record<string, unknown> {
  return {
    prompt: pair.prompt,
    chosen: pair.chosen,
    rejected: pair.rejected,
    id: pair.id,
    source: pair.source,
    ...(pair.margin === undefined ? {} : { margin: pair.margin }),
    ...(pair.meta === undefined ? {} : { meta: pair.meta }),
  };
}
