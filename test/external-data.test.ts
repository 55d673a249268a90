// Frozen weights as ONNX external-data initializers that point straight into a .safetensors
// file, the route for models whose weights cannot live in a protobuf (over 2 GB).

import {
  copyFileSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  renameSync,
  rmSync,
  symlinkSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { Graph } from "../src/graph/graph.js";
import * as op from "../src/graph/ops.js";
import { loadCausalLM } from "../src/model/load.js";
import { SafetensorsCheckpoint } from "../src/model/safetensors-checkpoint.js";
import { writeSafetensors } from "../src/model/safetensors.js";
import { Session, tensor } from "../src/runtime/session.js";

const dir = mkdtempSync(join(tmpdir(), "midpo-external-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe("external-data initializers", () => {
  it("read weights in place from a safetensors file", async () => {
    const file = join(dir, "w.safetensors");
    writeSafetensors(file, {
      other: { dtype: "F32", shape: [3], data: Float32Array.from([9, 9, 9]) },
      w: { dtype: "F32", shape: [2, 3], data: Float32Array.from([1, 2, 3, 4, 5, 6]) },
    });
    const info = SafetensorsCheckpoint.open(file).info("w");

    const g = new Graph();
    const x = g.input("x", "float32", ["batch", 3]);
    const w = g.externalInitializer("w", "float32", [2, 3], {
      path: info.file,
      offset: info.byteOffset,
      length: info.byteLength,
    });
    g.output("y", op.matmulTransB(x, w));
    const session = await Session.create(g);
    const out = await session.run({ x: tensor("float32", Float32Array.from([1, 0, 1]), [1, 3]) });
    await session.release();
    expect(Array.from(out.y.data as Float32Array)).toEqual([4, 10]);
  });
});

/** The PyTorch reference values of a tiny fixture model. */
function readExpected(fixture: string) {
  return JSON.parse(readFileSync(`${fixture}.expected.json`, "utf8")) as {
    sequences: { input_ids: number[]; logprobs: number[] }[];
  };
}

describe("mapped model weights", () => {
  it("are rejected where training needs them", () => {
    const fixture = join(import.meta.dirname, "fixtures", "tiny", "llama-gqa");
    const model = loadCausalLM(fixture, { mapWeights: true });
    expect(() => model.weights).toThrow(/serves inference only; load it without mapWeights/);
    expect(loadCausalLM(fixture).weights.size).toBeGreaterThan(0);
  });

  it("follow symbolic links into a blob store", async () => {
    // The Hugging Face cache's layout: snapshot entries are relative links to blobs.
    const fixture = join(import.meta.dirname, "fixtures", "tiny", "llama-gqa");
    const root = join(dir, "hub-layout");
    mkdirSync(join(root, "blobs"), { recursive: true });
    mkdirSync(join(root, "snapshot"));
    copyFileSync(join(fixture, "model.safetensors"), join(root, "blobs", "weights"));
    symlinkSync("../blobs/weights", join(root, "snapshot", "model.safetensors"));
    copyFileSync(join(fixture, "config.json"), join(root, "snapshot", "config.json"));
    const expected = readExpected(fixture);

    const model = loadCausalLM(join(root, "snapshot"), { mapWeights: true });
    const [got] = await model.tokenLogprobs([expected.sequences[0].input_ids]);
    expect(model.hasMappedWeights).toBe(true);
    got.forEach((lp, t) =>
      expect(Math.abs(lp - expected.sequences[0].logprobs[t])).toBeLessThanOrEqual(1e-4),
    );
    await model.release();
  });

  it("are rejected after the file is replaced or removed", async () => {
    const fixture = join(import.meta.dirname, "fixtures", "tiny", "llama-gqa");
    const copy = join(dir, "replaced");
    mkdirSync(copy);
    for (const file of ["config.json", "model.safetensors"]) {
      copyFileSync(join(fixture, file), join(copy, file));
    }
    const ids = readExpected(fixture).sequences[0].input_ids;

    const replaced = loadCausalLM(copy, { mapWeights: true });
    copyFileSync(join(fixture, "model.safetensors"), join(copy, "new.safetensors"));
    renameSync(join(copy, "new.safetensors"), join(copy, "model.safetensors"));
    await expect(replaced.tokenLogprobs([ids])).rejects.toThrow(
      /model.safetensors was changed after the model was loaded/,
    );

    const removed = loadCausalLM(copy, { mapWeights: true });
    rmSync(join(copy, "model.safetensors"));
    await expect(removed.tokenLogprobs([ids])).rejects.toThrow(
      /model.safetensors was removed after the model was loaded/,
    );
  });

  it("are read into memory when ORT cannot be given the checkpoint files", async () => {
    // Shards in two directories need a temporary model file beside hard links to both. Here
    // the system temporary directory does not exist, and the first shard's directory is so
    // deep that a link inside a new directory there would pass PATH_MAX (4096).
    const deepDir = (root: string) => {
      let deep = root;
      // Path lengths: shards 4095 (the longest a path may be), link 4096.
      while (deep.length < 4062) deep = join(deep, "d".repeat(Math.min(200, 4061 - deep.length)));
      mkdirSync(deep, { recursive: true });
      return deep;
    };
    const model = deepDir(join(dir, "a"));
    const other = deepDir(join(dir, "b"));
    const fixture = join(import.meta.dirname, "fixtures", "tiny", "mistral-sharded");
    for (const file of ["config.json", "model.safetensors.index.json"]) {
      copyFileSync(join(fixture, file), join(model, file));
    }
    const first = "model-00001-of-00002.safetensors";
    const second = "model-00002-of-00002.safetensors";
    copyFileSync(join(fixture, first), join(model, first));
    copyFileSync(join(fixture, second), join(other, second));
    symlinkSync(join(other, second), join(model, second));
    const expected = readExpected(fixture);

    const savedTmp = process.env.TMPDIR;
    process.env.TMPDIR = join(dir, "missing");
    try {
      const loaded = loadCausalLM(model, { mapWeights: true });
      expect(loaded.hasMappedWeights).toBe(true);
      const [got] = await loaded.tokenLogprobs([expected.sequences[0].input_ids]);
      expect(loaded.hasMappedWeights).toBe(false);
      got.forEach((lp, t) =>
        expect(Math.abs(lp - expected.sequences[0].logprobs[t])).toBeLessThanOrEqual(1e-4),
      );
      await loaded.release();
    } finally {
      if (savedTmp === undefined) delete process.env.TMPDIR;
      else process.env.TMPDIR = savedTmp;
    }
  });
});
