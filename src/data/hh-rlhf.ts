// Anthropic hh-rlhf dialogues. Each record contains two full transcripts, `chosen` and `rejected`,
// written as "\n\nHuman: ...\n\nAssistant: ..." turns. They share every turn except the final
// Assistant reply, so a pair is (shared turns as the prompt, final chosen reply, final rejected
// reply).

import type { Turn } from "./types.js";

const TURN_MARKER = /(?:^|\n\n)(Human|Assistant):/g;

export type HhSplitResult =
  | { ok: true; prompt: Turn[]; chosen: string; rejected: string }
  | { ok: false; reason: "malformed_dialogue" | "prefix_mismatch"; detail: string };

/**
 * Parses one transcript into turns, or returns why it is malformed. Turn text is trimmed, which
 * removes the space after each `Human:` and `Assistant:` marker. Turns must alternate, starting
 * with Human, and nothing but whitespace may come before the first marker.
 */
export function parseHhTranscript(text: string): Turn[] | string {
  const markers = [...text.matchAll(TURN_MARKER)];
  if (markers.length === 0) {
    return "no Human: or Assistant: turn found";
  }
  if (text.slice(0, markers[0].index).trim() !== "") {
    return "text before the first Human: turn";
  }

  const turns: Turn[] = [];
  for (const [i, marker] of markers.entries()) {
    const role = marker[1] === "Human" ? "user" : "assistant";
    const expected = i % 2 === 0 ? "user" : "assistant";
    if (role !== expected) {
      return `turn ${i + 1} is ${marker[1]}, expected ${expected === "user" ? "Human" : "Assistant"}`;
    }
    const start = marker.index + marker[0].length;
    const end = i + 1 < markers.length ? markers[i + 1].index : text.length;
    turns.push({ role, content: text.slice(start, end).trim() });
  }
  return turns;
}

/**
 * Splits a chosen/rejected transcript pair into the shared prompt turns and the two final
 * Assistant replies. Both transcripts must end with an Assistant turn and agree on all turns
 * before it, otherwise the result names a `malformed_dialogue` or `prefix_mismatch`.
 */
export function splitHhPair(chosenText: string, rejectedText: string): HhSplitResult {
  const chosen = parseHhTranscript(chosenText);
  if (typeof chosen === "string") {
    return { ok: false, reason: "malformed_dialogue", detail: `"chosen": ${chosen}` };
  }
  const rejected = parseHhTranscript(rejectedText);
  if (typeof rejected === "string") {
    return { ok: false, reason: "malformed_dialogue", detail: `"rejected": ${rejected}` };
  }

  for (const [name, turns] of [
    ["chosen", chosen],
    ["rejected", rejected],
  ] as const) {
    if (turns[turns.length - 1].role !== "assistant") {
      return {
        ok: false,
        reason: "malformed_dialogue",
        detail: `"${name}" ends with a Human turn, expected a final Assistant reply`,
      };
    }
  }

  const prompt = chosen.slice(0, -1);
  const rejectedPrompt = rejected.slice(0, -1);
  if (prompt.length !== rejectedPrompt.length) {
    return {
      ok: false,
      reason: "prefix_mismatch",
      detail: `"chosen" has ${chosen.length} turns and "rejected" ${rejected.length}`,
    };
  }
  const differing = prompt.findIndex((turn, i) => turn.content !== rejectedPrompt[i].content);
  if (differing !== -1) {
    return {
      ok: false,
      reason: "prefix_mismatch",
      detail: `the transcripts differ at turn ${differing + 1} of ${chosen.length}`,
    };
  }

  return {
    ok: true,
    prompt,
    chosen: chosen[chosen.length - 1].content,
    rejected: rejected[rejected.length - 1].content,
  };
}
