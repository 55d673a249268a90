// Child-process harness for the resume test: runs the synthetic DPO training into OUT_DIR,
// and with KILL_AT_CHECKPOINT=N sends itself SIGKILL as soon as checkpoint-N exists.

import { existsSync } from "node:fs";
import { join } from "node:path";
import { runSyntheticDpo } from "./synthetic-dpo.js";

const [outDir, cacheDir, resume] = process.argv.slice(2);
const killAt = process.env.KILL_AT_CHECKPOINT;
if (killAt !== undefined) {
  const marker = join(outDir, `checkpoint-${killAt}`);
  setInterval(() => {
    if (existsSync(marker)) process.kill(process.pid, "SIGKILL");
  }, 1);
}
await runSyntheticDpo(outDir, cacheDir, { resume: resume === "resume" });
