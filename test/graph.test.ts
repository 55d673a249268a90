import { describe, expect, it } from "vitest";
import { Graph } from "../src/graph/graph.js";
import * as op from "../src/graph/ops.js";
import { Session, tensor } from "../src/runtime/session.js";

async function runOnce(g: Graph, feeds: Record<string, ReturnType<typeof tensor>>) {
  const s = await Session.create(g);
  try {
    return await s.run(feeds);
  } finally {
    await s.release();
  }
}

describe("graph builder", () => {
  it("matmul with symbolic batch matches hand values", async () => {
    const g = new Graph();
    const x = g.input("x", "float32", ["batch", 2]);
    const w = g.input("w", "float32", [3, 2]);
    g.output("y", op.matmulTransB(x, w));
    const out = await runOnce(g, {
      x: tensor("float32", Float32Array.from([1, 2, 3, 4]), [2, 2]),
      w: tensor("float32", Float32Array.from([1, 0, 0, 1, 1, 1]), [3, 2]),
    });
    expect(out.y.dims).toEqual([2, 3]);
    expect(Array.from(out.y.data as Float32Array)).toEqual([1, 2, 3, 3, 4, 7]);
  });

  it("one session serves several batch shapes", async () => {
    const g = new Graph();
    const x = g.input("x", "float32", ["batch", "seq"]);
    g.output("s", op.reduceSum(op.mul(x, x), [1]));
    const s = await Session.create(g);
    const a = await s.run({ x: tensor("float32", Float32Array.from([1, 2, 3]), [1, 3]) });
    const b = await s.run({ x: tensor("float32", Float32Array.from([1, 1, 2, 2]), [2, 2]) });
    await s.release();
    expect(Array.from(a.s.data as Float32Array)).toEqual([14]);
    expect(Array.from(b.s.data as Float32Array)).toEqual([2, 8]);
  });

  it("log softmax, gather elements and float64", async () => {
    const g = new Graph();
    const x = g.input("x", "float64", [1, 2]);
    const idx = g.input("idx", "int64", [1, 1]);
    g.output("lp", op.gatherElements(op.logSoftmax(x, -1), idx, 1));
    const out = await runOnce(g, {
      x: tensor("float64", Float64Array.from([0, Math.log(3)]), [1, 2]),
      idx: tensor("int64", BigInt64Array.from([1n]), [1, 1]),
    });
    expect((out.lp.data as Float64Array)[0]).toBeCloseTo(Math.log(0.75), 14);
  });

  it("reshape, transpose, slice, concat shapes", () => {
    const g = new Graph();
    const x = g.input("x", "float32", ["batch", "seq", 12]);
    const r = op.reshape(x, [0, 0, 3, 4]);
    expect(r.shape).toEqual(["batch", "seq", 3, 4]);
    const t = op.transpose(r, [0, 2, 1, 3]);
    expect(t.shape).toEqual(["batch", 3, "seq", 4]);
    const s = op.slice(t, [3], [0], [2]);
    expect(s.shape).toEqual(["batch", 3, "seq", 2]);
    expect(op.concat([s, s], -1).shape).toEqual(["batch", 3, "seq", 4]);
    expect(() =>
      op.matmul(g.input("a", "float32", [2, 3]), g.input("b", "float32", [4, 5])),
    ).toThrow(/inner dimensions differ/);
  });

  it("where, cast, constant of shape and trilu", async () => {
    const g = new Graph();
    const x = g.input("x", "float32", [2, 2]);
    const ones = op.constantOfShape(op.shapeOf(x), 1, "float32", x.shape);
    const lower = op.cast(op.trilu(ones, false), "bool");
    g.output("y", op.where(lower, x, op.scalar(g, -1)));
    const out = await runOnce(g, { x: tensor("float32", Float32Array.from([5, 6, 7, 8]), [2, 2]) });
    expect(Array.from(out.y.data as Float32Array)).toEqual([5, -1, 7, 8]);
  });
});
