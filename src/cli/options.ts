// Parsers for numeric CLI flags that name the flag and the bad value on error.

import { InvalidArgumentError } from "commander";

export function parseInteger(min: number) {
  return (value: string): number => {
    // Decimal digits only: Number() would also take "1e3", "0x10" and " 7 ".
    const n = /^-?\d+$/.test(value) ? Number(value) : Number.NaN;
    if (!Number.isSafeInteger(n) || n < min) {
      throw new InvalidArgumentError(`expected an integer >= ${min}, got "${value}"`);
    }
    return n;
  };
}

export function parseNumber(min: number, max = Infinity) {
  return (value: string): number => {
    const n = Number(value);
    if (value.trim() === "" || !Number.isFinite(n) || n < min || n > max) {
      throw new InvalidArgumentError(`expected a number in [${min}, ${max}], got "${value}"`);
    }
    return n;
  };
}

export function collect(value: string, previous: string[] = []): string[] {
  return [...previous, value];
}

export function parseIdList(value: string): number[] {
  const ids = value
    .split(/[\s,]+/)
    .filter((s) => s !== "")
    .map(Number);
  if (ids.length === 0 || ids.some((id) => !Number.isInteger(id) || id < 0)) {
    throw new InvalidArgumentError(`expected comma-separated token ids, got "${value}"`);
  }
  return ids;
}
