// Validation of raw records against one of three schemas:
// - "pku": the PKU-SafeRLHF schema, one record per prompt with two labelled responses;
// - "pairwise": `prompt`, `chosen`, `rejected` and an optional numeric `margin`;
// - "hh-rlhf": `chosen` and `rejected` full transcripts, split by hh-rlhf.ts.
// Field names can be remapped for sources that spell them differently. A record either
// validates or gets exactly one problem, the first check it fails.

import { createHash } from "node:crypto";
import { splitHhPair } from "./hh-rlhf.js";
import type { Problem, ProblemReason } from "./problems.js";
import { containsString, type RawRecord } from "./read-common.js";
import type {
  DatasetRecord,
  PairwiseRecord,
  PkuRecord,
  Prompt,
  SourceLocation,
  Turn,
} from "./types.js";

export type RecordSchema = "pku" | "pairwise" | "hh-rlhf";

export const RECORD_SCHEMAS: readonly RecordSchema[] = ["pku", "pairwise", "hh-rlhf"];

/** Names of the fields read from each record; keys are the default names. */
export interface FieldNames {
  prompt: string;
  response_0: string;
  response_1: string;
  is_response_0_safe: string;
  is_response_1_safe: string;
  better_response_id: string;
  safer_response_id: string;
  chosen: string;
  rejected: string;
  margin: string;
}

export const DEFAULT_FIELDS: FieldNames = {
  prompt: "prompt",
  response_0: "response_0",
  response_1: "response_1",
  is_response_0_safe: "is_response_0_safe",
  is_response_1_safe: "is_response_1_safe",
  better_response_id: "better_response_id",
  safer_response_id: "safer_response_id",
  chosen: "chosen",
  rejected: "rejected",
  margin: "margin",
};

const SCHEMA_FIELDS: Record<RecordSchema, (keyof FieldNames)[]> = {
  pku: [
    "prompt",
    "response_0",
    "response_1",
    "is_response_0_safe",
    "is_response_1_safe",
    "better_response_id",
    "safer_response_id",
  ],
  pairwise: ["prompt", "chosen", "rejected", "margin"],
  "hh-rlhf": ["chosen", "rejected"],
};

export type ValidationResult =
  { ok: true; record: DatasetRecord } | { ok: false; problem: Problem };

/**
 * Guesses the schema from the fields of a record: `response_0` and `response_1` mean "pku",
 * `prompt`, `chosen` and `rejected` mean "pairwise", and `chosen` and `rejected` without a
 * prompt mean "hh-rlhf". Returns undefined when none fits.
 */
export function detectSchema(
  value: Record<string, unknown>,
  fields: FieldNames = DEFAULT_FIELDS,
): RecordSchema | undefined {
  const has = (name: keyof FieldNames) => fields[name] in value;
  if (has("response_0") && has("response_1")) {
    return "pku";
  }
  if (has("chosen") && has("rejected")) {
    return has("prompt") ? "pairwise" : "hh-rlhf";
  }
  return undefined;
}

/** Validates one raw record; a record that fails gets the problem of its first failed check. */
export function validateRecord(
  raw: RawRecord,
  schema: RecordSchema,
  fields: FieldNames = DEFAULT_FIELDS,
): ValidationResult {
  try {
    const value = objectOf(raw);
    const record =
      schema === "pku"
        ? pkuRecord(value, fields, raw.source)
        : schema === "pairwise"
          ? pairwiseRecord(value, fields, raw.source)
          : hhRecord(value, fields, raw.source);
    return { ok: true, record };
  } catch (error) {
    if (error instanceof RecordProblem) {
      return {
        ok: false,
        problem: { reason: error.reason, source: raw.source, detail: error.message },
      };
    }
    throw error;
  }
}

/**
 * Content id of a record: the first 16 hex digits of SHA-256 over the JSON of
 * `[prompt, first response, second response]`, responses in record order (response_0,
 * response_1 or chosen, rejected).
 */
export function recordId(prompt: Prompt, first: string, second: string): string {
  return createHash("sha256")
    .update(JSON.stringify([prompt, first, second]))
    .digest("hex")
    .slice(0, 16);
}

/**
 * Key under which two records count as duplicates: the same prompt and the same two responses,
 * in either order.
 */
export function duplicateKey(record: DatasetRecord): string {
  const responses =
    record.kind === "pku"
      ? [record.response_0, record.response_1]
      : [record.chosen, record.rejected];
  responses.sort();
  return createHash("sha256")
    .update(JSON.stringify([record.prompt, ...responses]))
    .digest("hex");
}

/** The thrown form of a record problem, caught in validateRecord. */
class RecordProblem extends Error {
  constructor(
    readonly reason: ProblemReason,
    detail: string,
  ) {
    super(detail);
  }
}

function objectOf(raw: RawRecord): Record<string, unknown> {
  const value = raw.value;
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    const kind = value === null ? "null" : Array.isArray(value) ? "an array" : `a ${typeof value}`;
    throw new RecordProblem("wrong_type", `the record is ${kind}, expected a JSON object`);
  }
  const record = value as Record<string, unknown>;
  if (raw.invalidUtf8) {
    throw new RecordProblem("invalid_utf8", "the record contains bytes that are not valid UTF-8");
  }
  if (containsString(record, hasLoneSurrogate)) {
    throw new RecordProblem("invalid_utf8", "the record contains a lone UTF-16 surrogate");
  }
  return record;
}

const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

function hasLoneSurrogate(text: string): boolean {
  return LONE_SURROGATE.test(text);
}

function pkuRecord(
  value: Record<string, unknown>,
  fields: FieldNames,
  source: SourceLocation,
): PkuRecord {
  const prompt = requiredText(value, fields.prompt);
  const response0 = requiredText(value, fields.response_0);
  const response1 = requiredText(value, fields.response_1);
  const safe0 = requiredBoolean(value, fields.is_response_0_safe);
  const safe1 = requiredBoolean(value, fields.is_response_1_safe);
  const better = requiredResponseId(value, fields.better_response_id);
  const safer = requiredResponseId(value, fields.safer_response_id);

  checkNotEmpty(fields.prompt, prompt);
  checkNotEmpty(fields.response_0, response0);
  checkNotEmpty(fields.response_1, response1);
  checkRange(fields.better_response_id, better);
  checkRange(fields.safer_response_id, safer);
  checkDistinct(response0, response1, fields.response_0, fields.response_1);

  return {
    kind: "pku",
    id: recordId(prompt, response0, response1),
    prompt,
    response_0: response0,
    response_1: response1,
    is_response_0_safe: safe0,
    is_response_1_safe: safe1,
    better_response_id: better as 0 | 1,
    safer_response_id: safer as 0 | 1,
    extras: extrasOf(value, fields, "pku"),
    source,
  };
}

function pairwiseRecord(
  value: Record<string, unknown>,
  fields: FieldNames,
  source: SourceLocation,
): PairwiseRecord {
  const prompt = requiredPrompt(value, fields.prompt);
  const chosen = requiredText(value, fields.chosen);
  const rejected = requiredText(value, fields.rejected);
  const margin = optionalNumber(value, fields.margin);

  checkPromptNotEmpty(fields.prompt, prompt);
  checkNotEmpty(fields.chosen, chosen);
  checkNotEmpty(fields.rejected, rejected);
  checkDistinct(chosen, rejected, fields.chosen, fields.rejected);

  return {
    kind: "pairwise",
    id: recordId(prompt, chosen, rejected),
    prompt,
    chosen,
    rejected,
    ...(margin === undefined ? {} : { margin }),
    extras: extrasOf(value, fields, "pairwise"),
    source,
  };
}

function hhRecord(
  value: Record<string, unknown>,
  fields: FieldNames,
  source: SourceLocation,
): PairwiseRecord {
  const chosenText = requiredText(value, fields.chosen);
  const rejectedText = requiredText(value, fields.rejected);

  const split = splitHhPair(chosenText, rejectedText);
  if (!split.ok) {
    throw new RecordProblem(split.reason, split.detail);
  }
  checkPromptNotEmpty("the prompt turns", split.prompt);
  checkNotEmpty(`the final reply of "${fields.chosen}"`, split.chosen);
  checkNotEmpty(`the final reply of "${fields.rejected}"`, split.rejected);
  checkDistinct(split.chosen, split.rejected, fields.chosen, fields.rejected);

  return {
    kind: "pairwise",
    id: recordId(split.prompt, split.chosen, split.rejected),
    prompt: split.prompt,
    chosen: split.chosen,
    rejected: split.rejected,
    extras: extrasOf(value, fields, "hh-rlhf"),
    source,
  };
}

function present(value: Record<string, unknown>, name: string): unknown {
  const field = value[name];
  if (field === undefined || field === null) {
    throw new RecordProblem("missing_field", `field "${name}" is missing`);
  }
  return field;
}

function describe(value: unknown): string {
  if (Array.isArray(value)) {
    return "an array";
  }
  return typeof value === "object" ? "an object" : `${typeof value} ${JSON.stringify(value)}`;
}

function requiredText(value: Record<string, unknown>, name: string): string {
  const field = present(value, name);
  if (typeof field !== "string") {
    throw new RecordProblem(
      "wrong_type",
      `field "${name}" is ${describe(field)}, expected a string`,
    );
  }
  return field;
}

function requiredBoolean(value: Record<string, unknown>, name: string): boolean {
  const field = present(value, name);
  if (typeof field !== "boolean") {
    throw new RecordProblem(
      "wrong_type",
      `field "${name}" is ${describe(field)}, expected a boolean`,
    );
  }
  return field;
}

function requiredResponseId(value: Record<string, unknown>, name: string): number {
  const field = present(value, name);
  if (typeof field !== "number" || !Number.isInteger(field)) {
    throw new RecordProblem("wrong_type", `field "${name}" is ${describe(field)}, expected 0 or 1`);
  }
  return field;
}

function optionalNumber(value: Record<string, unknown>, name: string): number | undefined {
  const field = value[name];
  if (field === undefined || field === null) {
    return undefined;
  }
  if (typeof field !== "number" || !Number.isFinite(field)) {
    throw new RecordProblem(
      "wrong_type",
      `field "${name}" is ${describe(field)}, expected a finite number`,
    );
  }
  return field;
}

/** Reads a prompt: a string, or a list of `{role, content}` turns (user, assistant, ..., user). */
function requiredPrompt(value: Record<string, unknown>, name: string): Prompt {
  const field = present(value, name);
  if (typeof field === "string") {
    return field;
  }
  if (!Array.isArray(field)) {
    throw new RecordProblem(
      "wrong_type",
      `field "${name}" is ${describe(field)}, expected a string or a list of turns`,
    );
  }

  const turns: Turn[] = [];
  for (const [i, turn] of field.entries()) {
    const expected = i % 2 === 0 ? "user" : "assistant";
    const content = (turn as { content?: unknown } | null)?.content;
    const role = (turn as { role?: unknown } | null)?.role;
    if (typeof content !== "string" || role !== expected) {
      throw new RecordProblem(
        "malformed_dialogue",
        `turn ${i + 1} of field "${name}" is not {"role": "${expected}", "content": string}`,
      );
    }
    turns.push({ role: expected, content });
  }
  if (turns.length % 2 === 0) {
    throw new RecordProblem("malformed_dialogue", `field "${name}" must end with a user turn`);
  }
  return turns;
}

function checkNotEmpty(name: string, text: string): void {
  if (text.trim() === "") {
    throw new RecordProblem("empty_text", `${quoteField(name)} is empty`);
  }
}

function checkPromptNotEmpty(name: string, prompt: Prompt): void {
  const last = typeof prompt === "string" ? prompt : (prompt[prompt.length - 1]?.content ?? "");
  if (last.trim() === "") {
    throw new RecordProblem("empty_text", `the last user message of ${quoteField(name)} is empty`);
  }
}

function quoteField(name: string): string {
  return name.startsWith("the ") ? name : `field "${name}"`;
}

function checkRange(name: string, id: number): void {
  if (id !== 0 && id !== 1) {
    throw new RecordProblem("id_out_of_range", `field "${name}" is ${id}, expected 0 or 1`);
  }
}

function checkDistinct(first: string, second: string, firstName: string, secondName: string): void {
  if (first.trim() === second.trim()) {
    throw new RecordProblem(
      "identical_responses",
      `fields "${firstName}" and "${secondName}" have the same text`,
    );
  }
}

function extrasOf(
  value: Record<string, unknown>,
  fields: FieldNames,
  schema: RecordSchema,
): Record<string, unknown> {
  const used = new Set(SCHEMA_FIELDS[schema].map((key) => fields[key]));
  const extras: Record<string, unknown> = {};
  for (const [key, field] of Object.entries(value)) {
    if (!used.has(key)) {
      extras[key] = field;
    }
  }
  return extras;
}
