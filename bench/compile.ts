// Compiles src/ and bench/ to JavaScript for the measuring processes, so that they run as
// the published package does (compiled, under plain node). Under tsx, a process starts with
// about 47 MiB more resident memory, which would count against midpo's peak RSS.

import { spawnSync } from "node:child_process";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

const ROOT = fileURLToPath(new URL("..", import.meta.url));

/** Runs tsc with tsconfig.bench.json and returns the directory holding the compiled bench/. */
export function compileBench(): string {
  const tsc = join(ROOT, "node_modules", "typescript", "bin", "tsc");
  const out = spawnSync(process.execPath, [tsc, "-p", join(ROOT, "tsconfig.bench.json")], {
    encoding: "utf8",
    stdio: ["ignore", "pipe", "pipe"],
  });
  if (out.error !== undefined || out.status !== 0) {
    throw new Error(
      `compiling the benchmark with tsconfig.bench.json failed:\n${out.stdout}${out.stderr}`,
    );
  }
  return join(ROOT, "bench", ".cache", "build", "bench");
}
