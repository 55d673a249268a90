// `midpo generate`: how much decoded text it may stream before stop strings are settled, and
// its prompt flags.

import { spawnSync } from "node:child_process";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { streamableLength } from "../src/cli/generate.js";

describe("streamableLength", () => {
  it("streams everything without stop strings", () => {
    expect(streamableLength("first gather", [])).toBe(12);
  });

  it("holds back one character less than the longest stop string", () => {
    expect(streamableLength("first gather the t", ["tools"])).toBe(14);
  });

  it("ends before a stop string that arrived whole", () => {
    // "the" first occurs inside "gather", at 8, and the token "ther" brought it whole.
    expect(streamableLength("first gather", ["the"])).toBe(8);
    expect(streamableLength("first ga", ["the", "ga"])).toBe(6);
  });

  it("holds back an incomplete UTF-8 character", () => {
    expect(streamableLength("caf\uFFFD", [])).toBe(3);
  });

  it("never returns a negative length", () => {
    expect(streamableLength("ab", ["a long stop string"])).toBe(0);
  });
});

describe("midpo generate prompt flags", () => {
  it("rejects both prompt flags", () => {
    const bin = join(import.meta.dirname, "..", "bin", "midpo.js");
    const model = join(import.meta.dirname, "fixtures", "tiny", "llama-gqa");
    const args = ["generate", "--model", model, "--prompt", "hi", "--prompt-ids", "1,2"];
    const run = spawnSync(process.execPath, [bin, ...args], { encoding: "utf8" });
    expect(run.status).toBe(1);
    expect(run.stderr).toMatch(/--prompt TEXT or --prompt-ids IDS, not both/);
    expect(run.stdout).toBe("");
  });
});
