// Tokenisation of preference pairs into { promptIds, chosenIds, rejectedIds }, the input of the
// trainer's collatePairs. Two prompt templates exist, and one run must use the same one in every
// stage (score models, experts, router, generation):
// - "safe-rlhf" (default): `BEGINNING OF CONVERSATION: USER: {prompt} ASSISTANT:`, then the
//   response and EOS; earlier assistant turns of a multi-turn prompt end with EOS;
// - "chat": the model's Jinja chat template, rendered with a generation prompt.
//
// A response is tokenised together with its prompt and then cut at the prompt's length, as
// safe-rlhf does. Encoded alone, its first word would differ: SentencePiece tokenisers add a
// leading "▁" at the start of a text, but not after "ASSISTANT:".

import { createHash } from "node:crypto";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { MidpoError } from "../errors.js";
import { formatSafeRlhfPrompt } from "../tokenize/chat.js";
import type { ChatMessage, Tokenizer } from "../tokenize/tokenizer.js";
import type { LengthMeasure } from "./sets.js";
import type { PreferencePair, Prompt } from "./types.js";

export type PromptTemplate = "safe-rlhf" | "chat";

export const PROMPT_TEMPLATES: readonly PromptTemplate[] = ["safe-rlhf", "chat"];

/** Template settings that decide how prompts and responses are rendered as text. */
export interface PromptFormat {
  /** Prompt template. Default "safe-rlhf". */
  template?: PromptTemplate;
  /** Extra chat-template variables, e.g. `{ enable_thinking: false }` for Qwen3. */
  chatVariables?: Record<string, unknown>;
}

export interface PairTokenizeOptions extends PromptFormat {
  /** Max tokens of prompt + response. Default: no limit. */
  maxLength?: number;
}

export interface TokenizedPreferencePair {
  id: string;
  /** Starts with BOS when the tokenizer adds one, and keeps it when truncated. */
  promptIds: number[];
  /** Response tokens, ending with EOS unless the response was truncated. */
  chosenIds: number[];
  rejectedIds: number[];
  /** Prompt tokens removed from the left to fit `maxLength`. */
  promptTokensDropped: number;
  /** Responses of this pair (0, 1 or 2) cut on the right to fit `maxLength`. */
  responsesTruncated: number;
}

export interface TokenizedPairs {
  template: PromptTemplate;
  /** Hash of the template kind and the tokenizer's identity; see tokenizationConfigHash. */
  configHash: string;
  pairs: TokenizedPreferencePair[];
  stats: {
    promptsTruncated: number;
    responsesTruncated: number;
    /** Responses that had to be encoded apart from their prompt; see encodeResponse. */
    boundaryMismatches: number;
  };
}

/** Tokenises every pair with one template and reports truncation counts. */
export function tokenizePairs(
  pairs: readonly PreferencePair[],
  tokenizer: Tokenizer,
  options: PairTokenizeOptions = {},
): TokenizedPairs {
  const template = options.template ?? "safe-rlhf";
  const stats = { promptsTruncated: 0, responsesTruncated: 0, boundaryMismatches: 0 };
  const tokenized = pairs.map((pair) => {
    const result = tokenizePairCounting(pair, tokenizer, { ...options, template }, stats);
    stats.promptsTruncated += result.promptTokensDropped > 0 ? 1 : 0;
    stats.responsesTruncated += result.responsesTruncated;
    return result;
  });
  return {
    template,
    configHash: tokenizationConfigHash(tokenizer, options),
    pairs: tokenized,
    stats,
  };
}

/** Tokenises one pair; see tokenizePairs. */
export function tokenizePair(
  pair: PreferencePair,
  tokenizer: Tokenizer,
  options: PairTokenizeOptions = {},
): TokenizedPreferencePair {
  return tokenizePairCounting(pair, tokenizer, options, { boundaryMismatches: 0 });
}

function tokenizePairCounting(
  pair: PreferencePair,
  tokenizer: Tokenizer,
  options: PairTokenizeOptions,
  stats: { boundaryMismatches: number },
): TokenizedPreferencePair {
  const promptText = renderPrompt(pair.prompt, tokenizer, options);
  const promptIds = encodePrompt(promptText, tokenizer);
  const chosen = encodeResponse(
    pair.prompt,
    promptText,
    promptIds,
    pair.chosen,
    tokenizer,
    options,
  );
  const rejected = encodeResponse(
    pair.prompt,
    promptText,
    promptIds,
    pair.rejected,
    tokenizer,
    options,
  );
  stats.boundaryMismatches += (chosen.mismatch ? 1 : 0) + (rejected.mismatch ? 1 : 0);

  const tokenized = {
    id: pair.id,
    promptIds,
    chosenIds: chosen.ids,
    rejectedIds: rejected.ids,
    promptTokensDropped: 0,
    responsesTruncated: 0,
  };
  return options.maxLength === undefined
    ? tokenized
    : truncatePair(tokenized, options.maxLength, tokenizer);
}

/** Renders a prompt as text ending where the response starts. */
export function renderPrompt(
  prompt: Prompt,
  tokenizer: Tokenizer,
  format: PromptFormat = {},
): string {
  const turns = turnsOf(prompt);
  if (format.template === "chat") {
    return tokenizer.applyChatTemplate(turns, {
      addGenerationPrompt: true,
      variables: format.chatVariables,
    });
  }
  return formatSafeRlhfPrompt(turns, eosTokenOf(tokenizer));
}

function turnsOf(prompt: Prompt): ChatMessage[] {
  if (typeof prompt === "string") {
    return [{ role: "user", content: prompt }];
  }
  return prompt.map((turn) => ({ role: turn.role, content: turn.content }));
}

function eosTokenOf(tokenizer: Tokenizer): string {
  if (tokenizer.eosToken === undefined || tokenizer.eosTokenId === undefined) {
    throw new MidpoError(
      `The tokenizer at ${tokenizer.directory} defines no EOS token, which ends every response ` +
        `and assistant turn. Set eos_token in its tokenizer_config.json.`,
    );
  }
  return tokenizer.eosToken;
}

const addsBosCache = new WeakMap<Tokenizer, boolean>();

/** Returns whether plain `encode(text)` starts with BOS for this tokenizer. */
function addsBos(tokenizer: Tokenizer): boolean {
  let adds = addsBosCache.get(tokenizer);
  if (adds === undefined) {
    const bos = tokenizer.bosTokenId;
    adds = bos !== undefined && tokenizer.encode("a")[0] === bos;
    addsBosCache.set(tokenizer, adds);
  }
  return adds;
}

/**
 * Encodes a rendered prompt. Special tokens are not added by the encoder, because a chat
 * template may already write BOS as text; BOS is then put first when the tokenizer adds one and
 * the text did not.
 */
function encodePrompt(promptText: string, tokenizer: Tokenizer): number[] {
  const ids = tokenizer.encode(promptText, { addSpecialTokens: false });
  if (addsBos(tokenizer) && ids[0] !== tokenizer.bosTokenId) {
    ids.unshift(tokenizer.bosTokenId as number);
  }
  return ids;
}

/**
 * Encodes a response after its prompt: the full text (prompt, then response) is encoded and the
 * prompt's ids are cut off. A token can merge across the boundary (`:"` after "ASSISTANT:"), or
 * a chat template can render the history differently once the reply is added. Then the prompt's
 * ids are not a prefix of the full text's, so the response is encoded on its own and `mismatch`
 * is set. The ids end with EOS. With a chat template, whitespace tokens after the template's
 * last EOS (the newline after `<|im_end|>`) are dropped, and EOS is appended when the template
 * writes none.
 */
function encodeResponse(
  prompt: Prompt,
  promptText: string,
  promptIds: readonly number[],
  response: string,
  tokenizer: Tokenizer,
  format: PromptFormat,
): { ids: number[]; mismatch: boolean } {
  const template = format.template ?? "safe-rlhf";
  let fullText: string;
  if (template === "chat") {
    const messages = [...turnsOf(prompt), { role: "assistant", content: response }];
    fullText = tokenizer.applyChatTemplate(messages, {
      addGenerationPrompt: false,
      variables: format.chatVariables,
    });
  } else {
    fullText = promptText + response;
  }

  let ids: number[] | undefined;
  if (fullText.startsWith(promptText)) {
    const fullIds = encodePrompt(fullText, tokenizer);
    if (startsWith(fullIds, promptIds)) {
      ids = fullIds.slice(promptIds.length);
    }
  }
  const mismatch = ids === undefined;
  if (ids === undefined) {
    const alone = template === "chat" ? fullText.slice(promptText.length) : response;
    ids = tokenizer.encode(alone, { addSpecialTokens: false });
  }
  return { ids: endWithEos(ids, tokenizer, template), mismatch };
}

function startsWith(ids: readonly number[], prefix: readonly number[]): boolean {
  return prefix.length <= ids.length && prefix.every((id, i) => ids[i] === id);
}

function endWithEos(ids: number[], tokenizer: Tokenizer, template: PromptTemplate): number[] {
  eosTokenOf(tokenizer);
  if (template === "safe-rlhf") {
    return [...ids, tokenizer.eosTokenId as number];
  }

  const eosIds = new Set(tokenizer.eosTokenIds);
  let lastEos = -1;
  ids.forEach((id, i) => {
    if (eosIds.has(id)) {
      lastEos = i;
    }
  });
  if (lastEos !== -1 && ids.slice(lastEos + 1).every((id) => !isText(id, tokenizer))) {
    return ids.slice(0, lastEos + 1);
  }
  return [...ids, tokenizer.eosTokenId as number];
}

/** Returns whether a token carries visible text, as whitespace-only tokens do not. */
function isText(id: number, tokenizer: Tokenizer): boolean {
  return tokenizer.decode([id]).trim() !== "";
}

/**
 * Fits a pair into `maxLength` tokens for prompt + longer response. A response longer than
 * `maxLength` minus a minimal prompt (BOS and the last prompt token) is cut on the right, which
 * removes its EOS. The prompt then loses tokens from the left, after BOS, until it fits.
 */
function truncatePair(
  pair: TokenizedPreferencePair,
  maxLength: number,
  tokenizer: Tokenizer,
): TokenizedPreferencePair {
  const hasBos = pair.promptIds.length > 0 && pair.promptIds[0] === tokenizer.bosTokenId;
  const minimalPrompt = Math.min(pair.promptIds.length, hasBos ? 2 : 1);
  const responseLimit = maxLength - minimalPrompt;
  if (responseLimit < 1) {
    throw new MidpoError(`maxLength ${maxLength} leaves no room for a response; use at least 3.`);
  }

  let responsesTruncated = 0;
  const cut = (ids: number[]) => {
    if (ids.length <= responseLimit) {
      return ids;
    }
    responsesTruncated++;
    return ids.slice(0, responseLimit);
  };
  const chosenIds = cut(pair.chosenIds);
  const rejectedIds = cut(pair.rejectedIds);

  const promptLimit = maxLength - Math.max(chosenIds.length, rejectedIds.length);
  let promptIds = pair.promptIds;
  if (promptIds.length > promptLimit) {
    const tail = promptIds.slice(promptIds.length - (promptLimit - (hasBos ? 1 : 0)));
    promptIds = hasBos ? [promptIds[0], ...tail] : tail;
  }

  return {
    ...pair,
    promptIds,
    chosenIds,
    rejectedIds,
    promptTokensDropped: pair.promptIds.length - promptIds.length,
    responsesTruncated,
  };
}

/** Returns a length measure in tokens, counted as tokenizePairs produces them without a limit. */
export function tokenLengths(tokenizer: Tokenizer, format: PromptFormat = {}): LengthMeasure {
  return (pair) => {
    const tokenized = tokenizePair(pair, tokenizer, format);
    return {
      prompt: tokenized.promptIds.length,
      chosen: tokenized.chosenIds.length,
      rejected: tokenized.rejectedIds.length,
    };
  };
}

// ---------------------------------------------------------------------------------------------
// Cache key

/** Version of the tokenisation rules above; bump it when they change the ids. */
const TOKENIZATION_VERSION = 1;

/**
 * Hash (hex SHA-256) of what decides the ids of a pair apart from its text: the template kind
 * and chat-template variables, the tokenizer's identity (see tokenizerFingerprint) and the
 * version of these rules. Caches of tokenised pairs or per-pair log-probs can key on it. The
 * length limit is not part of it.
 */
export function tokenizationConfigHash(tokenizer: Tokenizer, format: PromptFormat = {}): string {
  const template = format.template ?? "safe-rlhf";
  return createHash("sha256")
    .update(
      JSON.stringify({
        version: TOKENIZATION_VERSION,
        template,
        chatVariables: template === "chat" ? (format.chatVariables ?? {}) : {},
        tokenizer: tokenizerFingerprint(tokenizer),
      }),
    )
    .digest("hex");
}

const TOKENIZER_FILES = [
  "tokenizer.json",
  "tokenizer_config.json",
  "generation_config.json",
  "chat_template.jinja",
];

/**
 * Computes the identity of a tokenizer loaded from a directory as a SHA-256 over the bytes of
 * its files. A tokenizer built in memory is hashed over its vocabulary, special-token ids and
 * the encoding of a probe text, plus its chat template rendered on a probe conversation.
 */
export function tokenizerFingerprint(tokenizer: Tokenizer): string {
  const hash = createHash("sha256");
  if (existsSync(join(tokenizer.directory, "tokenizer.json"))) {
    for (const name of TOKENIZER_FILES) {
      const path = join(tokenizer.directory, name);
      if (existsSync(path)) {
        hash.update(`${name}\0`).update(readFileSync(path)).update("\0");
      }
    }
    return hash.digest("hex");
  }

  for (let id = 0; id < tokenizer.vocabSize; id++) {
    hash.update(`${tokenizer.idToToken(id) ?? ""}\0`);
  }
  hash.update(JSON.stringify([tokenizer.bosTokenId, tokenizer.eosTokenIds, tokenizer.padTokenId]));
  hash.update(JSON.stringify(tokenizer.encode("Hello, world! 12 + 3.5 = ünïcode\n\tend")));
  if (tokenizer.hasChatTemplate) {
    const probe: ChatMessage[] = [
      { role: "user", content: "a" },
      { role: "assistant", content: "b" },
      { role: "user", content: "c" },
    ];
    hash.update(tokenizer.applyChatTemplate(probe, { addGenerationPrompt: true }));
  }
  return hash.digest("hex");
}
