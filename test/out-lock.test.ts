// The output-directory lock: refused while another live process holds it, taken over from a
// process that has ended, released when the holder is done.

import { spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { lockOutDir } from "../src/train/out-lock.js";

const work = mkdtempSync(join(tmpdir(), "midpo-lock-"));
afterAll(() => rmSync(work, { recursive: true, force: true }));

describe("lockOutDir", () => {
  it("creates the directory, holds the lock and releases it", () => {
    const dir = join(work, "new", "out");
    const release = lockOutDir(dir);
    expect(readFileSync(join(dir, ".midpo.lock"), "utf8")).toBe(`${process.pid}\n`);
    release();
    expect(existsSync(join(dir, ".midpo.lock"))).toBe(false);
  });

  it("refuses a directory that a live process holds, naming it", () => {
    const dir = join(work, "held");
    lockOutDir(dir)();
    // Process 1 is alive on every Linux machine.
    writeFileSync(join(dir, ".midpo.lock"), "1\n");
    expect(() => lockOutDir(dir)).toThrow(/held is in use by process 1, .* delete .*\.midpo\.lock/);
  });

  it("takes over the lock of a process that has ended", () => {
    const dir = join(work, "stale");
    lockOutDir(dir)();
    const ended = spawnSync(process.execPath, ["-e", "process.stdout.write(String(process.pid))"], {
      encoding: "utf8",
    });
    writeFileSync(join(dir, ".midpo.lock"), `${ended.stdout}\n`);
    const release = lockOutDir(dir);
    expect(readFileSync(join(dir, ".midpo.lock"), "utf8")).toBe(`${process.pid}\n`);
    release();
  });
});
