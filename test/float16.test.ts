import { describe, expect, it } from "vitest";

import {
  bfloat16BitsToFloat32,
  float16BitsToFloat32,
  float32ToBfloat16Bits,
  float32ToFloat16Bits,
} from "../src/model/float16.js";

function widenF16(bits: number): number {
  return float16BitsToFloat32(Uint16Array.of(bits))[0];
}

function narrowF16(value: number): number {
  return float32ToFloat16Bits(Float32Array.of(value))[0];
}

function narrowBf16(value: number): number {
  return float32ToBfloat16Bits(Float32Array.of(value))[0];
}

/** Builds a float32 from its bit pattern. */
function fromBits(bits: number): number {
  return new Float32Array(Uint32Array.of(bits).buffer)[0];
}

describe("float16 widening", () => {
  it("decodes known binary16 patterns", () => {
    expect(widenF16(0x3c00)).toBe(1);
    expect(widenF16(0xc000)).toBe(-2);
    expect(widenF16(0x3555)).toBe(0.333251953125);
    expect(widenF16(0x7bff)).toBe(65504);
    expect(widenF16(0x0400)).toBe(2 ** -14);
    expect(widenF16(0x0001)).toBe(2 ** -24);
    expect(widenF16(0x03ff)).toBe(1023 * 2 ** -24);
    expect(widenF16(0x8001)).toBe(-(2 ** -24));
    expect(widenF16(0x7c00)).toBe(Infinity);
    expect(widenF16(0xfc00)).toBe(-Infinity);
    expect(Number.isNaN(widenF16(0x7e00))).toBe(true);
    expect(Object.is(widenF16(0x8000), -0)).toBe(true);
  });

  it("matches the binary16 formula for every pattern", () => {
    const all = new Uint16Array(65536).map((_, i) => i);
    const widened = float16BitsToFloat32(all);
    for (let bits = 0; bits < 65536; bits++) {
      const sign = bits & 0x8000 ? -1 : 1;
      const exponent = (bits >> 10) & 0x1f;
      const mantissa = bits & 0x3ff;
      if (exponent === 0x1f) {
        continue;
      }
      const expected =
        exponent === 0
          ? sign * mantissa * 2 ** -24
          : sign * (1 + mantissa / 1024) * 2 ** (exponent - 15);
      expect(widened[bits]).toBe(expected);
    }
  });
});

describe("bfloat16 widening", () => {
  it("decodes known bfloat16 patterns", () => {
    const decoded = bfloat16BitsToFloat32(Uint16Array.of(0x3f80, 0xc040, 0x0001, 0xff80, 0x7fc0));
    expect(decoded[0]).toBe(1);
    expect(decoded[1]).toBe(-3);
    expect(decoded[2]).toBe(2 ** -133);
    expect(decoded[3]).toBe(-Infinity);
    expect(Number.isNaN(decoded[4])).toBe(true);
  });
});

describe("float16 narrowing", () => {
  it("round-trips every non-NaN binary16 value", () => {
    const all = new Uint16Array(65536).map((_, i) => i);
    const roundTripped = float32ToFloat16Bits(float16BitsToFloat32(all));
    for (let bits = 0; bits < 65536; bits++) {
      const isNaN = (bits & 0x7c00) === 0x7c00 && (bits & 0x3ff) !== 0;
      if (!isNaN) {
        expect(roundTripped[bits]).toBe(bits);
      }
    }
  });

  it("rounds midpoints to the even neighbour", () => {
    // For each pair of adjacent positive finite values, the exact midpoint must round to the
    // neighbour with an even last bit, and anything just above it to the upper neighbour.
    for (let bits = 0; bits < 0x7bff; bits++) {
      const midpoint = (widenF16(bits) + widenF16(bits + 1)) / 2;
      const even = bits % 2 === 0 ? bits : bits + 1;
      expect(narrowF16(midpoint)).toBe(even);
      const aboveMidpoint = fromBits(new Uint32Array(Float32Array.of(midpoint).buffer)[0] + 1);
      expect(narrowF16(aboveMidpoint)).toBe(bits + 1);
    }
  });

  it("handles overflow, underflow and NaN", () => {
    expect(narrowF16(65519)).toBe(0x7bff);
    expect(narrowF16(65520)).toBe(0x7c00);
    expect(narrowF16(-1e6)).toBe(0xfc00);
    expect(narrowF16(2 ** -25)).toBe(0x0000);
    expect(narrowF16(2 ** -25 * 1.0001)).toBe(0x0001);
    expect(narrowF16(-(2 ** -30))).toBe(0x8000);
    expect(narrowF16(1e-40)).toBe(0x0000);
    const nan = narrowF16(NaN);
    expect(nan & 0x7c00).toBe(0x7c00);
    expect(nan & 0x3ff).not.toBe(0);
  });
});

describe("bfloat16 narrowing", () => {
  it("truncates exact values", () => {
    expect(narrowBf16(1)).toBe(0x3f80);
    expect(narrowBf16(-3)).toBe(0xc040);
    expect(narrowBf16(-Infinity)).toBe(0xff80);
  });

  it("rounds to nearest, ties to even", () => {
    expect(narrowBf16(fromBits(0x3f808000))).toBe(0x3f80);
    expect(narrowBf16(fromBits(0x3f818000))).toBe(0x3f82);
    expect(narrowBf16(fromBits(0x3f808001))).toBe(0x3f81);
    expect(narrowBf16(fromBits(0x3f807fff))).toBe(0x3f80);
    expect(narrowBf16(fromBits(0x7f7fffff))).toBe(0x7f80);
  });

  it("keeps NaN with a low-bit payload as NaN", () => {
    const bits = narrowBf16(fromBits(0x7f800001));
    expect(bits & 0x7f80).toBe(0x7f80);
    expect(bits & 0x7f).not.toBe(0);
  });
});
