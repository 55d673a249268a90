// Input lines of `midpo score`: each non-blank line is a JSON object with text or token ids.
// A line with "prompt" and "response" strings, or with "input_ids", gets one score. A
// PKU-SafeRLHF line ("prompt", "response_0", "response_1") gets a score per response, and so
// does a pairwise line ("prompt", "chosen", "rejected"). Text is tokenised as training
// tokenises it, with the chosen prompt template. Every line is checked against the score
// model before any scoring starts, and errors name the line.

import { MidpoError } from "../errors.js";
import { readJsonl } from "../data/jsonl.js";
import { tokenizePair, type PromptFormat } from "../data/tokenize-pairs.js";
import type { ModelConfig } from "../model/config.js";
import { Tokenizer } from "../tokenize/tokenizer.js";

export interface ScoreInputs {
  sequences: number[][];
  /** Line number in the input file of each sequence, from 1. */
  lines: number[];
  /** Output key of each sequence's score: "score", "score_0", "score_chosen", ... */
  keys: string[];
}

/** Response fields of each record shape, and the output key of each one's score. */
const RESPONSE_FIELDS: readonly (readonly [field: string, key: string][])[] = [
  [["response", "score"]],
  [
    ["response_0", "score_0"],
    ["response_1", "score_1"],
  ],
  [
    ["chosen", "score_chosen"],
    ["rejected", "score_rejected"],
  ],
];

/** Reads and checks the sequences to score. The tokenizer is read only if a line has text. */
export async function readScoreInputs(
  file: string,
  modelDir: string,
  config: ModelConfig,
  format: PromptFormat = {},
): Promise<ScoreInputs> {
  let tokenizer: Tokenizer | undefined;
  const inputs: ScoreInputs = { sequences: [], lines: [], keys: [] };
  const add = (ids: number[], line: number, key: string, where: string) => {
    const limit = config.maxPositionEmbeddings;
    if (ids.length > limit) {
      throw new MidpoError(
        `${where} has ${ids.length} tokens, more than max_position_embeddings ${limit} of ` +
          `${modelDir}; shorten the prompt or the response, or the input_ids`,
      );
    }
    inputs.sequences.push(ids);
    inputs.lines.push(line);
    inputs.keys.push(key);
  };
  for await (const { line, value } of readJsonl(file)) {
    const where = `${file}:${line}`;
    const record =
      typeof value === "object" && value !== null && !Array.isArray(value)
        ? (value as Record<string, unknown>)
        : undefined;
    if (record !== undefined && record.input_ids !== undefined) {
      add(checkIds(record.input_ids, where, config.vocabSize), line, "score", where);
      continue;
    }
    const fields = RESPONSE_FIELDS.find((shape) =>
      shape.every(([field]) => typeof record?.[field] === "string"),
    );
    if (record === undefined || typeof record.prompt !== "string" || fields === undefined) {
      throw new MidpoError(
        `${where}: expected an object with "prompt" and "response" strings, PKU-SafeRLHF ` +
          `"prompt", "response_0" and "response_1", pairwise "prompt", "chosen" and ` +
          `"rejected", or "input_ids". hh-rlhf dialogues have no "prompt": split them into ` +
          `pairs with midpo data build first`,
      );
    }
    tokenizer ??= Tokenizer.fromDirectory(modelDir);
    for (const [field, key] of fields) {
      const response = record[field] as string;
      const pair = { id: where, prompt: record.prompt, chosen: response, rejected: response };
      const tokenized = tokenizePair({ ...pair, source: { file, line } }, tokenizer, format);
      const label = fields.length > 1 ? `${where} (${field})` : where;
      add([...tokenized.promptIds, ...tokenized.chosenIds], line, key, label);
    }
  }
  return inputs;
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
