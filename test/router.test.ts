// Router training: gradients against finite differences (float64), and a synthetic task where
// the router must open the safety expert on one kind of prompt only.

import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import * as op from "../src/graph/ops.js";
import { Rng } from "../src/generate/sampling.js";
import { mixedModel } from "../src/midpo/mixed-model.js";
import { expertWeights, gateRegularizer, mixedLinear, type Experts } from "../src/midpo/mixed.js";
import { loadRouter, provenance, saveRouter } from "../src/midpo/router-files.js";
import { trainRouter } from "../src/midpo/train-router.js";
import { loadCausalLM } from "../src/model/load.js";
import { Session, int64Tensor, tensor, type Feeds } from "../src/runtime/session.js";
import { ValueCache } from "../src/train/cache.js";
import { referenceLogps, trainDpo } from "../src/train/dpo.js";
import { createLoraConfig } from "../src/train/lora.js";
import { collatePairs, type TokenizedPair } from "../src/train/preference-batch.js";
import { batchFeeds, buildPreferenceGraph } from "../src/train/preference-step.js";
import { TINY_MODEL, trainerOptions } from "./helpers/synthetic-dpo.js";

const work = mkdtempSync(join(tmpdir(), "midpo-router-"));
const cache = new ValueCache(join(work, "cache"));
afterAll(() => rmSync(work, { recursive: true, force: true }));

const MARKER = 5; // last prompt token of the "unsafe" kind
const REFUSE = 10;
const ANSWER = 30;

/** Prompts of the unsafe kind end with MARKER; `prefer` picks the chosen first token. */
function pairs(n: number, seed: number, prefer: (unsafe: boolean) => number): TokenizedPair[] {
  const rng = new Rng(seed);
  const token = () => 40 + Math.floor(rng.next() * 180);
  return Array.from({ length: n }, (_, i) => {
    const unsafe = i % 2 === 0;
    const prompt = [1, token(), token(), token(), ...(unsafe ? [MARKER] : [])];
    const chosen = prefer(unsafe);
    const rejected = chosen === REFUSE ? ANSWER : REFUSE;
    // Only the first response token differs, so only the gate at the last prompt position,
    // which sees the marker through attention, can tell the pair apart.
    const tail = token();
    return {
      promptIds: prompt,
      chosenIds: [chosen, tail, 2],
      rejectedIds: [rejected, tail, 2],
      margin: 0,
    };
  });
}

describe("router gradients", () => {
  it("match finite differences in float64", async () => {
    const base = loadCausalLM(TINY_MODEL);
    const rng = new Rng(9);
    const { initLoraAdapter, targetModulesOf, decoderLinearModules } =
      await import("../src/train/lora.js");
    const modules = targetModulesOf(decoderLinearModules(base.config), ["down_proj"]);
    const expert = (seed: number) => {
      const a = initLoraAdapter(createLoraConfig({ r: 2, loraAlpha: 4 }), modules, new Rng(seed));
      for (const m of a.modules.values())
        for (let i = 0; i < m.B.length; i++) m.B[i] = (rng.next() - 0.5) * 0.5;
      return a;
    };
    const experts: Experts = { safety: expert(1), helpfulness: expert(2) };
    const shape = {
      kind: "compact" as const,
      intermediateSize: base.config.intermediateSize,
      hidden: 4,
      layers: 2,
    };
    const mixed = mixedLinear(experts, { kind: "router", shape }, false);
    const pg = buildPreferenceGraph(
      base.config,
      mixed.linear,
      () => mixed.routerInputs,
      { type: "sigmoid", beta: 0.5, labelSmoothing: 0 },
      "float64",
      (g) => {
        const mask = op.cast(
          g.inputs.find((t) => t.name === "attention_mask")!,
          "float64",
        );
        return gateRegularizer(mixed, mask, 1, 1).penalty;
      },
    );
    const frozen = new Map([...base.weights, ...expertWeights(experts)]);
    const bound: Feeds = {};
    for (const input of pg.graph.inputs) {
      const w = frozen.get(input.name);
      if (w) bound[input.name] = tensor("float64", Float64Array.from(w), input.shape as number[]);
    }
    const session = await Session.create(pg.graph, { bound });
    const params = new Map(
      pg.trainable.map((name) => {
        const t = mixed.routerInputs.get(name)!;
        const n = (t.shape as number[]).reduce((a, b) => a * b, 1);
        return [
          name,
          {
            data: Float64Array.from({ length: n }, () => (rng.next() - 0.5) * 0.6),
            dims: t.shape as number[],
          },
        ];
      }),
    );
    const batch = collatePairs([
      { promptIds: [1, 5, 9], chosenIds: [20, 30, 2], rejectedIds: [40, 2], margin: 0 },
      { promptIds: [1, 7], chosenIds: [11, 2], rejectedIds: [12, 13, 14, 2], margin: 0 },
    ]);
    const feeds = (): Feeds => {
      const f: Feeds = {
        ...batchFeeds(batch, "float64"),
        ref_logps: tensor("float64", Float64Array.from([-9, -8, -7, -12]), [batch.rows]),
        margins: tensor("float64", new Float64Array(batch.pairs), [batch.pairs]),
      };
      for (const [name, p] of params) f[name] = tensor("float64", p.data, p.dims);
      return f;
    };
    const out = await session.run(feeds());
    const h = 1e-6;
    for (const name of pg.trainable) {
      const p = params.get(name)!;
      const analytic = out[`grad.${name}`].data as Float64Array;
      for (const j of [0, p.data.length - 1]) {
        const saved = p.data[j];
        p.data[j] = saved + h;
        const lp = Number((await session.run(feeds(), ["loss"])).loss.data[0]);
        p.data[j] = saved - h;
        const lm = Number((await session.run(feeds(), ["loss"])).loss.data[0]);
        p.data[j] = saved;
        const numeric = (lp - lm) / (2 * h);
        expect(Math.abs(analytic[j] - numeric), `${name}[${j}]`).toBeLessThan(
          1e-7 * Math.max(1, Math.abs(numeric)),
        );
      }
    }
    await session.release();
  });
});

describe("router training", () => {
  it("opens the safety expert on unsafe-kind prompts only", async () => {
    const base = loadCausalLM(TINY_MODEL);
    const expertOptions = (name: string) => ({
      lora: createLoraConfig({ r: 4, loraAlpha: 8, targetModules: ["down_proj"] }),
      loss: { type: "sigmoid" as const, beta: 0.1, labelSmoothing: 0 },
      trainer: trainerOptions(join(work, name), { maxSteps: 30, runKey: name, saveEvery: 0 }),
    });
    // The safety expert always refuses; the helpfulness expert always answers.
    const safetyData = await referenceLogps(
      base,
      TINY_MODEL,
      pairs(64, 1, () => REFUSE),
      cache,
    );
    const helpData = await referenceLogps(
      base,
      TINY_MODEL,
      pairs(64, 2, () => ANSWER),
      cache,
    );
    const safety = (await trainDpo(base, safetyData, [], expertOptions("safety"))).adapter;
    const helpfulness = (await trainDpo(base, helpData, [], expertOptions("helpfulness"))).adapter;

    // D_dual-like data: refuse on unsafe-kind prompts, answer on the others.
    const dual = await referenceLogps(
      base,
      TINY_MODEL,
      pairs(96, 3, (unsafe) => (unsafe ? REFUSE : ANSWER)),
      cache,
    );
    const shape = {
      kind: "compact" as const,
      intermediateSize: base.config.intermediateSize,
      hidden: 16,
      layers: base.config.numHiddenLayers,
    };
    const routerDir = join(work, "router");
    const { params } = await trainRouter(base, { safety, helpfulness }, dual, [], {
      shape,
      beta: 0.1,
      lambdaAlpha: 1,
      lambdaBeta: 1,
      trainer: trainerOptions(routerDir, {
        maxSteps: 300,
        lr: 5e-2,
        gradAccum: 1,
        batchSize: 8,
        runKey: "router",
        saveEvery: 0,
      }),
      provenance: {
        baseModel: { path: TINY_MODEL, sha256: "x" },
        safety: { path: "s", sha256: "s" },
        helpfulness: { path: "h", sha256: "h" },
      },
    });

    const mixed = mixedModel(
      base,
      { safety, helpfulness },
      { kind: "router", shape },
      params,
      true,
    );
    const session = await mixed.llamaSession({ output: "token-logprobs" });
    const meanAlpha = async (unsafe: boolean) => {
      const prompts = pairs(40, 4, () => REFUSE).filter(
        (p) => (p.promptIds.at(-1) === MARKER) === unsafe,
      );
      let sum = 0;
      let count = 0;
      for (const p of prompts) {
        const ids = p.promptIds;
        const out = await session.run({
          input_ids: int64Tensor(ids, [1, ids.length]),
          attention_mask: int64Tensor(
            ids.map(() => 1),
            [1, ids.length],
          ),
          position_ids: int64Tensor(
            ids.map((_, i) => i),
            [1, ids.length],
          ),
        });
        for (let l = 0; l < shape.layers; l++) {
          const alpha = out[`gate.alpha.${l}`].data as Float32Array;
          for (let t = p.promptIds.length - 1; t < ids.length; t++) {
            sum += alpha[t];
            count++;
          }
        }
      }
      return sum / count;
    };
    const unsafeAlpha = await meanAlpha(true);
    const benignAlpha = await meanAlpha(false);
    console.log(
      `router test: mean alpha ${unsafeAlpha.toFixed(3)} on unsafe-kind, ${benignAlpha.toFixed(3)} on benign`,
    );
    expect(unsafeAlpha - benignAlpha).toBeGreaterThanOrEqual(0.3);
  });

  it("saves and refuses to load against other experts", async () => {
    const dirs = {
      base: TINY_MODEL,
      safety: join(work, "safety"),
      helpfulness: join(work, "helpfulness"),
    };
    const shape = { kind: "compact" as const, intermediateSize: 96, hidden: 16, layers: 2 };
    const { initRouterParams } = await import("../src/midpo/router.js");
    const params = initRouterParams(shape, new Rng(1));
    const prov = provenance(dirs.base, dirs.safety, dirs.helpfulness);
    saveRouter(
      join(work, "saved"),
      { format: "midpo-router/v1", router: shape, lambdaAlpha: 1, lambdaBeta: 1, ...prov },
      params,
    );
    const loaded = loadRouter(join(work, "saved"), dirs);
    expect(loaded.params.get("router.layers.0.alpha.0.weight")).toEqual(
      params.get("router.layers.0.alpha.0.weight"),
    );
    expect(() => loadRouter(join(work, "saved"), { ...dirs, safety: dirs.helpfulness })).toThrow(
      /different content/,
    );
  });
});
