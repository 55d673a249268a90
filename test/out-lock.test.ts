// The output-directory lock: rejected while another live process has it, taken over from a
// process that has ended, released when its owner is done.

import { spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { lockOutDir } from "../src/train/out-lock.js";

const work = mkdtempSync(join(tmpdir(), "midpo-lock-"));
afterAll(() => rmSync(work, { recursive: true, force: true }));

describe("lockOutDir", () => {
  it("takes and releases the lock", () => {
    const dir = join(work, "new", "out");
    const release = lockOutDir(dir);
    expect(readFileSync(join(dir, ".midpo.lock"), "utf8")).toBe(`${process.pid}\n`);
    release();
    expect(existsSync(join(dir, ".midpo.lock"))).toBe(false);
  });

  it("rejects a live holder", () => {
    const dir = join(work, "held");
    lockOutDir(dir)();
    // Process 1 is alive on every Linux machine.
    writeFileSync(join(dir, ".midpo.lock"), "1\n");
    expect(() => lockOutDir(dir)).toThrow(/held is in use by process 1, .* delete .*\.midpo\.lock/);
  });

  it("takes over a stale lock", () => {
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
