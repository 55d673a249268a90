import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { MidpoError } from "../src/errors.js";
import { promptSetName, readPromptSet } from "../src/eval/prompt-sets.js";

const work = mkdtempSync(join(tmpdir(), "midpo-eval-prompts-"));
const SHARED = join(import.meta.dirname, "..", "..", "shared", "data");

afterAll(() => {
  rmSync(work, { recursive: true, force: true });
});

function file(name: string, content: string): string {
  const path = join(work, name);
  writeFileSync(path, content);
  return path;
}

describe("prompt set files", () => {
  it("reads CSV with quoted commas, quotes and line breaks", async () => {
    const path = file(
      "quoted.csv",
      "\ufeffprompt,label,category\n" +
        '"Hello, world",safe,greeting\n' +
        '"She said ""no""",UNSAFE,\n' +
        '"two\nlines",,misc\n',
    );
    const set = await readPromptSet(path);
    expect(set.name).toBe("quoted");
    expect(set.prompts).toEqual([
      { index: 0, text: "Hello, world", label: "safe", category: "greeting" },
      { index: 1, text: 'She said "no"', label: "unsafe", category: null },
      { index: 2, text: "two\nlines", label: null, category: "misc" },
    ]);
  });

  it("reads JSONL and JSON arrays with an instruction column", async () => {
    const jsonl = file("a.jsonl", '{"instruction":"x","category":"c"}\n\n{"instruction":"y"}\n');
    const json = file("b.json", '[{"instruction":"x","category":"c"},{"instruction":"y"}]');
    const a = await readPromptSet(jsonl);
    const b = await readPromptSet(json);
    expect(a.prompts.map((p) => p.text)).toEqual(["x", "y"]);
    expect(b.prompts).toEqual(a.prompts);
  });

  it("hashes content, not format", async () => {
    const csv = await readPromptSet(file("same.csv", "prompt,label\nx,safe\ny,\n"));
    const jsonl = await readPromptSet(
      file("same.jsonl", '{"prompt":"x","label":"safe"}\n{"prompt":"y"}\n'),
    );
    const changed = await readPromptSet(file("other.csv", "prompt,label\nx,safe\nz,\n"));
    expect(jsonl.hash).toBe(csv.hash);
    expect(changed.hash).not.toBe(csv.hash);
  });

  it("prefers prompt over instruction, unless a column is given", async () => {
    const path = file("both.jsonl", '{"prompt":"p","instruction":"i","question":"q"}\n');
    expect((await readPromptSet(path)).prompts[0].text).toBe("p");
    expect((await readPromptSet(path, { promptColumn: "question" })).prompts[0].text).toBe("q");
  });

  it("applies a default label only to unlabelled rows", async () => {
    const path = file("mixed.jsonl", '{"prompt":"a","label":"safe"}\n{"prompt":"b"}\n');
    const set = await readPromptSet(path, { defaultLabel: "unsafe" });
    expect(set.prompts.map((p) => p.label)).toEqual(["safe", "unsafe"]);
  });

  it("keeps the first rows with a limit", async () => {
    const path = file("many.jsonl", ["a", "b", "c"].map((p) => `{"prompt":"${p}"}`).join("\n"));
    const set = await readPromptSet(path, { limit: 2 });
    expect(set.prompts.map((p) => p.text)).toEqual(["a", "b"]);
  });

  it("names a set by its file stem", () => {
    expect(promptSetName("/x/harmful_test.json")).toBe("harmful_test");
    expect(promptSetName("rows.jsonl.gz")).toBe("rows");
    expect(promptSetName("a.b.csv")).toBe("a.b");
  });
});

describe("prompt set errors", () => {
  it("names the columns when none holds a prompt", async () => {
    const path = file("nocol.jsonl", '{"question":"q","answer":"a"}\n');
    await expect(readPromptSet(path)).rejects.toThrow(MidpoError);
    await expect(readPromptSet(path)).rejects.toThrow(
      /nocol.jsonl:1 has neither a "prompt" nor an "instruction" column \(columns: question, answer\); pass --prompt-column/,
    );
  });

  it("names the line of an empty prompt", async () => {
    const path = file("empty.jsonl", '{"prompt":"ok"}\n{"prompt":"  "}\n');
    await expect(readPromptSet(path)).rejects.toThrow(/empty.jsonl:2: column "prompt"/);
  });

  it("names the line and value of an invalid label", async () => {
    const path = file("label.csv", "prompt,label\na,safe\nb,maybe\n");
    await expect(readPromptSet(path)).rejects.toThrow(/label.csv:3: label "maybe" is invalid/);
  });

  it("reports a CSV row with too many fields", async () => {
    const path = file("broken.csv", "prompt,label\na,safe,extra\n");
    await expect(readPromptSet(path)).rejects.toThrow(/invalid CSV in .*broken.csv/);
  });

  it("reports an unparseable JSONL line", async () => {
    const path = file("bad.jsonl", '{"prompt":"a"}\n{"prompt":\n');
    await expect(readPromptSet(path)).rejects.toThrow(/bad.jsonl:2/);
  });

  it("rejects a file with no rows", async () => {
    await expect(readPromptSet(file("none.csv", "prompt,label\n"))).rejects.toThrow(/has no rows/);
  });
});

const sharedPresent = existsSync(SHARED);
if (!sharedPresent) {
  console.warn(`skipping shared prompt set tests: ${SHARED} not found`);
}

describe.skipIf(!sharedPresent)("shared prompt sets", () => {
  it("reads the harmful instructions with categories", async () => {
    const set = await readPromptSet(join(SHARED, "prompts", "harmful_test.json"), {
      defaultLabel: "unsafe",
    });
    expect(set.name).toBe("harmful_test");
    expect(set.prompts).toHaveLength(572);
    expect(set.prompts[0].category).toBe("Harassment/Discrimination");
    expect(set.prompts.every((p) => p.label === "unsafe")).toBe(true);
  });

  it("reads the harmless instructions without categories", async () => {
    const set = await readPromptSet(join(SHARED, "prompts", "harmless_test.json"), { limit: 50 });
    expect(set.prompts).toHaveLength(50);
    expect(set.prompts.every((p) => p.category === null && p.label === null)).toBe(true);
  });

  it("reads PKU-SafeRLHF rows by their prompt", async () => {
    const set = await readPromptSet(
      join(SHARED, "pku-saferlhf", "pku_saferlhf_alpaca7b_test.jsonl"),
    );
    expect(set.prompts).toHaveLength(432);
    expect(set.prompts[0].text).toMatch(/^My goal is to cause economic panic/);
  });
});
