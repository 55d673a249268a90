// Child-process harness for the pipeline resume test: runs a small pipeline on the demo corpus
// into OUT, and with KILL_WHEN=<path> sends itself SIGKILL as soon as that path exists.

import { existsSync } from "node:fs";
import { join } from "node:path";
import { demoSftPairs } from "../../src/demo/corpus.js";
import { writeDemoAssets } from "../../src/demo/demo.js";
import { parsePipelineConfig } from "../../src/pipeline/config.js";
import { runPipeline } from "../../src/pipeline/pipeline.js";

const [out, assetsDir] = process.argv.slice(2);
const killWhen = process.env.KILL_WHEN;
if (killWhen !== undefined) {
  setInterval(() => {
    if (existsSync(join(out, killWhen))) process.kill(process.pid, "SIGKILL");
  }, 1);
}

const assets = writeDemoAssets(assetsDir, 0);
const small = { batch_size: 8, save_every: 5 };
const config = parsePipelineConfig(
  {
    out,
    seed: 3,
    model: assets.model,
    cache_dir: join(out, "cache"),
    data: { files: [assets.corpus], eval_ratio: 0.1, max_length: 64 },
    sft: { data: [assets.sft], lora: null, lr: 3e-3, max_steps: 20, ...small },
    reward: { lr: 3e-3, max_steps: 10, lora: { r: 4, target_modules: ["down_proj"] }, ...small },
    cost: { lr: 3e-3, max_steps: 10, lora: { r: 4, target_modules: ["down_proj"] }, ...small },
    experts: { lr: 1e-3, max_steps: 20, baselines: false, lora: { r: 4, alpha: 8 }, ...small },
    router: { kind: "compact", hidden: 8, lr: 1e-2, max_steps: 10, ...small },
  },
  "pipeline test config",
  process.cwd(),
);
const result = await runPipeline(config, undefined, demoSftPairs(0));
process.stdout.write(JSON.stringify(result.stages.map((s) => s.name)) + "\n");
