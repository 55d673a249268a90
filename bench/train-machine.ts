// Machine facts for the training benchmark reports: the CPU, the BLAS behind torch, and how
// busy other processes kept the cores while a measuring process ran.

import { spawnSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { cpus, loadavg, totalmem, type as osType, release as osRelease } from "node:os";

import { log } from "../src/log.js";

export const BLAS_PACKAGE = "libopenblas0-pthread";

/** Returns the installed version of a Debian package, or null when it is not installed. */
function debianPackageVersion(name: string): string | null {
  const out = spawnSync("dpkg-query", ["-W", "-f", "${Status} ${Version}", name], {
    encoding: "utf8",
  });
  if (out.error !== undefined || out.status !== 0) return null;
  const match = /^install ok installed (\S+)/.exec(out.stdout);
  return match === null ? null : match[1];
}

/**
 * Returns the installed OpenBLAS version, or null after a warning. Without OpenBLAS, Debian's
 * torch falls back to the reference BLAS (about 2 GFLOP/s). The measured matmul rate decides
 * whether a comparison counts, and this check only explains a low rate.
 */
export function checkBlas(): string | null {
  const version = debianPackageVersion(BLAS_PACKAGE);
  if (version === null) {
    log.warn(
      `${BLAS_PACKAGE} is not installed (or dpkg is missing), so Debian's torch may use the ` +
        `reference BLAS at about 2 GFLOP/s. Install it with: apt-get install -y ${BLAS_PACKAGE}`,
    );
  }
  return version;
}

export function machineInfo() {
  const cpuinfo = readFileSync("/proc/cpuinfo", "utf8");
  const blas = spawnSync("readlink", ["-f", "/etc/alternatives/libblas.so.3-x86_64-linux-gnu"], {
    encoding: "utf8",
  });
  return {
    cpu_model: /^model name\s*:\s*(.+)$/m.exec(cpuinfo)?.[1] ?? "unknown",
    cores: cpus().length,
    memory_bytes: totalmem(),
    os: `${osType()} ${osRelease()}`,
    blas_library: blas.status === 0 ? blas.stdout.trim() : null,
    [BLAS_PACKAGE]: checkBlas(),
  };
}

/** Returns the 1-minute load average: runnable processes, averaged over a minute. */
export function loadAverage(): number {
  return loadavg()[0];
}

const clockTicksPerSecond = (() => {
  const out = spawnSync("getconf", ["CLK_TCK"], { encoding: "utf8" });
  const value = Number(out.stdout);
  return out.status === 0 && value > 0 ? value : 100;
})();

/** Busy CPU seconds of the whole machine so far, from the first line of /proc/stat. */
export function machineBusySeconds(): number {
  const fields = readFileSync("/proc/stat", "utf8").split("\n")[0].trim().split(/\s+/);
  // user nice system idle iowait irq softirq steal: all but idle and iowait are busy.
  const ticks = fields.slice(1, 9).map(Number);
  const busy = ticks[0] + ticks[1] + ticks[2] + ticks[5] + ticks[6];
  return busy / clockTicksPerSecond;
}
