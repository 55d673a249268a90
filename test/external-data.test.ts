// Frozen weights as ONNX external-data initializers that point straight into a .safetensors
// file, the route for models whose weights cannot live in a protobuf (over 2 GB).

import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { Graph } from "../src/graph/graph.js";
import * as op from "../src/graph/ops.js";
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
