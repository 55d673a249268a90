// Readers and validation on files the tests write: every container (JSONL, JSON array, Parquet,
// each plain and gzip-compressed, and dataset directories), then broken inputs, each of which
// must give its documented problem while every other record is still read.

import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { gzipSync } from "node:zlib";
import { parquetMetadata } from "hyparquet";
import { parquetWriteBuffer } from "hyparquet-writer";
import { afterAll, describe, expect, it } from "vitest";
import { loadDataset, type LoadedDataset } from "../src/data/load.js";
import { formatLocation } from "../src/data/types.js";
import { MidpoError } from "../src/errors.js";

const dir = mkdtempSync(join(tmpdir(), "midpo-data-read-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

let fileCount = 0;

/** Writes `content` to a new file named `name` in its own folder, and returns its path. */
function writeTemp(name: string, content: string | Uint8Array): string {
  const folder = join(dir, `f${fileCount++}`);
  mkdirSync(folder);
  const path = join(folder, name);
  writeFileSync(path, content);
  return path;
}

function pku(i: number, overrides: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    prompt: `question ${i}`,
    response_0: `answer A ${i}`,
    response_1: `answer B ${i}`,
    is_response_0_safe: true,
    is_response_1_safe: i % 2 === 0,
    better_response_id: i % 2,
    safer_response_id: 0,
    severity: i,
    ...overrides,
  };
}

function jsonl(values: readonly unknown[]): string {
  return values.map((value) => JSON.stringify(value)).join("\n") + "\n";
}

const RECORDS = [pku(0), pku(1), pku(2), pku(3), pku(4)];

function pkuParquet(records: readonly Record<string, unknown>[], rowGroupSize = 2): Uint8Array {
  const column = (name: string) => records.map((record) => record[name]);
  const buffer = parquetWriteBuffer({
    columnData: [
      { name: "prompt", data: column("prompt"), type: "STRING" },
      { name: "response_0", data: column("response_0"), type: "STRING" },
      { name: "response_1", data: column("response_1"), type: "STRING" },
      { name: "is_response_0_safe", data: column("is_response_0_safe"), type: "BOOLEAN" },
      { name: "is_response_1_safe", data: column("is_response_1_safe"), type: "BOOLEAN" },
      {
        name: "better_response_id",
        data: column("better_response_id").map((id) => BigInt(id as number)),
        type: "INT64",
      },
      { name: "safer_response_id", data: column("safer_response_id"), type: "INT32" },
      { name: "severity", data: column("severity"), type: "INT32" },
    ],
    rowGroupSize,
    codec: "UNCOMPRESSED",
  });
  return new Uint8Array(buffer);
}

/** Checks that the loaded records are RECORDS, in order, with their labels and extras. */
function expectAllRecords(loaded: LoadedDataset): void {
  expect(loaded.summary.recordsKept).toBe(RECORDS.length);
  expect(loaded.summary.recordsDropped).toBe(0);
  expect(loaded.pku.map((record) => record.prompt)).toEqual(RECORDS.map((record) => record.prompt));
  expect(loaded.pku.map((record) => record.better_response_id)).toEqual([0, 1, 0, 1, 0]);
  expect(loaded.pku.map((record) => record.is_response_1_safe)).toEqual([
    true,
    false,
    true,
    false,
    true,
  ]);
  expect(loaded.pku[3].extras).toEqual({ severity: 3 });
}

describe("file formats", () => {
  it("reads JSONL with 1-based line numbers", async () => {
    const path = writeTemp(
      "pku.jsonl",
      jsonl(RECORDS.slice(0, 2)) + "\n" + jsonl(RECORDS.slice(2)),
    );
    const loaded = await loadDataset(path);

    expectAllRecords(loaded);
    expect(loaded.pku.map((record) => record.source.line)).toEqual([1, 2, 4, 5, 6]);
    expect(loaded.pku[0].source.file).toBe(path);
    expect(loaded.summary.files[0]).toMatchObject({ format: "jsonl", gzip: false, schema: "pku" });
  });

  it("reads gzip JSONL by extension and by magic bytes", async () => {
    const bytes = gzipSync(jsonl(RECORDS));
    for (const name of ["pku.jsonl.gz", "pku.jsonl"]) {
      const loaded = await loadDataset(writeTemp(name, bytes));
      expectAllRecords(loaded);
      expect(loaded.summary.files[0].gzip).toBe(true);
      expect(loaded.pku[4].source.line).toBe(5);
    }
  });

  it("reads JSON arrays with 0-based rows", async () => {
    for (const [name, content] of [
      ["pku.json", JSON.stringify(RECORDS)],
      ["pku.json.gz", gzipSync(JSON.stringify(RECORDS, null, 2))],
    ] as const) {
      const loaded = await loadDataset(writeTemp(name, content));
      expectAllRecords(loaded);
      expect(loaded.summary.files[0].format).toBe("json");
      expect(loaded.pku.map((record) => record.source.row)).toEqual([0, 1, 2, 3, 4]);
    }
  });

  it("says rows count from 0", () => {
    expect(formatLocation({ file: "a.json", row: 12 })).toBe("a.json row 12 (from 0)");
    expect(formatLocation({ file: "a.jsonl", line: 3 })).toBe("a.jsonl:3");
  });

  it("reads a .json file of JSON lines as JSONL", async () => {
    const loaded = await loadDataset(writeTemp("pku.json", jsonl(RECORDS)));
    expectAllRecords(loaded);
    expect(loaded.summary.files[0].format).toBe("jsonl");
  });

  it("reads Parquet across row groups", async () => {
    const bytes = pkuParquet(RECORDS);
    expect(parquetMetadata(bytes.buffer as ArrayBuffer).row_groups.length).toBe(3);

    for (const [name, content] of [
      ["pku.parquet", bytes],
      ["pku.parquet.gz", gzipSync(bytes)],
    ] as const) {
      const loaded = await loadDataset(writeTemp(name, content));
      expectAllRecords(loaded);
      expect(loaded.summary.files[0].format).toBe("parquet");
      expect(loaded.pku.map((record) => record.source.row)).toEqual([0, 1, 2, 3, 4]);
    }
  });
});

describe("dataset directories", () => {
  function writeDataset(): string {
    const root = join(dir, `dataset${fileCount++}`);
    mkdirSync(join(root, "data", "Alpaca-7B"), { recursive: true });
    writeFileSync(join(root, "README.md"), "# card\n");
    writeFileSync(
      join(root, "data", "train-00000-of-00002.parquet"),
      pkuParquet(RECORDS.slice(0, 2)),
    );
    writeFileSync(
      join(root, "data", "train-00001-of-00002.parquet"),
      pkuParquet(RECORDS.slice(2, 3)),
    );
    writeFileSync(join(root, "data", "Alpaca-7B", "test.jsonl"), jsonl(RECORDS.slice(3)));
    writeFileSync(join(root, "data", "dataset_info.json"), "{}");
    return root;
  }

  it("defaults to the train split", async () => {
    const loaded = await loadDataset(writeDataset());
    expect(loaded.summary.files.map((file) => file.file.split("/").pop())).toEqual([
      "train-00000-of-00002.parquet",
      "train-00001-of-00002.parquet",
    ]);
    expect(loaded.pku.map((record) => record.prompt)).toEqual([
      "question 0",
      "question 1",
      "question 2",
    ]);
  });

  it("selects a split by folder or name", async () => {
    const loaded = await loadDataset(writeDataset(), { split: "test" });
    expect(loaded.pku.map((record) => record.prompt)).toEqual(["question 3", "question 4"]);
    expect(loaded.pku[0].source.line).toBe(1);
  });

  it("rejects a split that is not there", async () => {
    await expect(loadDataset(writeDataset(), { split: "validation" })).rejects.toThrow(
      /no files of split "validation" \(splits found: train, test\)/,
    );
  });

  it("asks for a split when none is train", async () => {
    const root = join(dir, `dataset${fileCount++}`);
    mkdirSync(root);
    writeFileSync(join(root, "test.jsonl"), jsonl(RECORDS.slice(0, 1)));
    writeFileSync(join(root, "validation.jsonl"), jsonl(RECORDS.slice(1, 2)));
    await expect(loadDataset(root)).rejects.toThrow(/splits test, validation\. Choose one/);
  });
});

describe("broken records", () => {
  it("counts each problem and keeps every other record", async () => {
    const lines = [
      JSON.stringify(pku(0)), // 1: valid
      JSON.stringify(pku(1, { better_response_id: "1" })), // 2: wrong type
      JSON.stringify(pku(2, { is_response_0_safe: "true" })), // 3: wrong type
      JSON.stringify(pku(3, { response_1: undefined })), // 4: missing field
      JSON.stringify(pku(4, { prompt: "  \n" })), // 5: empty prompt
      JSON.stringify(pku(5, { response_1: "answer A 5 " })), // 6: identical responses
      JSON.stringify(pku(6, { safer_response_id: 2 })), // 7: id out of range
      JSON.stringify(pku(0, { response_0: "answer B 0", response_1: "answer A 0" })), // 8: duplicate
      "[1, 2]", // 9: not an object
      "", // 10: blank, skipped
      JSON.stringify(pku(7)), // 11: valid
      JSON.stringify(pku(8)).slice(0, 40), // 12: truncated line, no newline at the end
    ];
    const path = writeTemp("broken.jsonl", lines.join("\n"));
    const loaded = await loadDataset(path);
    const { counts, examples } = loaded.summary.problems;

    expect(counts).toEqual({
      wrong_type: 3,
      missing_field: 1,
      empty_text: 1,
      identical_responses: 1,
      id_out_of_range: 1,
      duplicate: 1,
      unparseable_line: 1,
    });
    expect(loaded.pku.map((record) => record.source.line)).toEqual([1, 11]);
    expect(loaded.summary.recordsRead).toBe(11);
    expect(loaded.summary.recordsKept).toBe(2);
    expect(loaded.summary.recordsDropped).toBe(9);

    const lineOf = (reason: string) =>
      examples.filter((example) => example.reason === reason).map((example) => example.source.line);
    expect(lineOf("wrong_type")).toEqual([2, 3, 9]);
    expect(lineOf("missing_field")).toEqual([4]);
    expect(lineOf("empty_text")).toEqual([5]);
    expect(lineOf("identical_responses")).toEqual([6]);
    expect(lineOf("id_out_of_range")).toEqual([7]);
    expect(lineOf("duplicate")).toEqual([8]);
    expect(lineOf("unparseable_line")).toEqual([12]);
    expect(examples.find((e) => e.reason === "duplicate")?.detail).toContain(`${path}:1`);
    expect(examples.find((e) => e.reason === "id_out_of_range")?.detail).toContain(
      '"safer_response_id" is 2',
    );
  });

  it("keeps the location of every problem", async () => {
    const bad = Array.from({ length: 8 }, (_, i) => pku(i, { prompt: 5 }));
    const path = writeTemp("many.jsonl", jsonl([pku(100), ...bad]));
    const loaded = await loadDataset(path);
    const lines = loaded.summary.problems.examples.map((e) => e.source.line);
    expect(loaded.summary.problems.counts.wrong_type).toBe(8);
    expect(lines).toEqual([2, 3, 4, 5, 6, 7, 8, 9]);
  });

  it("raises in strict mode with file, line and reason", async () => {
    const path = writeTemp(
      "strict.jsonl",
      jsonl([pku(0), pku(1, { better_response_id: 3 }), pku(2)]),
    );
    const error = await loadDataset(path, { strict: true }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(MidpoError);
    expect((error as Error).message).toContain(`${path}:2: id_out_of_range`);
  });

  it("flags invalid UTF-8 bytes and lone surrogates", async () => {
    const valid = Buffer.from(JSON.stringify(pku(0, { prompt: "keeps \uFFFD as text" })) + "\n");
    const badBytes = Buffer.concat([
      Buffer.from('{"prompt": "bad '),
      Buffer.from([0xc3, 0x28, 0xff]),
      Buffer.from(
        `", ${JSON.stringify(pku(1))
          .slice(1, -1)
          .replace(/"prompt":"[^"]*",/, "")}}\n`,
      ),
    ]);
    const surrogate = Buffer.from(
      JSON.stringify(pku(2)).replace("answer A 2", "answer \\ud800 A") + "\n",
    );
    const path = writeTemp("utf8.jsonl", Buffer.concat([valid, badBytes, surrogate, valid]));
    const loaded = await loadDataset(path);

    expect(loaded.summary.problems.counts).toEqual({ invalid_utf8: 2, duplicate: 1 });
    const invalid = loaded.summary.problems.examples.filter((e) => e.reason === "invalid_utf8");
    expect(invalid.map((e) => e.source.line)).toEqual([2, 3]);
    expect(invalid[0].detail).toContain("not valid UTF-8");
    expect(invalid[1].detail).toContain("lone UTF-16 surrogate");
    expect(loaded.pku.map((record) => record.prompt)).toEqual(["keeps \uFFFD as text"]);
    expect(loaded.summary.recordsRead).toBe(4);
  });

  it("flags invalid UTF-8 in Parquet strings", async () => {
    const buffer = parquetWriteBuffer({
      columnData: [
        {
          name: "prompt",
          data: [Buffer.from("fine"), Buffer.from([0x62, 0x61, 0x64, 0xfe]), Buffer.from("ok")],
          type: "BYTE_ARRAY",
        },
        { name: "chosen", data: ["a", "b", "c"], type: "STRING" },
        { name: "rejected", data: ["x", "y", "z"], type: "STRING" },
      ],
    });
    const loaded = await loadDataset(writeTemp("pairs.parquet", new Uint8Array(buffer)));

    expect(loaded.summary.problems.counts).toEqual({ invalid_utf8: 1 });
    expect(loaded.summary.problems.examples[0].source.row).toBe(1);
    expect(loaded.pairwise.map((record) => record.prompt)).toEqual(["fine", "ok"]);
  });
});

describe("broken files", () => {
  it("reports a truncated gzip stream after the lines it held", async () => {
    const many = Array.from({ length: 400 }, (_, i) =>
      pku(i, { prompt: `question ${i} ${"x".repeat(200)}` }),
    );
    const bytes = gzipSync(jsonl(many));
    const path = writeTemp("cut.jsonl.gz", bytes.subarray(0, Math.floor(bytes.length / 2)));
    const loaded = await loadDataset(path);

    expect(loaded.summary.problems.counts).toEqual({ bad_gzip: 1 });
    const problem = loaded.summary.problems.examples[0];
    const kept = loaded.summary.recordsKept;
    expect(kept).toBeGreaterThan(0);
    expect(kept).toBeLessThan(400);
    expect(problem.source.line).toBe(kept + 1);
    expect(problem.detail).toContain(`lines from ${kept + 1} on are lost`);
    expect(loaded.summary.recordsRead).toBe(kept);
    expect(loaded.pku.map((record) => record.source.line)).toEqual(
      Array.from({ length: kept }, (_, i) => i + 1),
    );
  });

  it("reports corrupt gzip data and a .gz name on plain text", async () => {
    const corrupt = Buffer.from(gzipSync(jsonl(RECORDS)));
    corrupt.fill(0xff, 10, 30);
    const notGzip = jsonl(RECORDS);
    for (const [name, content] of [
      ["corrupt.jsonl.gz", corrupt],
      ["plain.jsonl.gz", notGzip],
      ["corrupt.json.gz", corrupt],
    ] as const) {
      const path = writeTemp(name, content);
      const loaded = await loadDataset(path);
      expect(loaded.summary.problems.counts).toEqual({ bad_gzip: 1 });
      expect(loaded.summary.problems.examples[0].source.file).toBe(path);
      expect(loaded.summary.recordsKept).toBe(0);
    }
  });

  it("raises a bad gzip in strict mode", async () => {
    const bytes = gzipSync(jsonl(RECORDS));
    const path = writeTemp("strict.jsonl.gz", bytes.subarray(0, bytes.length - 12));
    await expect(loadDataset(path, { strict: true })).rejects.toThrow(/bad_gzip/);
  });

  it("reports a Parquet file without a valid footer", async () => {
    const bytes = pkuParquet(RECORDS);
    const path = writeTemp("cut.parquet", bytes.subarray(0, bytes.length - 20));
    const loaded = await loadDataset(path);

    expect(loaded.summary.problems.counts).toEqual({ bad_parquet: 1 });
    expect(loaded.summary.problems.examples[0].detail).toContain("Parquet footer");
    expect(loaded.summary.recordsRead).toBe(0);
    await expect(loadDataset(path, { strict: true })).rejects.toThrow(/cut\.parquet: bad_parquet/);
  });

  it("skips a corrupt row group and reads the others", async () => {
    const bytes = pkuParquet(RECORDS);
    const metadata = parquetMetadata(bytes.buffer as ArrayBuffer);
    const chunk = metadata.row_groups[1].columns[0].meta_data;
    const offset = Number(chunk?.dictionary_page_offset ?? chunk?.data_page_offset);
    const corrupt = Buffer.from(bytes);
    corrupt.fill(0xff, offset, offset + 16);
    const loaded = await loadDataset(writeTemp("group.parquet", corrupt));

    expect(loaded.summary.problems.counts).toEqual({ bad_parquet: 1 });
    const problem = loaded.summary.problems.examples[0];
    expect(problem.source.row).toBe(2);
    expect(problem.detail).toContain("rows 2..3");
    expect(loaded.pku.map((record) => record.source.row)).toEqual([0, 1, 4]);
    expect(loaded.summary.recordsRead).toBe(3);
  });
});
