// One DPO step (loss, TRL metrics, LoRA gradients) against a float64 PyTorch reference
// (scripts/reference/dpo_reference.py) on a tiny random Llama with LoRA adapters.

import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { loadCausalLM } from "../src/model/load.js";
import { SafetensorsCheckpoint } from "../src/model/safetensors-checkpoint.js";
import { loraLinear } from "../src/train/lora-graph.js";
import type { LossType } from "../src/train/losses.js";
import { collatePairs, responseLogps } from "../src/train/preference-batch.js";
import {
  PreferenceStep,
  buildPreferenceGraph,
  preferenceMetrics,
} from "../src/train/preference-step.js";

const ROOT = join(import.meta.dirname, "..");

interface Fixture {
  base_model: string;
  adapter: { path: string; scale: number; r: number; shapes: Record<string, [number, number]> };
  beta: number;
  margins: number[];
  pairs: { prompt_ids: number[]; chosen_ids: number[]; rejected_ids: number[] }[];
  logps: Record<string, number[]>;
  losses: Record<
    string,
    {
      loss_type: LossType;
      label_smoothing: number;
      loss: number;
      metrics: Record<string, number>;
      grads: Record<string, number[]>;
      grad_norm: number;
    }
  >;
}

const PEFT_PREFIX = "base_model.model.";

describe.each(["lora-down-proj", "lora-q-v-down-proj"])("DPO step, %s", (name) => {
  const fx = JSON.parse(
    readFileSync(join(ROOT, "test/fixtures/dpo", `${name}.json`), "utf8"),
  ) as Fixture;
  const base = loadCausalLM(join(ROOT, fx.base_model));
  const adapterFile = SafetensorsCheckpoint.open(
    join(ROOT, fx.adapter.path, "adapter_model.safetensors"),
  );
  const modules = [
    ...new Set(
      Object.keys(fx.adapter.shapes).map((k) =>
        k.slice(PEFT_PREFIX.length).replace(/\.lora_[AB]\.weight$/, ""),
      ),
    ),
  ].map((m) => {
    const [r, inFeatures] = fx.adapter.shapes[`${PEFT_PREFIX}${m}.lora_A.weight`];
    const [outFeatures] = fx.adapter.shapes[`${PEFT_PREFIX}${m}.lora_B.weight`];
    return { name: m, r, inFeatures, outFeatures };
  });
  const params = new Map<string, { data: Float32Array; dims: number[] }>();
  for (const key of Object.keys(fx.adapter.shapes)) {
    params.set(key.slice(PEFT_PREFIX.length), {
      data: adapterFile.readFloat32(key),
      dims: fx.adapter.shapes[key],
    });
  }
  const batch = collatePairs(
    fx.pairs.map((p, i) => ({
      promptIds: p.prompt_ids,
      chosenIds: p.chosen_ids,
      rejectedIds: p.rejected_ids,
      margin: fx.margins[i],
    })),
  );

  it("reference logps from the base model match", async () => {
    const rows = [
      ...fx.pairs.map((p) => [...p.prompt_ids, ...p.chosen_ids]),
      ...fx.pairs.map((p) => [...p.prompt_ids, ...p.rejected_ids]),
    ];
    const tokenLp = await base.tokenLogprobs(rows);
    const flat = new Float32Array(batch.rows * (batch.width - 1));
    tokenLp.forEach((lp, r) => flat.set(lp, r * (batch.width - 1)));
    const ref = responseLogps(flat, batch);
    const expected = [...fx.logps.reference_chosen, ...fx.logps.reference_rejected];
    ref.forEach((v, i) => expect(Math.abs(v - expected[i])).toBeLessThan(1e-4));
  });

  it.each(["sigmoid", "sigmoid_label_smoothing", "robust", "hinge", "ipo"])(
    "%s loss, metrics and gradients",
    async (lossName) => {
      const expected = fx.losses[lossName];
      const lora = loraLinear(modules, fx.adapter.scale, false);
      const graph = buildPreferenceGraph(base.config, lora.linear, () => lora.params, {
        type: expected.loss_type,
        beta: fx.beta,
        labelSmoothing: expected.label_smoothing,
      });
      const step = await PreferenceStep.create(graph, base.weights);
      const ref = Float32Array.from([...fx.logps.reference_chosen, ...fx.logps.reference_rejected]);
      const out = await step.run(batch, ref, params);
      await step.release();

      expect(Math.abs(out.loss - expected.loss) / Math.abs(expected.loss)).toBeLessThan(1e-4);
      const policy = [...fx.logps.policy_chosen, ...fx.logps.policy_rejected];
      out.logps.forEach((v, i) => expect(Math.abs(v - policy[i])).toBeLessThan(1e-4));

      const metrics = preferenceMetrics(out.logps, ref, fx.beta);
      for (const [key, value] of Object.entries(expected.metrics)) {
        const got = metrics[key as keyof typeof metrics];
        expect(Math.abs(got - value), key).toBeLessThanOrEqual(1e-4 * Math.max(1, Math.abs(value)));
      }

      let normSquared = 0;
      for (const [key, values] of Object.entries(expected.grads)) {
        const got = out.grads.get(key.slice(PEFT_PREFIX.length))!;
        expect(got.length, key).toBe(values.length);
        const scale = Math.max(...values.map(Math.abs), 1e-12);
        const worst = values.reduce((m, v, i) => Math.max(m, Math.abs(got[i] - v)), 0);
        expect(worst / scale, key).toBeLessThan(1e-4);
        for (const v of got) normSquared += v * v;
      }
      expect(
        Math.abs(Math.sqrt(normSquared) - expected.grad_norm) / expected.grad_norm,
      ).toBeLessThan(1e-4);
    },
  );
});

describe("collatePairs", () => {
  it("lists response positions, empty prompt", () => {
    // Rows: chosen [5, 6, 7] and [1, 2 | 3], then rejected [8] and [1, 2 | 4, 9].
    const batch = collatePairs([
      { promptIds: [], chosenIds: [5, 6, 7], rejectedIds: [8], margin: 0 },
      { promptIds: [1, 2], chosenIds: [3], rejectedIds: [4, 9], margin: 0 },
    ]);
    expect(batch.picked).toBe(3);
    // Without a prompt, no position predicts a row's first token: it is left out.
    expect(Array.from(batch.logitPositions, Number)).toEqual([0, 0, 1, 1, 0, 0, 0, 0, 0, 1, 2, 0]);
    expect(Array.from(batch.pickedMask)).toEqual([0, 1, 1, 1, 0, 0, 0, 0, 0, 1, 1, 0]);
    for (let r = 0; r < batch.rows; r++) {
      const picked = batch.pickedMask.subarray(r * 3, (r + 1) * 3).reduce((a, b) => a + b, 0);
      const w = batch.width - 1;
      const response = batch.responseMask.subarray(r * w, (r + 1) * w).reduce((a, b) => a + b, 0);
      expect(picked, `row ${r}`).toBe(response);
    }
  });
});
