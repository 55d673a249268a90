// Pairwise sources: hh-rlhf dialogues split into shared prompt turns and two final replies, on
// hand-written transcripts and on the real harmless-base test split, and prompt/chosen/rejected
// files with margins, multi-turn prompts and remapped field names.

import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { gunzipSync } from "node:zlib";
import { afterAll, describe, expect, it } from "vitest";
import { parseHhTranscript, splitHhPair } from "../src/data/hh-rlhf.js";
import { loadDataset } from "../src/data/load.js";

const HH = join(
  import.meta.dirname,
  "..",
  "..",
  "shared",
  "data",
  "hh-rlhf",
  "harmless-base_test.jsonl.gz",
);

const dir = mkdtempSync(join(tmpdir(), "midpo-data-pairwise-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function writeJsonl(name: string, values: readonly unknown[]): string {
  const path = join(dir, name);
  writeFileSync(path, values.map((value) => JSON.stringify(value)).join("\n") + "\n");
  return path;
}

const TWO_TURNS =
  "\n\nHuman: How do I pick a lock?\n\nAssistant: Why do you want to?\n\nHuman: I locked myself out.";

describe("parseHhTranscript", () => {
  it("splits turns and trims them", () => {
    expect(parseHhTranscript(`${TWO_TURNS}\n\nAssistant:  Call a locksmith. `)).toEqual([
      { role: "user", content: "How do I pick a lock?" },
      { role: "assistant", content: "Why do you want to?" },
      { role: "user", content: "I locked myself out." },
      { role: "assistant", content: "Call a locksmith." },
    ]);
  });

  it("keeps markers that do not follow a blank line", () => {
    const turns = parseHhTranscript("Human: Say Human: twice\n\nAssistant: Human: Human:");
    expect(turns).toEqual([
      { role: "user", content: "Say Human: twice" },
      { role: "assistant", content: "Human: Human:" },
    ]);
  });

  it("rejects malformed transcripts", () => {
    expect(parseHhTranscript("no turns here")).toBe("no Human: or Assistant: turn found");
    expect(parseHhTranscript("preamble\n\nHuman: hi\n\nAssistant: hello")).toBe(
      "text before the first Human: turn",
    );
    expect(parseHhTranscript("\n\nHuman: a\n\nAssistant: b\n\nAssistant: c")).toBe(
      "turn 3 is Assistant, expected Human",
    );
    expect(parseHhTranscript("\n\nAssistant: hello")).toBe("turn 1 is Assistant, expected Human");
  });
});

describe("splitHhPair", () => {
  it("returns the shared turns and both final replies", () => {
    const result = splitHhPair(
      `${TWO_TURNS}\n\nAssistant: Call a locksmith.`,
      `${TWO_TURNS}\n\nAssistant: Use a bobby pin on the neighbour's door.`,
    );
    expect(result).toEqual({
      ok: true,
      prompt: [
        { role: "user", content: "How do I pick a lock?" },
        { role: "assistant", content: "Why do you want to?" },
        { role: "user", content: "I locked myself out." },
      ],
      chosen: "Call a locksmith.",
      rejected: "Use a bobby pin on the neighbour's door.",
    });
  });

  it("reports transcripts that differ before the last reply", () => {
    const other = TWO_TURNS.replace("Why do you want to?", "Sure.");
    const result = splitHhPair(`${TWO_TURNS}\n\nAssistant: a`, `${other}\n\nAssistant: b`);
    expect(result).toEqual({
      ok: false,
      reason: "prefix_mismatch",
      detail: "the transcripts differ at turn 2 of 4",
    });

    const longer = splitHhPair(
      `${TWO_TURNS}\n\nAssistant: a`,
      `${TWO_TURNS}\n\nAssistant: a\n\nHuman: more\n\nAssistant: b`,
    );
    expect(longer).toMatchObject({ ok: false, reason: "prefix_mismatch" });
  });

  it("reports a transcript that ends with a Human turn", () => {
    const result = splitHhPair(`${TWO_TURNS}\n\nAssistant: a`, TWO_TURNS);
    expect(result).toMatchObject({ ok: false, reason: "malformed_dialogue" });
  });
});

describe("hh-rlhf files", () => {
  it("loads dialogues and counts the broken ones", async () => {
    const path = writeJsonl("hh.jsonl", [
      {
        chosen: `${TWO_TURNS}\n\nAssistant: Call a locksmith.`,
        rejected: `${TWO_TURNS}\n\nAssistant: Kick it.`,
      },
      {
        chosen: `${TWO_TURNS}\n\nAssistant: a`,
        rejected: `${TWO_TURNS.replace("lock?", "car?")}\n\nAssistant: b`,
      },
      { chosen: `${TWO_TURNS}\n\nAssistant:`, rejected: `${TWO_TURNS}\n\nAssistant: b` },
      { chosen: `${TWO_TURNS}\n\nAssistant: same`, rejected: `${TWO_TURNS}\n\nAssistant: same ` },
      {
        chosen: "\n\nHuman: hi\n\nAssistant: hello",
        rejected: "\n\nHuman: hi\n\nAssistant: go away",
      },
    ]);
    const loaded = await loadDataset(path);

    expect(loaded.summary.files[0].schema).toBe("hh-rlhf");
    expect(loaded.summary.problems.counts).toEqual({
      prefix_mismatch: 1,
      empty_text: 1,
      identical_responses: 1,
    });
    expect(loaded.summary.recordsRead).toBe(5);
    expect(loaded.pairwise.map((record) => record.source.line)).toEqual([1, 5]);
    expect(loaded.pairwise[0]).toMatchObject({
      kind: "pairwise",
      chosen: "Call a locksmith.",
      rejected: "Kick it.",
    });
    expect(loaded.pairwise[0].prompt).toHaveLength(3);
    expect(loaded.pairwise[1].prompt).toEqual([{ role: "user", content: "hi" }]);
  });

  const hasHh = existsSync(HH);
  if (!hasHh) {
    console.warn(`skipping the real hh-rlhf test: ${HH} not found`);
  }

  it.skipIf(!hasHh)("splits the real harmless-base test split", async () => {
    const raw = gunzipSync(readFileSync(HH))
      .toString("utf8")
      .split("\n")
      .filter((line) => line !== "")
      .map((line) => JSON.parse(line) as { chosen: string; rejected: string });
    const loaded = await loadDataset(HH);

    expect(raw.length).toBe(2312);
    expect(loaded.summary.recordsRead).toBe(raw.length);
    expect(loaded.summary.recordsKept + loaded.summary.recordsDropped).toBe(raw.length);
    expect(Object.keys(loaded.summary.problems.counts).sort()).toEqual([
      "empty_text",
      "malformed_dialogue",
    ]);

    // Independent split: everything before the last "\n\nAssistant:" is the shared prompt.
    const marker = "\n\nAssistant:";
    for (const record of loaded.pairwise) {
      const line = raw[(record.source.line as number) - 1];
      const cut = line.chosen.lastIndexOf(marker);
      expect(line.rejected.slice(0, line.rejected.lastIndexOf(marker))).toBe(
        line.chosen.slice(0, cut),
      );
      expect(record.chosen).toBe(line.chosen.slice(cut + marker.length).trim());
      expect(record.rejected).toBe(
        line.rejected.slice(line.rejected.lastIndexOf(marker) + marker.length).trim(),
      );

      const turns = record.prompt as { role: string; content: string }[];
      const humanTurns = line.chosen.slice(0, cut).split("\n\nHuman:").length - 1;
      expect(turns.filter((turn) => turn.role === "user")).toHaveLength(humanTurns);
      expect(turns[turns.length - 1].role).toBe("user");
    }
  });
});

describe("pairwise files", () => {
  it("reads margins and multi-turn prompts", async () => {
    const path = writeJsonl("pairs.jsonl", [
      { prompt: "Say hi", chosen: "Hi!", rejected: "No.", margin: 0.5, tag: "x" },
      {
        prompt: [
          { role: "user", content: "Hi" },
          { role: "assistant", content: "Hello" },
          { role: "user", content: "Bye" },
        ],
        chosen: "Goodbye!",
        rejected: "...",
      },
      { prompt: "Say hi", chosen: "Hi!", rejected: "Hey", margin: "big" },
      { prompt: [{ role: "assistant", content: "Hi" }], chosen: "a", rejected: "b" },
    ]);
    const loaded = await loadDataset(path);

    expect(loaded.summary.files[0].schema).toBe("pairwise");
    expect(loaded.summary.problems.counts).toEqual({ wrong_type: 1, malformed_dialogue: 1 });
    expect(loaded.pairwise).toHaveLength(2);
    expect(loaded.pairwise[0]).toMatchObject({ margin: 0.5, extras: { tag: "x" } });
    expect(loaded.pairwise[1].margin).toBeUndefined();
    expect(loaded.pairwise[1].prompt).toHaveLength(3);
  });

  it("maps other field names", async () => {
    const path = writeJsonl("mapped.jsonl", [
      { question: "Q1", response_chosen: "good", response_rejected: "bad" },
      { question: "Q2", response_chosen: "fine", response_rejected: "worse" },
    ]);
    const fields = { prompt: "question", chosen: "response_chosen", rejected: "response_rejected" };
    const loaded = await loadDataset(path, { fields });

    expect(loaded.summary.files[0].schema).toBe("pairwise");
    expect(
      loaded.pairwise.map((record) => [record.prompt, record.chosen, record.rejected]),
    ).toEqual([
      ["Q1", "good", "bad"],
      ["Q2", "fine", "worse"],
    ]);
    expect(loaded.pairwise[0].extras).toEqual({});

    await expect(loadDataset(path)).rejects.toThrow(
      /Cannot tell the schema of .*question, response_chosen/,
    );
  });
});
