// Conversions between float32 and the two 16-bit float formats found in checkpoints:
// IEEE 754 binary16 (F16: 1 sign, 5 exponent, 10 mantissa bits) and bfloat16 (BF16: the top
// 16 bits of a float32). Node 20 has no Float16Array, so 16-bit values travel as Uint16Array
// bit patterns. Widening is exact; narrowing rounds to nearest, ties to even, as PyTorch's
// `.to(torch.float16)` and `.to(torch.bfloat16)` do on the CPU.

let float16Table: Uint32Array | null = null;

/** float32 bit pattern of each of the 65536 binary16 values, built on first use (256 KiB). */
function float16ToFloat32BitsTable(): Uint32Array {
  if (float16Table !== null) {
    return float16Table;
  }
  const table = new Uint32Array(65536);
  for (let bits = 0; bits < 65536; bits++) {
    table[bits] = widenFloat16Bits(bits);
  }
  float16Table = table;
  return table;
}

function widenFloat16Bits(bits: number): number {
  const sign = (bits & 0x8000) << 16;
  const exponent = (bits >>> 10) & 0x1f;
  const mantissa = bits & 0x3ff;

  if (exponent === 0x1f) {
    // Infinity, or NaN with its payload kept in the top mantissa bits.
    return (sign | 0x7f800000 | (mantissa << 13)) >>> 0;
  }
  if (exponent !== 0) {
    return (sign | ((exponent - 15 + 127) << 23) | (mantissa << 13)) >>> 0;
  }
  if (mantissa === 0) {
    return sign >>> 0;
  }

  // A subnormal binary16 (mantissa * 2^-24) is a normal float32. Shift the leading 1 into the
  // implicit-bit position and lower the exponent by the same amount.
  let shift = 0;
  let normalized = mantissa;
  while ((normalized & 0x400) === 0) {
    normalized <<= 1;
    shift++;
  }
  const float32Exponent = 127 - 15 + 1 - shift;
  return (sign | (float32Exponent << 23) | ((normalized & 0x3ff) << 13)) >>> 0;
}

/** Widens binary16 bit patterns to float32 values. Every value, including NaN, maps exactly. */
export function float16BitsToFloat32(bits: Uint16Array): Float32Array {
  const table = float16ToFloat32BitsTable();
  const out = new Float32Array(bits.length);
  const outBits = new Uint32Array(out.buffer);
  for (let i = 0; i < bits.length; i++) {
    outBits[i] = table[bits[i]];
  }
  return out;
}

/** Widens bfloat16 bit patterns to float32 values by placing them in the top 16 bits. */
export function bfloat16BitsToFloat32(bits: Uint16Array): Float32Array {
  const out = new Float32Array(bits.length);
  const outBits = new Uint32Array(out.buffer);
  for (let i = 0; i < bits.length; i++) {
    outBits[i] = bits[i] << 16;
  }
  return out;
}

function narrowToFloat16Bits(float32Bits: number): number {
  const sign = (float32Bits >>> 16) & 0x8000;
  const exponent = (float32Bits >>> 23) & 0xff;
  const mantissa = float32Bits & 0x7fffff;

  if (exponent === 0xff) {
    // Infinity stays infinity. NaN keeps its top payload bits and gets the quiet bit, so that
    // dropping the low payload bits cannot turn it into infinity.
    const nanBits = mantissa === 0 ? 0 : 0x200 | (mantissa >>> 13);
    return sign | 0x7c00 | nanBits;
  }

  const halfExponent = exponent - 127 + 15;
  if (halfExponent >= 0x1f) {
    return sign | 0x7c00;
  }

  if (halfExponent <= 0) {
    // The result is subnormal or zero. In units of 2^-24 (the binary16 subnormal step) the
    // value is the 24-bit significand shifted right by 14 - halfExponent bits.
    if (halfExponent < -10) {
      return sign;
    }
    const significand = mantissa | 0x800000;
    const shift = 14 - halfExponent;
    const rounded = roundShiftRightEven(significand, shift);
    // A carry out of the largest subnormal gives 0x400, the smallest normal, which is correct.
    return sign | rounded;
  }

  const truncated = (halfExponent << 10) | (mantissa >>> 13);
  const remainder = mantissa & 0x1fff;
  const roundUp = remainder > 0x1000 || (remainder === 0x1000 && (truncated & 1) === 1);
  // A carry out of the mantissa raises the exponent, and past the largest finite value it
  // gives 0x7c00 (infinity), which is what rounding to nearest requires.
  return sign | (truncated + (roundUp ? 1 : 0));
}

function roundShiftRightEven(value: number, shift: number): number {
  const truncated = value >>> shift;
  const remainder = value & ((1 << shift) - 1);
  const halfway = 1 << (shift - 1);
  const roundUp = remainder > halfway || (remainder === halfway && (truncated & 1) === 1);
  return truncated + (roundUp ? 1 : 0);
}

/**
 * Rounds float32 values to binary16 bit patterns, to nearest with ties to even. Magnitudes of
 * 65520 and more round to infinity.
 */
export function float32ToFloat16Bits(values: Float32Array): Uint16Array {
  const inBits = new Uint32Array(values.buffer, values.byteOffset, values.length);
  const out = new Uint16Array(values.length);
  for (let i = 0; i < values.length; i++) {
    out[i] = narrowToFloat16Bits(inBits[i]);
  }
  return out;
}

/** Rounds float32 values to bfloat16 bit patterns, to nearest with ties to even. */
export function float32ToBfloat16Bits(values: Float32Array): Uint16Array {
  const inBits = new Uint32Array(values.buffer, values.byteOffset, values.length);
  const out = new Uint16Array(values.length);
  for (let i = 0; i < values.length; i++) {
    const bits = inBits[i];
    const isNaN = (bits & 0x7f800000) === 0x7f800000 && (bits & 0x7fffff) !== 0;
    if (isNaN) {
      // Setting the quiet bit keeps a NaN whose payload sits only in the low 16 bits from
      // truncating to infinity.
      out[i] = (bits >>> 16) | 0x40;
      continue;
    }
    // Adding 0x7fff plus the lowest kept bit and truncating rounds to nearest, ties to even.
    // The sum stays below 2^32 because the largest non-NaN pattern is 0xff800000.
    out[i] = (bits + 0x7fff + ((bits >>> 16) & 1)) >>> 16;
  }
  return out;
}
