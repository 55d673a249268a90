// The midpo side of the DPO step benchmark: one preference-optimisation step of a LoRA adapter
// on down_proj, as src/train/dpo.ts builds it (buildPreferenceGraph over loraLinear, run by
// PreferenceStep), timed on the plan's batch. bench/run-train-benches.ts starts this file once
// per mode and reads the one JSON line it prints.
//
// Modes (see StepMode in train-plan.ts):
//   step      the step alone; the reference log-probs are computed once before timing, as
//             midpo's cache provides them during training;
//   step+ref  the reference forward pass (CausalLM.tokenLogprobs on the base model) and then
//             the step on every timed run, to compare like for like with TRL and safe-rlhf.
//
// Usage: npx tsx bench/dpo-step.ts --plan FILE --mode step|step+ref

import { performance } from "node:perf_hooks";
import { Command, Option } from "commander";

import { loadCausalLM } from "../src/model/load.js";
import { SafetensorsCheckpoint } from "../src/model/safetensors-checkpoint.js";
import { loraInputNames, loraLinear } from "../src/train/lora-graph.js";
import {
  createLoraConfig,
  decoderLinearModules,
  loraScale,
  targetModulesOf,
  type LinearModule,
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
  type StepMode,
  type StepResult,
} from "./train-plan.js";
import { planPairs, timeSteps } from "./train-step-timing.js";

/** Reads the DPO adapter's initial lora_A and lora_B from the plan's adapter file. */
function readAdapterParams(path: string, modules: LinearModule[], r: number): Map<string, Param> {
  const file = SafetensorsCheckpoint.open(path);
  const params = new Map<string, Param>();
  for (const m of modules) {
    const names = loraInputNames(m.name);
    const aDims = [r, m.inFeatures];
    const bDims = [m.outFeatures, r];
    params.set(names.a, { data: file.readFloat32(names.a, aDims), dims: aDims });
    params.set(names.b, { data: file.readFloat32(names.b, bDims), dims: bDims });
  }
  return params;
}

async function main(): Promise<void> {
  const program = new Command("dpo-step")
    .description("Measure midpo's DPO training step and print the result as one JSON line")
    .requiredOption("--plan <file>", "plan file written by bench/run-train-benches.ts")
    .addOption(
      new Option("--mode <mode>", "what each timed run computes")
        .choices(["step", "step+ref"])
        .makeOptionMandatory(),
    )
    .parse();
  const opts = program.opts<{ plan: string; mode: StepMode }>();
  const plan = readPlan(opts.plan);
  const ortClock = instrumentOrt();
  let matmul = await measureOrtMatmul(plan);

  let start = performance.now();
  const model = loadCausalLM(plan.model_dir);
  const loadSeconds = seconds(start);

  const lora = createLoraConfig({
    r: plan.lora.r,
    loraAlpha: plan.lora.alpha,
    targetModules: plan.lora.target_modules,
  });
  const modules = targetModulesOf(decoderLinearModules(model.config), lora.targetModules);
  const params = readAdapterParams(plan.adapter_path, modules, lora.r);

  start = performance.now();
  const branch = loraLinear(
    modules.map((m) => ({ ...m, r: lora.r })),
    loraScale(lora),
    false,
  );
  const graph = buildPreferenceGraph(model.config, branch.linear, () => branch.params, {
    type: "sigmoid",
    beta: plan.beta,
    labelSmoothing: 0,
  });
  const graphBuildSeconds = seconds(start);
  const onnxSerializeSeconds = timeOnnxSerialization(graph.graph);

  start = performance.now();
  const step = await PreferenceStep.create(graph, model.weights);
  await model.llamaSession({ output: "token-logprobs" });
  const sessionCreateSeconds = seconds(start);

  const layers = model.config.numHiddenLayers;
  const sampledGrads = [0, layers - 1].flatMap((layer) => {
    const names = loraInputNames(`model.layers.${layer}.mlp.down_proj`);
    return [names.a, names.b];
  });
  const { fields } = await timeSteps({
    plan,
    mode: opts.mode,
    pairs: planPairs(plan),
    model,
    step,
    params,
    ortClock,
    sampledGrads,
  });

  matmul = await measureOrtMatmul(plan, matmul);
  const result: StepResult = {
    side: "midpo",
    bench: "dpo-step",
    ...fields,
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
