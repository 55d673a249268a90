// `midpo logprobs`: per-token log-probabilities of each JSONL input line.

import { MidpoError } from "../errors.js";
import { readJsonl } from "../data/jsonl.js";
import { log } from "../log.js";
import { loadModel } from "../model/load.js";
import type { Tokenizer } from "../tokenize/tokenizer.js";
import { applyVariant, type VariantOptions } from "./model-variant.js";

export interface LogprobsCommandOptions extends VariantOptions {
  model: string;
  input: string;
  truncate: boolean;
  batchTokens: number;
}

/** Lines scored per ORT batch group; results are written in input order after each group. */
const LINES_PER_GROUP = 256;

function idsOfRecord(
  value: unknown,
  where: string,
  tokenizer: Tokenizer | undefined,
  vocabSize: number,
): number[] {
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw new MidpoError(`${where}: expected a JSON object with "text" or "input_ids"`);
  }
  const record = value as Record<string, unknown>;
  if (record.input_ids !== undefined) {
    const ids = record.input_ids;
    if (
      !Array.isArray(ids) ||
      ids.some((id) => !Number.isInteger(id) || id < 0 || id >= vocabSize)
    ) {
      throw new MidpoError(
        `${where}: "input_ids" must be an array of integers in [0, ${vocabSize - 1}]`,
      );
    }
    return ids as number[];
  }
  if (typeof record.text === "string") {
    if (tokenizer === undefined) {
      throw new MidpoError(
        `${where}: "text" needs a tokenizer, but the model directory has no tokenizer.json; ` +
          `pass "input_ids" instead`,
      );
    }
    return tokenizer.encode(record.text);
  }
  throw new MidpoError(`${where}: expected a string "text" or an array "input_ids"`);
}

export async function runLogprobs(options: LogprobsCommandOptions): Promise<void> {
  const loaded = await loadModel(options.model, "if-present", { mapWeights: true });
  const tokenizer = loaded.tokenizer;
  const model = await applyVariant(loaded.model, loaded.directory, options, false);
  const max = model.config.maxPositionEmbeddings;
  let group: { ids: number[]; id: unknown }[] = [];
  let count = 0;

  const flush = async () => {
    const results = await model.tokenLogprobs(
      group.map((g) => g.ids),
      { maxBatchTokens: options.batchTokens },
    );
    const lines = results.map((lp, i) => {
      const sum = lp.reduce((a, b) => a + b, 0);
      const out: Record<string, unknown> = { logprobs: lp, sum, num_tokens: group[i].ids.length };
      if (group[i].id !== undefined) out.id = group[i].id;
      return JSON.stringify(out);
    });
    process.stdout.write(lines.join("\n") + "\n");
    count += group.length;
    group = [];
  };

  for await (const { line, value } of readJsonl(options.input)) {
    const where = `${options.input}:${line}`;
    let ids = idsOfRecord(value, where, tokenizer, model.config.vocabSize);
    if (ids.length > max) {
      if (!options.truncate) {
        throw new MidpoError(
          `${where} has ${ids.length} tokens, more than max_position_embeddings ${max}; ` +
            `pass --truncate to keep the last ${max} tokens`,
        );
      }
      ids = ids.slice(ids.length - max);
    }
    model.checkLength(ids.length, where);
    group.push({ ids, id: (value as Record<string, unknown>).id });
    if (group.length >= LINES_PER_GROUP) await flush();
  }
  if (group.length > 0) await flush();
  log.info({ lines: count }, "scored");
  await model.release();
}
