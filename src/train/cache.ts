// A disk cache for numbers computed once per dataset by a frozen model: the reference model's
// sequence log-probs for DPO, and later score-model end scores. An entry is keyed by the
// SHA-256 of everything its values depend on (the model's content hash, the exact token ids,
// which already reflect the tokenizer, the prompt template and the data), so a change to any
// of them misses the cache instead of reusing stale numbers.

import { createHash } from "node:crypto";
import {
  closeSync,
  existsSync,
  mkdirSync,
  openSync,
  readFileSync,
  readSync,
  readdirSync,
  renameSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { homedir } from "node:os";
import { join } from "node:path";
import { MidpoError } from "../errors.js";

/** `$MIDPO_CACHE`, else `$XDG_CACHE_HOME/midpo`, else `~/.cache/midpo`. */
export function defaultCacheDir(): string {
  if (process.env.MIDPO_CACHE) return process.env.MIDPO_CACHE;
  const xdg = process.env.XDG_CACHE_HOME;
  return join(xdg && xdg !== "" ? xdg : join(homedir(), ".cache"), "midpo");
}

/** Creates a directory inside the cache, or throws an error naming the cache when that fails. */
function makeCacheDir(path: string, cacheDir: string): void {
  try {
    mkdirSync(path, { recursive: true });
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code ?? (error as Error).message;
    throw new MidpoError(
      `cannot write to the cache directory ${cacheDir} (${code}); pass a writable ` +
        `--cache-dir or set MIDPO_CACHE`,
    );
  }
}

function writeAtomic(path: string, data: string | Uint8Array): void {
  const tmp = `${path}.${process.pid}.tmp`;
  writeFileSync(tmp, data);
  renameSync(tmp, path);
}

const HASH_CHUNK = 1 << 24;

function hashFile(path: string, hash: ReturnType<typeof createHash>): void {
  const fd = openSync(path, "r");
  try {
    const buffer = Buffer.allocUnsafe(HASH_CHUNK);
    let read: number;
    while ((read = readSync(fd, buffer, 0, HASH_CHUNK, null)) > 0)
      hash.update(buffer.subarray(0, read));
  } finally {
    closeSync(fd);
  }
}

/**
 * SHA-256 over a model directory's config.json and weight files (*.safetensors, index).
 * Hashing a 500 MB model takes about a second, so results are memoised in the cache
 * directory by path, size and modification time.
 */
export function modelContentHash(dir: string, cacheDir = defaultCacheDir()): string {
  const files = readdirSync(dir)
    .filter(
      (f) =>
        f === "config.json" || f.endsWith(".safetensors") || f.endsWith(".safetensors.index.json"),
    )
    .sort();
  if (files.length === 0)
    throw new MidpoError(`${dir} contains no config.json or safetensors files`);
  // A copy made with `cp -p` or `rsync -a` keeps size and mtime. The inode and the change
  // time, which a copy cannot set, are therefore part of the stamp.
  const stamps = files.map((f) => {
    const s = statSync(join(dir, f));
    return `${f}:${s.dev}:${s.ino}:${s.size}:${s.mtimeMs}:${s.ctimeMs}`;
  });
  const memoKey = createHash("sha256").update(dir).update(stamps.join("|")).digest("hex");
  const memoPath = join(cacheDir, "model-hashes", `${memoKey}.txt`);
  if (existsSync(memoPath)) return readFileSync(memoPath, "utf8").trim();

  const hash = createHash("sha256");
  for (const f of files) {
    hash.update(`${f}\0`);
    hashFile(join(dir, f), hash);
  }
  const digest = hash.digest("hex");
  makeCacheDir(join(cacheDir, "model-hashes"), cacheDir);
  writeAtomic(memoPath, digest);
  return digest;
}

/** SHA-256 of a JSON-serialisable key (object keys in insertion order). */
export function hashKey(key: unknown): string {
  return createHash("sha256").update(JSON.stringify(key)).digest("hex");
}

/**
 * Returns the sha256 of each file's bytes, or of a directory's file names and contents. A
 * missing path raises a MidpoError that calls it a `label`.
 */
export function contentHashes(paths: readonly string[], label = "input"): string[] {
  return paths.map((path) => {
    if (!existsSync(path)) throw new MidpoError(`${label} ${path} does not exist`);
    const hash = createHash("sha256");
    if (statSync(path).isDirectory()) {
      for (const name of readdirSync(path).sort())
        hash.update(name).update(contentHashes([join(path, name)], label)[0]);
    } else {
      // In chunks, because readFileSync rejects files over 2 GiB.
      hashFile(path, hash);
    }
    return hash.digest("hex");
  });
}

export interface CacheEntryMeta {
  kind: string;
  key: string;
  count: number;
  /** Free-form description of what the key covers, for people reading the cache. */
  description: Record<string, unknown>;
}

/** Float64 vectors stored under a key, one file of raw values plus a JSON description. */
export class ValueCache {
  constructor(readonly dir = defaultCacheDir()) {}

  private paths(kind: string, key: string): { values: string; meta: string } {
    const base = join(this.dir, kind, key);
    return { values: `${base}.f64`, meta: `${base}.json` };
  }

  get(kind: string, key: string, expectedCount: number): Float64Array | undefined {
    const p = this.paths(kind, key);
    if (!existsSync(p.values) || !existsSync(p.meta)) return undefined;
    const bytes = readFileSync(p.values);
    if (bytes.length !== expectedCount * 8) return undefined;
    const values = new Float64Array(
      bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.length),
    );
    // A damaged entry is computed again: stored values are always finite.
    return values.every(Number.isFinite) ? values : undefined;
  }

  put(kind: string, key: string, values: Float64Array, description: Record<string, unknown>): void {
    const p = this.paths(kind, key);
    makeCacheDir(join(this.dir, kind), this.dir);
    // Values first, then the description: an entry counts as present only when both exist.
    writeAtomic(p.values, new Uint8Array(values.buffer, values.byteOffset, values.byteLength));
    const meta: CacheEntryMeta = { kind, key, count: values.length, description };
    writeAtomic(p.meta, JSON.stringify(meta, null, 2));
  }

  /** Returns cached values, or computes, stores and returns them. */
  async getOrCompute(
    kind: string,
    key: string,
    count: number,
    description: Record<string, unknown>,
    compute: () => Promise<Float64Array>,
  ): Promise<{ values: Float64Array; hit: boolean }> {
    const cached = this.get(kind, key, count);
    if (cached !== undefined) return { values: cached, hit: true };
    const values = await compute();
    if (values.length !== count) {
      throw new Error(`cache ${kind}: computed ${values.length} values, expected ${count}`);
    }
    const bad = values.findIndex((v) => !Number.isFinite(v));
    if (bad >= 0) {
      throw new MidpoError(
        `${kind}: value ${bad + 1} of ${count} is ${values[bad]} ` +
          `(${JSON.stringify(description)}); nothing was cached. Check the model's weights ` +
          `for NaN or infinite values`,
      );
    }
    this.put(kind, key, values, description);
    return { values, hit: false };
  }
}
