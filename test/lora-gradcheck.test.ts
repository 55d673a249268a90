// The whole tiny Llama with LoRA on q_proj and down_proj, run in float64, against central
// finite differences of the DPO loss with respect to LoRA parameters.

import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { Rng } from "../src/generate/sampling.js";
import { loadCausalLM } from "../src/model/load.js";
import { Session, tensor, type Feeds } from "../src/runtime/session.js";
import { loraLinear } from "../src/train/lora-graph.js";
import { collatePairs } from "../src/train/preference-batch.js";
import { batchFeeds, buildPreferenceGraph } from "../src/train/preference-step.js";

const MODEL = join(import.meta.dirname, "fixtures", "tiny", "llama-gqa");

describe("tiny Llama with LoRA", () => {
  it("LoRA gradients match finite differences in float64", async () => {
    const base = loadCausalLM(MODEL);
    const c = base.config;
    const rng = new Rng(3);
    const modules = [
      {
        name: "model.layers.0.self_attn.q_proj",
        r: 2,
        inFeatures: c.hiddenSize,
        outFeatures: c.numAttentionHeads * c.headDim,
      },
      {
        name: "model.layers.1.mlp.down_proj",
        r: 2,
        inFeatures: c.intermediateSize,
        outFeatures: c.hiddenSize,
      },
    ];
    const lora = loraLinear(modules, 2, false);
    const pg = buildPreferenceGraph(
      c,
      lora.linear,
      () => lora.params,
      { type: "sigmoid", beta: 0.5, labelSmoothing: 0 },
      "float64",
    );

    const params = new Map<string, { data: Float64Array; dims: number[] }>();
    for (const m of modules) {
      const a = Float64Array.from({ length: m.r * m.inFeatures }, () => (rng.next() - 0.5) * 0.4);
      const b = Float64Array.from({ length: m.outFeatures * m.r }, () => (rng.next() - 0.5) * 0.4);
      params.set(`${m.name}.lora_A.weight`, { data: a, dims: [m.r, m.inFeatures] });
      params.set(`${m.name}.lora_B.weight`, { data: b, dims: [m.outFeatures, m.r] });
    }
    const bound: Feeds = {};
    for (const input of pg.graph.inputs) {
      const w = base.weights.get(input.name);
      if (w) bound[input.name] = tensor("float64", Float64Array.from(w), input.shape as number[]);
    }
    const session = await Session.create(pg.graph, { bound });
    const batch = collatePairs([
      { promptIds: [1, 5, 9], chosenIds: [20, 30, 2], rejectedIds: [40, 2], margin: 0.1 },
      { promptIds: [1, 7], chosenIds: [11, 2], rejectedIds: [12, 13, 14, 2], margin: 0 },
    ]);
    const feedsOf = (): Feeds => {
      const feeds: Feeds = {
        ...batchFeeds(batch, "float64"),
        ref_logps: tensor("float64", Float64Array.from([-9, -8, -7, -12]), [batch.rows]),
        margins: tensor("float64", Float64Array.from(batch.margins), [batch.pairs]),
      };
      for (const [name, p] of params) feeds[name] = tensor("float64", p.data, p.dims);
      return feeds;
    };

    const out = await session.run(feedsOf());
    const h = 1e-6;
    for (const name of pg.trainable) {
      const p = params.get(name)!;
      const analytic = out[`grad.${name}`].data as Float64Array;
      // Check a spread of entries of every parameter.
      for (const j of [0, 1, Math.floor(p.data.length / 2), p.data.length - 1]) {
        const saved = p.data[j];
        p.data[j] = saved + h;
        const lp = Number((await session.run(feedsOf(), ["loss"])).loss.data[0]);
        p.data[j] = saved - h;
        const lm = Number((await session.run(feedsOf(), ["loss"])).loss.data[0]);
        p.data[j] = saved;
        const numeric = (lp - lm) / (2 * h);
        expect(Math.abs(analytic[j] - numeric), `${name}[${j}]`).toBeLessThan(
          1e-7 * Math.max(1, Math.abs(numeric)),
        );
      }
      expect(
        analytic.some((v) => v !== 0),
        `${name} has a nonzero gradient`,
      ).toBe(true);
    }
    await session.release();
  });
});
