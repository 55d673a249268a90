// A lock file in an output directory, so that two processes do not train into the same one,
// because their checkpoints and metrics would interleave. A lock whose process has ended, such as
// one left by a killed run, is taken over.

import { closeSync, mkdirSync, openSync, readFileSync, rmSync, writeSync } from "node:fs";
import { join } from "node:path";
import { MidpoError } from "../errors.js";
import { isRunning } from "../process.js";

const LOCK_FILE = ".midpo.lock";

/**
 * Takes the lock of `dir`, creating the directory if needed, and returns the function that
 * releases it. Throws a MidpoError naming the other process when a live one has it.
 */
export function lockOutDir(dir: string): () => void {
  mkdirSync(dir, { recursive: true });
  const path = join(dir, LOCK_FILE);
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      const fd = openSync(path, "wx");
      writeSync(fd, `${process.pid}\n`);
      closeSync(fd);
      return () => rmSync(path, { force: true });
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== "EEXIST") throw error;
    }
    const holder = readHolder(path);
    // NOTE: a lock file that another process has created but not yet written reads as no
    // holder and is taken over. Two runs started within that instant can both proceed.
    if (holder !== undefined && holder !== process.pid && isRunning(holder)) {
      throw new MidpoError(
        `${dir} is in use by process ${holder}, which is writing to it. Wait for it to end, ` +
          `or choose another --out. If no midpo process is running, delete ${path}.`,
      );
    }
    rmSync(path, { force: true });
  }
  throw new MidpoError(`failed to take the lock ${path}; delete it if no midpo process is running`);
}

/** Returns the process id written in a lock file, or undefined when it is gone or empty. */
function readHolder(path: string): number | undefined {
  try {
    const pid = Number.parseInt(readFileSync(path, "utf8"), 10);
    return Number.isInteger(pid) ? pid : undefined;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw error;
  }
}
