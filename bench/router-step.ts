// The midpo side of the router step benchmark: one training step of the MidPO router.
//
// The step is built as src/midpo/train-router.ts builds it. The mixed model has both frozen
// experts on down_proj, gated per token by the reference router. The loss is plain DPO against
// the base model plus the gate regulariser, and only the router parameters get gradients. The
// reference log-probs are computed once before timing, as midpo's cache provides them.
// bench/run-train-benches.ts starts this file and reads the one JSON line it prints.
//
// Usage: npx tsx bench/router-step.ts --plan FILE

import { performance } from "node:perf_hooks";
import { Command } from "commander";

import * as op from "../src/graph/ops.js";
import { expertWeights, gateRegularizer, mixedLinear, type Experts } from "../src/midpo/mixed.js";
import { routerParams } from "../src/midpo/router.js";
import type { WeightMap } from "../src/model/causal-lm.js";
import type { ModelConfig } from "../src/model/config.js";
import { loadCausalLM } from "../src/model/load.js";
import { SafetensorsCheckpoint } from "../src/model/safetensors-checkpoint.js";
import { loraInputNames } from "../src/train/lora-graph.js";
import {
  createLoraConfig,
  decoderLinearModules,
  targetModulesOf,
  type LoraAdapter,
} from "../src/train/lora.js";
import { PreferenceStep, buildPreferenceGraph } from "../src/train/preference-step.js";
import type { Param } from "../src/train/trainer.js";
import {
  instrumentOrt,
  measureOrtMatmul,
  processFields,
  readPlan,
  seconds,
  timeOnnxSerialization,
  type StepResult,
  type TrainPlan,
} from "./train-plan.js";
import { routerShape } from "./train-setup.js";
import { planPairs, timeSteps } from "./train-step-timing.js";

/** Reads the safety and helpfulness adapters from the plan's experts file. */
function readExperts(plan: TrainPlan, config: ModelConfig): Experts {
  const file = SafetensorsCheckpoint.open(plan.experts_path);
  const lora = createLoraConfig({
    r: plan.lora.r,
    loraAlpha: plan.lora.alpha,
    targetModules: ["down_proj"],
  });
  const modules = targetModulesOf(decoderLinearModules(config), lora.targetModules);
  const read = (role: keyof Experts): LoraAdapter => {
    const adapter: LoraAdapter = { config: lora, modules: new Map() };
    for (const m of modules) {
      const names = loraInputNames(m.name);
      adapter.modules.set(m.name, {
        A: file.readFloat32(`${role}.${names.a}`, [lora.r, m.inFeatures]),
        B: file.readFloat32(`${role}.${names.b}`, [m.outFeatures, lora.r]),
        inFeatures: m.inFeatures,
        outFeatures: m.outFeatures,
      });
    }
    return adapter;
  };
  return { safety: read("safety"), helpfulness: read("helpfulness") };
}

async function main(): Promise<void> {
  const program = new Command("router-step")
    .description("Measure midpo's router training step and print the result as one JSON line")
    .requiredOption("--plan <file>", "plan file written by bench/run-train-benches.ts")
    .parse();
  const plan = readPlan(program.opts<{ plan: string }>().plan);
  const ortClock = instrumentOrt();
  let matmul = await measureOrtMatmul(plan);

  let start = performance.now();
  const model = loadCausalLM(plan.model_dir);
  const loadSeconds = seconds(start);

  const experts = readExperts(plan, model.config);
  const shape = routerShape(model.config, plan.router.hidden);
  const routerFile = SafetensorsCheckpoint.open(plan.router_path);
  const params = new Map<string, Param>(
    routerParams(shape).map((p) => [
      p.name,
      { data: routerFile.readFloat32(p.name, p.dims), dims: p.dims },
    ]),
  );

  start = performance.now();
  const mixed = mixedLinear(experts, { kind: "router", shape }, false);
  const graph = buildPreferenceGraph(
    model.config,
    mixed.linear,
    () => mixed.routerInputs,
    { type: "sigmoid", beta: plan.beta, labelSmoothing: 0 },
    "float32",
    (g) => {
      const attention = g.inputs.find((t) => t.name === "attention_mask")!;
      const mask = op.cast(attention, "float32");
      const reg = gateRegularizer(mixed, mask, plan.router.lambda_alpha, plan.router.lambda_beta);
      g.output("mean_alpha", reg.meanAlpha);
      g.output("mean_beta", reg.meanBeta);
      return reg.penalty;
    },
  );
  const graphBuildSeconds = seconds(start);
  const onnxSerializeSeconds = timeOnnxSerialization(graph.graph);

  start = performance.now();
  const frozen: WeightMap = new Map([...model.weights, ...expertWeights(experts)]);
  const step = await PreferenceStep.create(graph, frozen);
  await model.llamaSession({ output: "token-logprobs" });
  const sessionCreateSeconds = seconds(start);

  const last = model.config.numHiddenLayers - 1;
  const sampledGrads = [
    "router.layers.0.alpha.0.weight",
    "router.layers.0.alpha.2.weight",
    `router.layers.${last}.beta.0.weight`,
    `router.layers.${last}.beta.2.weight`,
  ];
  // Router training is plain DPO: no margins.
  const pairs = planPairs(plan).map((p) => ({ ...p, margin: 0 }));
  const { fields, first } = await timeSteps({
    plan,
    mode: "step",
    pairs,
    model,
    step,
    params,
    ortClock,
    sampledGrads,
  });

  matmul = await measureOrtMatmul(plan, matmul);
  const result: StepResult = {
    side: "midpo",
    bench: "router-step",
    ...fields,
    mean_alpha: Number((first.outputs.mean_alpha.data as Float32Array)[0]),
    mean_beta: Number((first.outputs.mean_beta.data as Float32Array)[0]),
    load_s: loadSeconds,
    graph_build_s: graphBuildSeconds,
    onnx_serialize_s: onnxSerializeSeconds,
    session_create_s: sessionCreateSeconds,
    matmul,
    ...processFields(),
  };
  console.log(JSON.stringify(result));
  await step.release();
  await model.release();
}

await main();
