// Rotary position embedding frequencies, with the `rope_scaling` variants of transformers.

import type { ModelConfig } from "./config.js";

/**
 * Computes inv_freq[i] = 1 / theta^(2i / headDim) for i < headDim / 2, then applies
 * `rope_scaling`: "linear" divides every frequency by `factor` (positions stretched evenly);
 * "llama3" leaves high frequencies alone, divides low frequencies by `factor`, and blends
 * the band between them, with wavelengths measured against the original context length.
 */
export function ropeInverseFrequencies(config: ModelConfig): Float64Array {
  const half = config.headDim / 2;
  const invFreq = new Float64Array(half);
  for (let i = 0; i < half; i++) {
    invFreq[i] = 1 / Math.pow(config.ropeTheta, (2 * i) / config.headDim);
  }
  const scaling = config.ropeScaling;
  if (scaling === null) return invFreq;

  if (scaling.type === "linear") {
    return invFreq.map((f) => f / scaling.factor);
  }

  const { factor, lowFreqFactor, highFreqFactor, originalMaxPositionEmbeddings } = scaling;
  const lowFreqWavelen = originalMaxPositionEmbeddings / lowFreqFactor;
  const highFreqWavelen = originalMaxPositionEmbeddings / highFreqFactor;
  return invFreq.map((f) => {
    const wavelen = (2 * Math.PI) / f;
    if (wavelen < highFreqWavelen) return f;
    if (wavelen > lowFreqWavelen) return f / factor;
    const smooth =
      (originalMaxPositionEmbeddings / wavelen - lowFreqFactor) / (highFreqFactor - lowFreqFactor);
    return (1 - smooth) * (f / factor) + smooth * f;
  });
}
