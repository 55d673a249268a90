// Batched generation of responses to a prompt set, and the prompt encoding shared with scoring.
//
// Prompts are rendered with the run's template (safe-rlhf by default), sorted by token length
// so that each batch pads little, and generated in batches of `batchSize`. Sampling draws from
// one seeded generator per batch (seed + batch number), so the responses of a set depend on
// the seed and the batch size but not on which other sets or systems run.

import { MidpoError } from "../errors.js";
import { generate, type Generation } from "../generate/generate.js";
import { DEFAULT_SAMPLING } from "../generate/sampling.js";
import { renderPrompt, type PromptTemplate } from "../data/tokenize-pairs.js";
import type { Tokenizer } from "../tokenize/tokenizer.js";
import { GateCollector, emptyGateStats, mergeGateStats, type GateStats } from "./gates.js";
import type { EvalPrompt } from "./prompt-sets.js";
import { EvalProgress } from "./progress.js";
import type { StoredGeneration } from "./store.js";
import type { SystemModel } from "./system-model.js";

export interface GenerationSettings {
  maxNewTokens: number;
  /** 0 decodes greedily. MidPO's reference evaluation samples with 0.7. */
  temperature: number;
  /** Seed of the sampler, unused when temperature is 0. */
  seed: number;
  /** Prompts per generate call. */
  batchSize: number;
  template: PromptTemplate;
}

/**
 * Encodes a rendered prompt the way pair tokenisation does for training: the text without
 * added special tokens, then BOS first when the tokenizer adds one and the text has none.
 */
export function encodeEvalPrompt(
  text: string,
  tokenizer: Tokenizer,
  template: PromptTemplate,
): number[] {
  const rendered = renderPrompt(text, tokenizer, { template });
  const ids = tokenizer.encode(rendered, { addSpecialTokens: false });
  const bos = tokenizer.bosTokenId;
  const addsBos = bos !== undefined && tokenizer.encode("a")[0] === bos;
  if (addsBos && ids[0] !== bos) ids.unshift(bos);
  return ids;
}

/** Returns the ids that end a response: the tokenizer's EOS ids, else the model config's. */
export function stopTokenIds(tokenizer: Tokenizer, system: SystemModel): number[] {
  const ids =
    tokenizer.eosTokenIds.length > 0 ? [...tokenizer.eosTokenIds] : system.model.config.eosTokenIds;
  if (ids.length === 0) {
    throw new MidpoError(
      `neither the tokenizer in ${tokenizer.directory} nor config.json of ` +
        `${system.model.source} defines an EOS token, so generation could not stop; ` +
        `set eos_token in tokenizer_config.json`,
    );
  }
  return ids;
}

export interface GeneratedSet {
  rows: StoredGeneration[];
  /** Gate statistics for router systems, else null. */
  gates: GateStats | null;
}

/** Generates one response per prompt. `label` names the system and set in progress output. */
export async function generateResponses(
  system: SystemModel,
  tokenizer: Tokenizer,
  prompts: readonly EvalPrompt[],
  settings: GenerationSettings,
  label: string,
): Promise<GeneratedSet> {
  const model = system.model;
  const promptIds = prompts.map((p) => encodeEvalPrompt(p.text, tokenizer, settings.template));
  checkLengths(
    promptIds,
    prompts,
    settings.maxNewTokens,
    model.config.maxPositionEmbeddings,
    label,
  );

  const eos = stopTokenIds(tokenizer, system);
  const order = prompts.map((_, i) => i).sort((a, b) => promptIds[a].length - promptIds[b].length);
  const rows: StoredGeneration[] = new Array(prompts.length);
  const gates = system.exposesGates ? emptyGateStats(model.config.numHiddenLayers) : null;
  const progress = new EvalProgress(`generate ${label}`, prompts.length, "prompts");

  try {
    for (let start = 0, batch = 0; start < order.length; start += settings.batchSize, batch++) {
      const indices = order.slice(start, start + settings.batchSize);
      const collector = gates === null ? null : new GateCollector(model.config.numHiddenLayers);
      const generations = await generate(
        model,
        indices.map((i) => promptIds[i]),
        {
          ...DEFAULT_SAMPLING,
          temperature: settings.temperature,
          maxNewTokens: settings.maxNewTokens,
          seed: settings.seed + batch,
          eosTokenIds: eos,
          padTokenId: model.config.padTokenId ?? eos[0],
          onOutputs: collector?.onOutputs,
        },
      );
      if (gates !== null && collector !== null)
        mergeGateStats(gates, collector.finish(generations));
      indices.forEach((promptIndex, r) => {
        rows[promptIndex] = toStored(prompts[promptIndex], generations[r], tokenizer);
      });
      progress.advance(indices.length);
    }
  } finally {
    progress.stop();
  }
  return { rows, gates };
}

function toStored(prompt: EvalPrompt, generation: Generation, tokenizer: Tokenizer) {
  return {
    index: prompt.index,
    prompt: prompt.text,
    response: tokenizer.decode(generation.tokens, { skipSpecialTokens: true }),
    tokens: generation.tokens,
    finishReason: generation.finishReason,
  };
}

function checkLengths(
  promptIds: readonly number[][],
  prompts: readonly EvalPrompt[],
  maxNewTokens: number,
  maxPositions: number,
  label: string,
): void {
  promptIds.forEach((ids, i) => {
    if (ids.length + maxNewTokens > maxPositions) {
      throw new MidpoError(
        `${label}: prompt ${prompts[i].index} is ${ids.length} tokens, and with ` +
          `--max-new-tokens ${maxNewTokens} exceeds the model's max_position_embeddings ` +
          `${maxPositions}; lower --max-new-tokens or drop the long prompts from the set`,
      );
    }
  });
}
