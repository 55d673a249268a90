// The llama2.c converter, checked end to end: stories260K converted to Hugging Face layout must
// continue a prompt greedily with exactly the tokens of a float64 port of llama2.c's run.c
// (scripts/reference/stories260k_greedy.py), whose RoPE rotates interleaved pairs, so the
// q/k row permutation of the converter is checked against an independent formulation.

import { spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { generate } from "../src/generate/generate.js";
import { DEFAULT_SAMPLING } from "../src/generate/sampling.js";
import { convertLlama2c, permuteForRotateHalf, readLlama2cHeader } from "../src/model/llama2c.js";
import { loadCausalLM } from "../src/model/load.js";

const BIN = join(
  import.meta.dirname,
  "..",
  "..",
  "shared",
  "data",
  "stories260K",
  "stories260K.bin",
);
const expected = JSON.parse(
  readFileSync(join(import.meta.dirname, "fixtures", "stories260k-greedy.json"), "utf8"),
);

describe("permuteForRotateHalf", () => {
  it("moves interleaved rows to half-split order per head", () => {
    // 2 heads of dim 4, one column: rows [a0 a1 a2 a3 | b0 b1 b2 b3]
    const w = Float32Array.from([0, 1, 2, 3, 10, 11, 12, 13]);
    expect(Array.from(permuteForRotateHalf(w, 2, 8, 1))).toEqual([0, 2, 1, 3, 10, 12, 11, 13]);
  });
});

describe("readLlama2cHeader", () => {
  const header = (magic: string, rest: number[] = []) => {
    const bytes = Buffer.alloc(28);
    bytes.write(magic, 0, "latin1");
    rest.forEach((v, i) => bytes.writeInt32LE(v, 4 + 4 * i));
    return bytes;
  };

  it.each([
    ["GGUF", /x\.bin is a GGUF file \(llama\.cpp\), not a llama2\.c checkpoint/],
    ["24ka", /x\.bin is in llama2\.c's versioned export format .* export\.py --version 0/],
  ])("names a %s file instead of reading its bytes as a header", (magic, error) => {
    expect(() => readLlama2cHeader(header(magic, [3, 0, 0, 0, 0, 0]), "x.bin")).toThrow(error);
  });

  it("reports an implausible header in words", () => {
    const bytes = Buffer.alloc(28);
    [64, 172, 5, 7, 7, 512, 0].forEach((v, i) => bytes.writeInt32LE(v, 4 * i));
    expect(() => readLlama2cHeader(bytes, "x.bin")).toThrow(
      /first 28 bytes read as dim 64, 5 layers, 7 heads and sequence length 0/,
    );
  });
});

describe.skipIf(!existsSync(BIN))("stories260K", () => {
  const out = mkdtempSync(join(tmpdir(), "midpo-stories-"));
  afterAll(() => rmSync(out, { recursive: true, force: true }));

  it("converted config matches the reference", () => {
    convertLlama2c(BIN, out);
    const config = JSON.parse(readFileSync(join(out, "config.json"), "utf8"));
    for (const [key, value] of Object.entries(expected.hf_config)) {
      if (value !== null) expect(config[key], key).toEqual(value);
    }
  });

  it("prompt logprobs and greedy tokens equal llama2.c's", async () => {
    const model = loadCausalLM(out);
    const [lp] = await model.tokenLogprobs([expected.prompt]);
    lp.forEach((v, i) => expect(Math.abs(v - expected.prompt_logprobs[i])).toBeLessThan(1e-4));

    const [gen] = await generate(model, [expected.prompt], {
      ...DEFAULT_SAMPLING,
      maxNewTokens: expected.max_new_tokens,
      seed: 0,
      eosTokenIds: [],
    });
    expect(gen.tokens).toEqual(expected.new_tokens);
    await model.release();
  });
});

describe.skipIf(!existsSync(BIN))("midpo convert-llama2c", () => {
  const work = mkdtempSync(join(tmpdir(), "midpo-convert-out-"));
  afterAll(() => rmSync(work, { recursive: true, force: true }));
  const bin = join(import.meta.dirname, "..", "bin", "midpo.js");

  it.each([
    { out: "a file", path: "taken", message: /taken already exists and is not a directory/ },
    { out: "under a file", path: "taken/model", message: /part of this path is a file/ },
  ])("names an output path $out", ({ path, message }) => {
    writeFileSync(join(work, "taken"), "");
    const run = spawnSync(
      process.execPath,
      [bin, "convert-llama2c", "--input", BIN, "--out", join(work, path)],
      { encoding: "utf8" },
    );
    expect(run.status).toBe(1);
    expect(run.stderr).toMatch(message);
    expect(run.stderr).not.toMatch(/internal error/);
  });
});

if (!existsSync(BIN)) {
  console.warn(`skipping stories260K tests: ${BIN} not found`);
}
