// Prompt formats: the model's own Jinja chat template (rendered with @huggingface/jinja), and the
// plain-text format that PKU-Alignment's safe-rlhf models (Alpaca-7B reproduced, Beaver) were
// trained on.

import { Template } from "@huggingface/jinja";
import { MidpoError } from "../errors.js";

/** One turn of a conversation, in the shape chat templates expect. */
export interface ChatMessage {
  role: string;
  content: string;
  [key: string]: unknown;
}

/** `chat_template` as `tokenizer_config.json` stores it: one template, or several by name. */
export type ChatTemplateSource =
  string | { name: string; template: string }[] | Record<string, string>;

const compiledTemplates = new Map<string, Template>();

/**
 * Picks the template text out of `chat_template`. With named templates, `name` (default
 * "default") selects one, as transformers does.
 */
export function selectChatTemplate(
  chatTemplate: ChatTemplateSource | undefined,
  name: string | undefined,
  source: string,
): string {
  if (chatTemplate === undefined) {
    throw new MidpoError(
      `The tokenizer at ${source} has no chat template (no chat_template in ` +
        `tokenizer_config.json and no chat_template.jinja). Use the safe-rlhf template ` +
        `(--template safe-rlhf, or data.template: safe-rlhf in a pipeline config), or a ` +
        `model whose tokenizer defines a chat template.`,
    );
  }
  if (typeof chatTemplate === "string") {
    return chatTemplate;
  }

  const byName = Array.isArray(chatTemplate)
    ? Object.fromEntries(chatTemplate.map((entry) => [entry.name, entry.template]))
    : chatTemplate;
  const requested = name ?? "default";
  const template = byName[requested];
  if (template === undefined) {
    throw new MidpoError(
      `The tokenizer at ${source} has no chat template named "${requested}". ` +
        `Its templates are: ${Object.keys(byName).join(", ")}.`,
    );
  }
  return template;
}

/** Renders a chat template. A template that calls `raise_exception` raises a MidpoError. */
export function renderChatTemplate(template: string, variables: Record<string, unknown>): string {
  let compiled = compiledTemplates.get(template);
  if (compiled === undefined) {
    compiled = new Template(template);
    compiledTemplates.set(template, compiled);
  }

  try {
    return compiled.render(variables);
  } catch (error) {
    throw new MidpoError(
      `The chat template rejected the conversation: ${(error as Error).message}`,
    );
  }
}

const SAFE_RLHF_BEGIN = "BEGINNING OF CONVERSATION: ";
const SAFE_RLHF_ASSISTANT = "ASSISTANT:";

/**
 * Formats a conversation the way safe-rlhf's `format_prompt` does:
 * `BEGINNING OF CONVERSATION: USER: {q1} ASSISTANT:{a1}{eos}USER: {q2} ASSISTANT:`.
 *
 * `turns` alternate user, assistant, user, ... and must end with a user turn, so the output ends
 * with `ASSISTANT:` and no trailing space. An assistant turn is written right after `ASSISTANT:`
 * with nothing inserted, followed by the EOS token text (`</s>` for Llama 2 models).
 */
export function formatSafeRlhfPrompt(
  turns: readonly (string | ChatMessage)[],
  eosToken: string,
): string {
  if (turns.length % 2 !== 1) {
    throw new MidpoError(
      `A safe-rlhf prompt needs an odd number of turns (user, assistant, ..., user), got ${turns.length}. ` +
        `End the conversation with a user turn.`,
    );
  }

  const parts = [SAFE_RLHF_BEGIN];
  turns.forEach((turn, index) => {
    const expectedRole = index % 2 === 0 ? "user" : "assistant";
    const content = turnContent(turn, expectedRole, index);
    if (expectedRole === "user") {
      parts.push(`USER: ${content} `, SAFE_RLHF_ASSISTANT);
    } else {
      parts.push(content, eosToken);
    }
  });
  return parts.join("");
}

function turnContent(turn: string | ChatMessage, expectedRole: string, index: number): string {
  if (typeof turn === "string") {
    return turn;
  }
  if (turn.role !== expectedRole) {
    throw new MidpoError(
      `Turn ${index} of a safe-rlhf prompt has role "${turn.role}", expected "${expectedRole}". ` +
        `The format has no system turn, and user and assistant turns must alternate.`,
    );
  }
  return turn.content;
}
