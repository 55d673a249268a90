// The value cache and the model content hash that keys it, on real files in a temporary
// directory.

import {
  copyFileSync,
  mkdirSync,
  mkdtempSync,
  rmSync,
  statSync,
  utimesSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { modelContentHash, ValueCache } from "../src/train/cache.js";

const work = mkdtempSync(join(tmpdir(), "midpo-cache-"));
afterAll(() => rmSync(work, { recursive: true, force: true }));

describe("modelContentHash", () => {
  it("changes when a copy keeps size and mtime", () => {
    const model = join(work, "model");
    const other = join(work, "other");
    mkdirSync(model);
    mkdirSync(other);
    writeFileSync(join(model, "config.json"), "{}");
    writeFileSync(join(model, "model.safetensors"), "aaaa");
    writeFileSync(join(other, "model.safetensors"), "bbbb");
    const cacheDir = join(work, "hashes");
    const before = modelContentHash(model, cacheDir);

    // What `cp -p` or `rsync -a` leaves: new bytes, the same size and modification time.
    const stamp = statSync(join(model, "model.safetensors"));
    copyFileSync(join(other, "model.safetensors"), join(model, "model.safetensors"));
    utimesSync(join(model, "model.safetensors"), stamp.atime, stamp.mtime);

    expect(modelContentHash(model, cacheDir)).not.toBe(before);
  });
});

describe("ValueCache", () => {
  it("rejects non-finite values and caches nothing", async () => {
    const cache = new ValueCache(join(work, "nan"));
    const compute = () => Promise.resolve(Float64Array.of(1, Number.NaN));
    await expect(cache.getOrCompute("scores", "k", 2, {}, compute)).rejects.toThrow(
      /value 2 of 2 is NaN/,
    );
    expect(cache.get("scores", "k", 2)).toBeUndefined();
  });

  it("computes a damaged entry again", async () => {
    const cache = new ValueCache(join(work, "damaged"));
    await cache.getOrCompute("scores", "k", 2, {}, () => Promise.resolve(Float64Array.of(1, 2)));
    writeFileSync(join(work, "damaged", "scores", "k.f64"), Buffer.alloc(16, 0xff));

    const again = await cache.getOrCompute("scores", "k", 2, {}, () =>
      Promise.resolve(Float64Array.of(3, 4)),
    );
    expect(again.hit).toBe(false);
    expect(Array.from(again.values)).toEqual([3, 4]);
  });

  it("names an unwritable cache directory", async () => {
    const file = join(work, "a-file");
    writeFileSync(file, "");
    const cache = new ValueCache(file);
    await expect(
      cache.getOrCompute("scores", "k", 1, {}, () => Promise.resolve(Float64Array.of(1))),
    ).rejects.toThrow(/cannot write to the cache directory .*a-file \(ENOTDIR\)/);
  });
});
