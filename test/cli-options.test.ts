// Parsers of command-line flags: numbers, and the data flags of the training commands.

import { describe, expect, it } from "vitest";
import { Command } from "commander";
import { parseInteger } from "../src/cli/options.js";
import { addDataOptions, dataFrom } from "../src/cli/train-options.js";

describe("parseInteger", () => {
  it.each(["1", "512", "007"])("accepts %s", (text) => {
    expect(parseInteger(1)(text)).toBe(Number(text));
  });

  it.each(["0", "-3", "1.5", "1e3", "0x10", " 7 ", "", "abc", "99999999999999999999"])(
    "rejects %j",
    (text) => {
      expect(() => parseInteger(1)(text)).toThrow(/expected an integer >= 1/);
    },
  );
});

describe("read flags of the training commands", () => {
  const parse = (args: string[]) => {
    const command = addDataOptions(new Command("train-dpo").exitOverride());
    command.parse(args, { from: "user" });
    return dataFrom(command.opts(), ["pairs.jsonl"]).load;
  };

  it("passes --format, --split and --field mappings to the loader", () => {
    expect(parse(["--format", "pairwise", "--split", "test", "--field", "chosen=good"])).toEqual({
      schema: "pairwise",
      split: "test",
      strict: false,
      fields: { chosen: "good" },
    });
  });

  it("rejects a field mapping to an unknown name", () => {
    expect(() => parse(["--field", "choosen=good"])).toThrow(/--field expects NAME=COLUMN/);
  });

  it("gives SFT no read flags", () => {
    const command = addDataOptions(new Command("sft").exitOverride(), false);
    expect(command.options.map((o) => o.long)).not.toContain("--field");
    expect(command.options.map((o) => o.long)).not.toContain("--strict");
    command.parse([], { from: "user" });
    expect(dataFrom(command.opts(), ["a.jsonl"]).load).toEqual({ strict: false });
  });

  it("leaves default flags out", () => {
    expect(parse([])).toEqual({ strict: false });
  });
});
