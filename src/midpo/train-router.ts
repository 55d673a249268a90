// Router training: plain DPO of the mixed model against the base model on D_dual, plus the
// gate regulariser λ_α·mean|α| + λ_β·mean|β − 1|. Only the router's parameters train; the
// base model and both experts are bound as frozen inputs.

import * as op from "../graph/ops.js";
import { Rng } from "../generate/sampling.js";
import type { CausalLM, WeightMap } from "../model/causal-lm.js";
import type { ScoredPair } from "../train/dpo.js";
import { collatePairs } from "../train/preference-batch.js";
import {
  PreferenceStep,
  buildPreferenceGraph,
  preferenceMetrics,
} from "../train/preference-step.js";
import { Trainer, type Param, type TrainSummary, type TrainerOptions } from "../train/trainer.js";
import { expertWeights, gateRegularizer, mixedLinear, type Experts } from "./mixed.js";
import { saveRouter, type Provenance, type RouterConfig } from "./router-files.js";
import { initRouterParams, routerParams, type RouterShape } from "./router.js";

export interface RouterTrainOptions {
  shape: RouterShape;
  /** β of the DPO loss (0.1 in MidPO). */
  beta: number;
  lambdaAlpha: number;
  lambdaBeta: number;
  trainer: TrainerOptions;
  provenance: { baseModel: Provenance; safety: Provenance; helpfulness: Provenance };
}

export async function trainRouter(
  base: CausalLM,
  experts: Experts,
  train: ScoredPair[],
  evalPairs: ScoredPair[],
  options: RouterTrainOptions,
): Promise<{ params: Map<string, Float32Array>; summary: TrainSummary }> {
  const values = initRouterParams(options.shape, new Rng(options.trainer.seed ^ 0x4047));
  const params = new Map<string, Param>(
    routerParams(options.shape).map((p) => [p.name, { data: values.get(p.name)!, dims: p.dims }]),
  );

  const mixed = mixedLinear(experts, { kind: "router", shape: options.shape }, false);
  let gateOutputs = false;
  const graph = buildPreferenceGraph(
    base.config,
    mixed.linear,
    () => mixed.routerInputs,
    { type: "sigmoid", beta: options.beta, labelSmoothing: 0 },
    "float32",
    (g) => {
      const attention = g.inputs.find((t) => t.name === "attention_mask")!;
      const reg = gateRegularizer(
        mixed,
        op.cast(attention, "float32"),
        options.lambdaAlpha,
        options.lambdaBeta,
      );
      g.output("mean_alpha", reg.meanAlpha);
      g.output("mean_beta", reg.meanBeta);
      gateOutputs = true;
      return reg.penalty;
    },
  );
  if (!gateOutputs) throw new Error("router graph: the gate regulariser was not built");
  const frozen: WeightMap = new Map([...base.weights, ...expertWeights(experts)]);
  const step = await PreferenceStep.create(graph, frozen);

  const run = async (batch: ScoredPair[]) => {
    const collated = collatePairs(batch);
    const ref = Float32Array.from([
      ...batch.map((p) => p.refChosen),
      ...batch.map((p) => p.refRejected),
    ]);
    const result = await step.run(collated, ref, params);
    const metrics = {
      ...preferenceMetrics(result.logps, ref, options.beta),
      "gates/alpha": Number((result.outputs.mean_alpha.data as Float32Array)[0]),
      "gates/beta": Number((result.outputs.mean_beta.data as Float32Array)[0]),
    };
    return { result, metrics };
  };

  const config: RouterConfig = {
    format: "midpo-router/v1",
    router: options.shape,
    lambdaAlpha: options.lambdaAlpha,
    lambdaBeta: options.lambdaBeta,
    ...options.provenance,
  };
  const trainer = new Trainer<ScoredPair>(
    {
      params,
      train,
      eval: evalPairs,
      lengthOf: (p) => p.promptIds.length + Math.max(p.chosenIds.length, p.rejectedIds.length),
      step: async (batch) => {
        const { result, metrics } = await run(batch);
        return { loss: result.loss, grads: result.grads, metrics };
      },
      evaluate: async (batch) => {
        const { result, metrics } = await run(batch);
        return { loss: result.loss, ...metrics };
      },
      save: (dir) => saveRouter(dir, config, values),
    },
    options.trainer,
  );
  try {
    const summary = await trainer.run();
    return { params: values, summary };
  } finally {
    await step.release();
  }
}
