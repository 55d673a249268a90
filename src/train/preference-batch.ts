// Preference pairs turned into model inputs. Each pair contributes two rows, prompt + chosen
// and prompt + rejected; a batch of P pairs is laid out as the P chosen rows followed by the
// P rejected rows, so the graph splits sequence log-probs with one reshape to [2, P].

export interface TokenizedPair {
  promptIds: number[];
  chosenIds: number[];
  rejectedIds: number[];
  /** Margin m subtracted from β·Δ; 0 for plain DPO. */
  margin: number;
}

export interface CollatedPairs {
  pairs: number;
  rows: number;
  width: number;
  inputIds: BigInt64Array;
  attentionMask: BigInt64Array;
  positionIds: BigInt64Array;
  /** [rows, width - 1]: 1 where target token t + 1 belongs to the response (EOS included). */
  responseMask: Float32Array;
  /** Maximum response length in the batch, in tokens, and the width of the two arrays below. */
  picked: number;
  /**
   * [rows, picked]: the positions t whose next token t + 1 is a response token, in order,
   * then position 0 as filler. The step graph runs the lm_head at these positions only.
   */
  logitPositions: BigInt64Array;
  /** [rows, picked]: 1 on real entries of `logitPositions`, 0 on filler. */
  pickedMask: Float32Array;
  margins: Float32Array;
}

/** Right-pads the 2P sequences of a batch to a common width. */
export function collatePairs(batch: readonly TokenizedPair[], padId = 0): CollatedPairs {
  const sequences = [
    ...batch.map((p) => ({ prompt: p.promptIds.length, ids: [...p.promptIds, ...p.chosenIds] })),
    ...batch.map((p) => ({ prompt: p.promptIds.length, ids: [...p.promptIds, ...p.rejectedIds] })),
  ];
  const rows = sequences.length;
  const width = Math.max(2, ...sequences.map((s) => s.ids.length));
  const inputIds = new BigInt64Array(rows * width);
  const attentionMask = new BigInt64Array(rows * width);
  const positionIds = new BigInt64Array(rows * width);
  const responseMask = new Float32Array(rows * (width - 1));
  const picked = Math.max(1, ...sequences.map((s) => s.ids.length - s.prompt));
  const logitPositions = new BigInt64Array(rows * picked);
  const pickedMask = new Float32Array(rows * picked);

  sequences.forEach((s, r) => {
    for (let t = 0; t < width; t++) {
      const real = t < s.ids.length;
      inputIds[r * width + t] = BigInt(real ? s.ids[t] : padId);
      attentionMask[r * width + t] = real ? 1n : 0n;
      positionIds[r * width + t] = BigInt(t);
      // Position t of the logprob row scores token t + 1.
      if (t < width - 1 && t + 1 >= s.prompt && t + 1 < s.ids.length) {
        responseMask[r * (width - 1) + t] = 1;
      }
    }
    // With an empty prompt the first response token has no position that predicts it, and
    // it is left out as in responseMask.
    for (let j = 0; j < s.ids.length - s.prompt; j++) {
      const position = s.prompt - 1 + j;
      if (position < 0) continue;
      logitPositions[r * picked + j] = BigInt(position);
      pickedMask[r * picked + j] = 1;
    }
  });

  return {
    pairs: batch.length,
    rows,
    width,
    inputIds,
    attentionMask,
    positionIds,
    responseMask,
    picked,
    logitPositions,
    pickedMask,
    margins: Float32Array.from(batch, (p) => p.margin),
  };
}

/** Sums per-token log-probs over each row's response tokens. */
export function responseLogps(tokenLogprobs: ArrayLike<number>, c: CollatedPairs): number[] {
  const out: number[] = [];
  for (let r = 0; r < c.rows; r++) {
    let sum = 0;
    for (let t = 0; t < c.width - 1; t++) {
      const i = r * (c.width - 1) + t;
      if (c.responseMask[i] === 1) sum += tokenLogprobs[i];
    }
    out.push(sum);
  }
  return out;
}
