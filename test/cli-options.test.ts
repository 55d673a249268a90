// Parsers of numeric command-line flags.

import { describe, expect, it } from "vitest";
import { parseInteger } from "../src/cli/options.js";

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
