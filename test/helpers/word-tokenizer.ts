// A WordLevel tokenizer for tests on the tiny fixture models, whose vocabularies are too small
// for a real tokenizer: whitespace-split words, `<s>` prepended.

import { writeFileSync } from "node:fs";
import { join } from "node:path";

/**
 * Writes tokenizer.json and tokenizer_config.json into `dir`. `words` take ids 0, 1, 2, ... and
 * must start with `<unk>`, `<s>` and `</s>`. Ids past them up to `vocabSize` become `tok<id>`.
 */
export function writeWordTokenizer(
  dir: string,
  words: readonly string[],
  vocabSize = words.length,
): void {
  const vocab: Record<string, number> = {};
  words.forEach((word, id) => (vocab[word] = id));
  for (let id = words.length; id < vocabSize; id++) vocab[`tok${id}`] = id;

  const special = (id: number) => ({
    id,
    content: words[id],
    single_word: false,
    lstrip: false,
    rstrip: false,
    normalized: false,
    special: true,
  });
  const bos = { SpecialToken: { id: "<s>", type_id: 0 } };
  const tokenizer = {
    version: "1.0",
    added_tokens: [special(0), special(1), special(2)],
    normalizer: null,
    pre_tokenizer: { type: "Whitespace" },
    post_processor: {
      type: "TemplateProcessing",
      single: [bos, { Sequence: { id: "A", type_id: 0 } }],
      pair: [bos, { Sequence: { id: "A", type_id: 0 } }, { Sequence: { id: "B", type_id: 1 } }],
      special_tokens: { "<s>": { id: "<s>", ids: [1], tokens: ["<s>"] } },
    },
    decoder: null,
    model: { type: "WordLevel", vocab, unk_token: "<unk>" },
  };
  writeFileSync(join(dir, "tokenizer.json"), JSON.stringify(tokenizer));
  writeFileSync(
    join(dir, "tokenizer_config.json"),
    JSON.stringify({
      tokenizer_class: "PreTrainedTokenizerFast",
      bos_token: "<s>",
      eos_token: "</s>",
      unk_token: "<unk>",
    }),
  );
}
