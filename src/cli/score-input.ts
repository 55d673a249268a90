// Input lines of `midpo score`: each non-blank line is a JSON object with "prompt" and
// "response" strings, or with "input_ids". Text is tokenised as training tokenises it, with
// the chosen prompt template. Every line is checked against the score model before any scoring
// starts, and errors name the line.

import { MidpoError } from "../errors.js";
import { readJsonl } from "../data/jsonl.js";
import { tokenizePair, type PromptFormat } from "../data/tokenize-pairs.js";
import type { ModelConfig } from "../model/config.js";
import { Tokenizer } from "../tokenize/tokenizer.js";

export interface ScoreInputs {
  sequences: number[][];
  /** Line number in the input file of each sequence, from 1. */
  lines: number[];
}

/** Reads and checks the sequences to score. The tokenizer is read only if a line has text. */
export async function readScoreInputs(
  file: string,
  modelDir: string,
  config: ModelConfig,
  format: PromptFormat = {},
): Promise<ScoreInputs> {
  let tokenizer: Tokenizer | undefined;
  const sequences: number[][] = [];
  const lines: number[] = [];
  for await (const { line, value } of readJsonl(file)) {
    const where = `${file}:${line}`;
    const record =
      typeof value === "object" && value !== null && !Array.isArray(value)
        ? (value as Record<string, unknown>)
        : undefined;
    let ids: number[];
    if (record !== undefined && record.input_ids !== undefined) {
      ids = checkIds(record.input_ids, where, config.vocabSize);
    } else if (typeof record?.prompt === "string" && typeof record.response === "string") {
      tokenizer ??= Tokenizer.fromDirectory(modelDir);
      const { response } = record;
      const pair = { id: where, prompt: record.prompt, chosen: response, rejected: response };
      const tokenized = tokenizePair({ ...pair, source: { file, line } }, tokenizer, format);
      ids = [...tokenized.promptIds, ...tokenized.chosenIds];
    } else {
      throw new MidpoError(
        `${where}: expected an object with "prompt" and "response" strings, or "input_ids"`,
      );
    }
    const limit = config.maxPositionEmbeddings;
    if (ids.length > limit) {
      throw new MidpoError(
        `${where} has ${ids.length} tokens, more than max_position_embeddings ${limit} of ` +
          `${modelDir}; shorten the response or the prompt`,
      );
    }
    sequences.push(ids);
    lines.push(line);
  }
  return { sequences, lines };
}

function checkIds(value: unknown, where: string, vocabSize: number): number[] {
  if (!Array.isArray(value)) {
    throw new MidpoError(`${where}: input_ids must be an array of token ids`);
  }
  if (value.length === 0) throw new MidpoError(`${where}: input_ids is empty`);
  value.forEach((id: unknown, i) => {
    if (typeof id !== "number" || !Number.isInteger(id)) {
      throw new MidpoError(
        `${where}: input_ids[${i}] is ${JSON.stringify(id)}, not an integer token id`,
      );
    }
    if (id < 0 || id >= vocabSize) {
      throw new MidpoError(
        `${where}: input_ids[${i}] is ${id}, outside the model's vocabulary 0..${vocabSize - 1}`,
      );
    }
  });
  return value as number[];
}
