// Hugging Face dataset directories: a downloaded dataset repository stores its data as Parquet,
// JSONL or JSON files, e.g. `data/train-00000-of-00001.parquet`, `data/Alpaca-7B/test.jsonl`,
// or `default/train/0000.parquet`. The split of a file comes from its path.

import { readdir, stat } from "node:fs/promises";
import { join, relative, sep } from "node:path";
import { MidpoError } from "../errors.js";
import { log } from "../log.js";

/** Split names recognised when listing a directory; `--split` may name any other. */
const KNOWN_SPLITS = ["train", "test", "validation", "valid", "dev", "eval"];

const DATA_FILE = /\.(parquet|jsonl|ndjson|json)(\.gz)?$/i;

/** JSON files of the `datasets` library that describe a dataset rather than hold records. */
const METADATA_FILES = new Set(["dataset_info.json", "dataset_infos.json", "state.json"]);

/**
 * Expands each input path: a file stays as it is, and a directory becomes its data files of one
 * split, sorted by path. Without `split`, a directory with a single split, or with a `train`
 * split, uses that one, and any other directory raises a MidpoError listing its splits.
 */
export async function resolveDataFiles(
  paths: readonly string[],
  split?: string,
): Promise<string[]> {
  const files: string[] = [];
  for (const path of paths) {
    const kind = await pathKind(path);
    if (kind === "file") {
      if (split !== undefined) {
        log.warn({ file: path, split }, "the split option applies to directories; using the file");
      }
      files.push(path);
      continue;
    }

    const found = await splitFiles(path, split);
    log.info({ dir: path, split: found.split, files: found.files.length }, "dataset directory");
    files.push(...found.files);
  }
  return files;
}

async function isDirectory(path: string): Promise<boolean> {
  try {
    return (await stat(path)).isDirectory();
  } catch {
    return false;
  }
}

async function pathKind(path: string): Promise<"file" | "directory"> {
  let info;
  try {
    info = await stat(path);
  } catch {
    throw new MidpoError(
      `Data path ${path} does not exist. Pass a data file or a dataset directory.`,
    );
  }
  return info.isDirectory() ? "directory" : "file";
}

async function splitFiles(
  dir: string,
  split: string | undefined,
): Promise<{ split: string; files: string[] }> {
  // As on the Hugging Face hub, a `data` folder, when present, contains all the data files.
  const dataDir = join(dir, "data");
  const root = (await isDirectory(dataDir)) ? dataDir : dir;
  const all = (await listDataFiles(root)).sort();
  if (all.length === 0) {
    throw new MidpoError(
      `Dataset directory ${dir} has no .parquet, .jsonl or .json files (optionally .gz).`,
    );
  }

  const available = KNOWN_SPLITS.filter((name) =>
    all.some((file) => fileSplitIs(root, file, name)),
  );
  let chosen = split;
  if (chosen === undefined) {
    if (available.length === 1) {
      chosen = available[0];
    } else if (available.includes("train")) {
      chosen = "train";
    } else if (available.length === 0) {
      return { split: "(all files)", files: all };
    } else {
      throw new MidpoError(
        `Dataset directory ${dir} has the splits ${available.join(", ")}. Choose one with --split.`,
      );
    }
  }

  const splitName = chosen;
  const files = all.filter((file) => fileSplitIs(root, file, splitName));
  if (files.length === 0) {
    const list = available.length > 0 ? available.join(", ") : "none recognised";
    throw new MidpoError(
      `Dataset directory ${dir} has no files of split "${splitName}" (splits found: ${list}).`,
    );
  }
  return { split: splitName, files };
}

/**
 * Returns whether `file` belongs to `split`: a folder on its path inside `root` is named after the split,
 * or its file name starts with the split followed by `-`, `_` or `.` (as in `test.jsonl` and
 * `train-00000-of-00001.parquet`).
 */
function fileSplitIs(root: string, file: string, split: string): boolean {
  const parts = relative(root, file).toLowerCase().split(sep);
  const name = parts.pop() ?? "";
  const requested = split.toLowerCase();
  if (parts.includes(requested)) {
    return true;
  }
  return name.startsWith(requested) && /^[-_.]/.test(name.slice(requested.length));
}

/** Lists data files under `dir`, skipping hidden folders such as `.git` and `.cache`. */
async function listDataFiles(dir: string): Promise<string[]> {
  const files: string[] = [];
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    if (entry.name.startsWith(".")) {
      continue;
    }
    const path = join(dir, entry.name);
    if (entry.isDirectory()) {
      files.push(...(await listDataFiles(path)));
    } else if (entry.isFile() && DATA_FILE.test(entry.name) && !METADATA_FILES.has(entry.name)) {
      files.push(path);
    }
  }
  return files;
}
