// readJsonl on real files: line ends, a byte-order mark, gzip, and bytes that are not UTF-8.

import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { gzipSync } from "node:zlib";
import { afterAll, describe, expect, it } from "vitest";
import { readJsonl, type JsonlRecord } from "../src/data/jsonl.js";

const dir = mkdtempSync(join(tmpdir(), "midpo-jsonl-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

async function read(name: string, content: string | Buffer): Promise<JsonlRecord[]> {
  const path = join(dir, name);
  writeFileSync(path, content);
  const records: JsonlRecord[] = [];
  for await (const record of readJsonl(path)) records.push(record);
  return records;
}

describe("readJsonl", () => {
  it.each([
    { ends: "\\n", text: '{"a":1}\n\n{"a":2}', lines: [1, 3] },
    { ends: "\\r\\n", text: '{"a":1}\r\n\r\n{"a":2}\r\n', lines: [1, 3] },
    { ends: "a lone \\r", text: '{"a":1}\r{"a":2}\r', lines: [1, 2] },
  ])("numbers lines ending in $ends", async ({ text, lines }) => {
    const records = await read("ends.jsonl", text);
    expect(records.map((r) => r.line)).toEqual(lines);
    expect(records.map((r) => r.value)).toEqual([{ a: 1 }, { a: 2 }]);
  });

  it("skips a byte-order mark", async () => {
    const records = await read("bom.jsonl", '\uFEFF{"a":"é"}\n');
    expect(records).toEqual([{ line: 1, value: { a: "é" } }]);
  });

  it("reads gzip data", async () => {
    const records = await read("data.jsonl.gz", gzipSync('{"a":1}\n{"a":2}\n'));
    expect(records.map((r) => r.value)).toEqual([{ a: 1 }, { a: 2 }]);
  });

  it("rejects bytes that are not UTF-8 with the line", async () => {
    const bytes = Buffer.concat([
      Buffer.from('{"a":1}\n{"a":"'),
      Buffer.of(0xff),
      Buffer.from('"}\n'),
    ]);
    await expect(read("bad.jsonl", bytes)).rejects.toThrow(
      /bad\.jsonl:2 contains bytes that are not valid UTF-8/,
    );
  });

  it("rejects truncated gzip data", async () => {
    const whole = gzipSync('{"a":1}\n'.repeat(1000));
    await expect(read("cut.jsonl.gz", whole.subarray(0, whole.length - 20))).rejects.toThrow(
      /cut\.jsonl\.gz: cannot decompress the gzip data/,
    );
  });
});
