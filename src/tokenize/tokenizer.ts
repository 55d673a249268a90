// Tokenizer for a Hugging Face model directory: `tokenizer.json` (the fast-tokenizer file) and
// `tokenizer_config.json`, run by @huggingface/tokenizers, a pure-JS port of the Rust
// `tokenizers` crate. Encoding, decoding, special-token ids and the chat template live here.
// Loading a SentencePiece `tokenizer.model` without `tokenizer.json` is not supported.

import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { Tokenizer as HfTokenizer } from "@huggingface/tokenizers";
import { z } from "zod";
import { MidpoError } from "../errors.js";
import { renderChatTemplate, selectChatTemplate, type ChatMessage } from "./chat.js";
import { IncrementalDecoder } from "./incremental-decoder.js";

export type { ChatMessage } from "./chat.js";
export { IncrementalDecoder } from "./incremental-decoder.js";

export interface EncodeOptions {
  /**
   * Add BOS/EOS where the post-processor in tokenizer.json, or `add_bos_token` and
   * `add_eos_token` for Llama-family classes, puts them. Default true.
   */
  addSpecialTokens?: boolean;
}

export interface DecodeOptions {
  /** Drop special tokens such as `<s>` and `<|im_end|>` from the text. Default false. */
  skipSpecialTokens?: boolean;
}

export interface ChatTemplateOptions {
  /** Append the header that starts an assistant turn, so the model's reply comes next. */
  addGenerationPrompt?: boolean;
  /** Template to use when `chat_template` is a list of named templates. Default "default". */
  templateName?: string;
  /** Extra variables for the template, e.g. `{ enable_thinking: false }` for Qwen3. */
  variables?: Record<string, unknown>;
}

/** A special token in `tokenizer_config.json`: a string, an AddedToken object, or null. */
const specialTokenSchema = z
  .union([z.string(), z.looseObject({ content: z.string() }), z.null()])
  .optional();

const chatTemplateSchema = z
  .union([
    z.string(),
    z.array(z.object({ name: z.string(), template: z.string() })),
    z.record(z.string(), z.string()),
  ])
  .optional();

const tokenizerConfigSchema = z.looseObject({
  tokenizer_class: z.string().optional(),
  bos_token: specialTokenSchema,
  eos_token: specialTokenSchema,
  pad_token: specialTokenSchema,
  unk_token: specialTokenSchema,
  add_bos_token: z.boolean().optional(),
  add_eos_token: z.boolean().optional(),
  additional_special_tokens: z.array(specialTokenSchema).optional(),
  chat_template: chatTemplateSchema,
});

export type TokenizerConfig = z.infer<typeof tokenizerConfigSchema>;

const tokenizerJsonSchema = z.looseObject({
  model: z.looseObject({ type: z.string().optional() }),
  added_tokens: z.array(z.looseObject({ id: z.number().int(), content: z.string() })),
  post_processor: z.unknown().optional(),
});

type TokenizerJson = z.infer<typeof tokenizerJsonSchema>;

const generationConfigSchema = z.looseObject({
  eos_token_id: z.union([z.number().int(), z.array(z.number().int())]).nullish(),
});

/**
 * transformers classes whose fast tokenizer rebuilds its post-processor from `add_bos_token` and
 * `add_eos_token`, so for these the config flags decide and the post-processor in
 * `tokenizer.json` is ignored.
 */
const CLASSES_WITH_BOS_EOS_FLAGS = new Set([
  "LlamaTokenizer",
  "LlamaTokenizerFast",
  "CodeLlamaTokenizer",
  "CodeLlamaTokenizerFast",
  "GemmaTokenizer",
  "GemmaTokenizerFast",
]);

/** Inputs of {@link Tokenizer.fromJSON}, as parsed JSON objects. */
export interface TokenizerFiles {
  tokenizerJson: unknown;
  tokenizerConfig?: unknown;
  /** `generation_config.json`, whose `eos_token_id` adds stop tokens (Llama 3 lists several). */
  generationConfig?: unknown;
  /** Template text from a `chat_template.jinja` file, used when the config has none. */
  chatTemplateFile?: string;
  /** Directory the files came from, named in error messages. */
  directory?: string;
}

/**
 * A model's tokenizer. Special-token ids are undefined when the tokenizer files do not define
 * them (Qwen has no BOS token, Mistral no pad token).
 */
export class Tokenizer {
  readonly bosTokenId: number | undefined;
  readonly eosTokenId: number | undefined;
  /** Every id that ends generation: the config's EOS first, then `generation_config.json`'s. */
  readonly eosTokenIds: readonly number[];
  readonly padTokenId: number | undefined;
  /** Largest token id + 1, counting added tokens. The embedding needs at least this many rows. */
  readonly vocabSize: number;
  readonly bosToken: string | undefined;
  readonly eosToken: string | undefined;
  /** Directory the tokenizer was loaded from, or a placeholder for in-memory files. */
  readonly directory: string;

  private readonly hf: HfTokenizer;
  private readonly config: TokenizerConfig;
  private readonly chatTemplateFile: string | undefined;
  /** Set when `add_bos_token`/`add_eos_token` override the post-processor. */
  private readonly bosEosFlags: { bos: boolean; eos: boolean } | undefined;

  private constructor(hf: HfTokenizer, parsed: ParsedFiles) {
    this.hf = hf;
    this.directory = parsed.directory;
    this.config = parsed.config;
    this.chatTemplateFile = parsed.chatTemplateFile;

    this.vocabSize = largestId(hf) + 1;
    this.bosToken = tokenContent(this.config.bos_token);
    this.eosToken = tokenContent(this.config.eos_token);
    this.bosTokenId =
      this.idOf(this.bosToken) ?? firstTemplateSpecialId(parsed.json.post_processor);
    this.padTokenId = this.idOf(tokenContent(this.config.pad_token));

    const configEos = this.idOf(this.eosToken);
    const eosIds = configEos === undefined ? [] : [configEos];
    this.eosTokenIds = [...new Set([...eosIds, ...parsed.generationEosIds])];
    this.eosTokenId = this.eosTokenIds[0];

    this.bosEosFlags = bosEosFlags(this.config);
  }

  /**
   * Loads `tokenizer.json`, and `tokenizer_config.json`, `generation_config.json` and
   * `chat_template.jinja` when present, from a model directory.
   */
  static fromDirectory(dir: string): Tokenizer {
    const tokenizerPath = join(dir, "tokenizer.json");
    if (!existsSync(tokenizerPath)) {
      throw new MidpoError(
        `Missing tokenizer file ${tokenizerPath}. midpo reads only the fast-tokenizer file ` +
          `tokenizer.json, so create it with transformers ` +
          `(AutoTokenizer.from_pretrained(dir).save_pretrained(dir)), ` +
          `or pass input_ids instead of text.`,
      );
    }

    return Tokenizer.fromJSON({
      tokenizerJson: readJsonFile(tokenizerPath),
      tokenizerConfig: readOptionalJsonFile(join(dir, "tokenizer_config.json")),
      generationConfig: readOptionalJsonFile(join(dir, "generation_config.json")),
      chatTemplateFile: readOptionalTextFile(join(dir, "chat_template.jinja")),
      directory: dir,
    });
  }

  static fromJSON(files: TokenizerFiles): Tokenizer {
    const parsed = parseFiles(files);

    let hf: HfTokenizer;
    try {
      hf = new HfTokenizer(parsed.json, parsed.config);
    } catch (error) {
      throw new MidpoError(
        `Invalid tokenizer ${join(parsed.directory, "tokenizer.json")}: ` +
          `${(error as Error).message}. Check that it is a Hugging Face fast-tokenizer file, ` +
          `or pass input_ids instead of text.`,
      );
    }

    return new Tokenizer(hf, parsed);
  }

  encode(text: string, options: EncodeOptions = {}): number[] {
    const addSpecialTokens = options.addSpecialTokens ?? true;
    if (!addSpecialTokens || this.bosEosFlags === undefined) {
      return this.hf.encode(text, { add_special_tokens: addSpecialTokens }).ids;
    }

    const ids = this.hf.encode(text, { add_special_tokens: false }).ids;
    if (this.bosEosFlags.bos && this.bosTokenId !== undefined) {
      ids.unshift(this.bosTokenId);
    }
    if (this.bosEosFlags.eos && this.eosTokenId !== undefined) {
      ids.push(this.eosTokenId);
    }
    return ids;
  }

  /**
   * Decodes ids to text. Ids with no token, such as padded embedding rows past the vocab, are
   * skipped, as the Rust `tokenizers` crate does.
   */
  decode(ids: readonly number[], options: DecodeOptions = {}): string {
    const known = ids.filter((id) => this.hf.id_to_token(id) !== undefined);
    if (known.length === 0) {
      return "";
    }
    return this.hf.decode(known, { skip_special_tokens: options.skipSpecialTokens ?? false });
  }

  /** Starts a decoder that turns a growing list of generated ids into text deltas. */
  createIncrementalDecoder(options: DecodeOptions = {}): IncrementalDecoder {
    return new IncrementalDecoder((ids) => this.decode(ids, options));
  }

  tokenToId(token: string): number | undefined {
    return this.hf.token_to_id(token);
  }

  idToToken(id: number): string | undefined {
    return this.hf.id_to_token(id);
  }

  get hasChatTemplate(): boolean {
    return this.config.chat_template !== undefined || this.chatTemplateFile !== undefined;
  }

  /**
   * Renders `messages` with the model's Jinja chat template, passing the special tokens as
   * transformers does (`bos_token`, `eos_token`, ...). The result is text. Encode it with
   * `addSpecialTokens: false` when the template already writes the BOS token.
   */
  applyChatTemplate(messages: ChatMessage[], options: ChatTemplateOptions = {}): string {
    const template = selectChatTemplate(
      this.config.chat_template ?? this.chatTemplateFile,
      options.templateName,
      this.directory,
    );

    return renderChatTemplate(template, {
      ...this.specialTokenVariables(),
      ...options.variables,
      messages,
      add_generation_prompt: options.addGenerationPrompt ?? false,
    });
  }

  private specialTokenVariables(): Record<string, unknown> {
    const variables: Record<string, unknown> = {};
    for (const name of ["bos_token", "eos_token", "pad_token", "unk_token"] as const) {
      const content = tokenContent(this.config[name]);
      if (content !== undefined) {
        variables[name] = content;
      }
    }
    const additional = this.config.additional_special_tokens?.map(tokenContent);
    if (additional !== undefined) {
      variables.additional_special_tokens = additional.filter((token) => token !== undefined);
    }
    return variables;
  }

  private idOf(token: string | undefined): number | undefined {
    return token === undefined ? undefined : this.hf.token_to_id(token);
  }
}

function largestId(hf: HfTokenizer): number {
  let largest = -1;
  for (const id of hf.get_vocab(true).values()) {
    largest = Math.max(largest, id);
  }
  return largest;
}

function tokenContent(token: z.infer<typeof specialTokenSchema>): string | undefined {
  if (token === undefined || token === null) {
    return undefined;
  }
  return typeof token === "string" ? token : token.content;
}

function bosEosFlags(config: TokenizerConfig): { bos: boolean; eos: boolean } | undefined {
  if (
    config.tokenizer_class === undefined ||
    !CLASSES_WITH_BOS_EOS_FLAGS.has(config.tokenizer_class)
  ) {
    return undefined;
  }
  if (config.add_bos_token === undefined && config.add_eos_token === undefined) {
    return undefined;
  }
  // LlamaTokenizerFast defaults: add_bos_token=True, add_eos_token=False.
  return { bos: config.add_bos_token ?? true, eos: config.add_eos_token ?? false };
}

/** Finds the id of the special token that a TemplateProcessing post-processor puts first. */
function firstTemplateSpecialId(postProcessor: unknown): number | undefined {
  const parsed = z
    .object({
      type: z.literal("TemplateProcessing"),
      single: z.array(z.unknown()),
      special_tokens: z.record(z.string(), z.object({ ids: z.array(z.number()) })),
    })
    .safeParse(postProcessor);
  if (!parsed.success) {
    return undefined;
  }

  const first = z
    .object({ SpecialToken: z.object({ id: z.string() }) })
    .safeParse(parsed.data.single[0]);
  if (!first.success) {
    return undefined;
  }
  return parsed.data.special_tokens[first.data.SpecialToken.id]?.ids[0];
}

interface ParsedFiles {
  json: TokenizerJson;
  config: TokenizerConfig;
  generationEosIds: number[];
  chatTemplateFile: string | undefined;
  directory: string;
}

function parseFiles(files: TokenizerFiles): ParsedFiles {
  const directory = files.directory ?? "(in-memory tokenizer)";
  const json = parseWith(
    tokenizerJsonSchema,
    files.tokenizerJson,
    join(directory, "tokenizer.json"),
  );
  const config = parseWith(
    tokenizerConfigSchema,
    files.tokenizerConfig ?? {},
    join(directory, "tokenizer_config.json"),
  );
  const generationConfig = parseWith(
    generationConfigSchema,
    files.generationConfig ?? {},
    join(directory, "generation_config.json"),
  );

  const eos = generationConfig.eos_token_id;
  const generationEosIds = eos === undefined || eos === null ? [] : [eos].flat();
  return { json, config, generationEosIds, chatTemplateFile: files.chatTemplateFile, directory };
}

function parseWith<T>(schema: z.ZodType<T>, value: unknown, path: string): T {
  const result = schema.safeParse(value);
  if (!result.success) {
    const issue = result.error.issues[0];
    const field = issue.path.join(".") || "(top level)";
    throw new MidpoError(
      `Invalid ${path}: ${field}: ${issue.message}. Re-download the model's tokenizer files, ` +
        `or pass input_ids instead of text.`,
    );
  }
  return result.data;
}

function readJsonFile(path: string): unknown {
  const text = readFileSync(path, "utf8");
  try {
    return JSON.parse(text);
  } catch (error) {
    throw new MidpoError(
      `Invalid JSON in ${path}: ${(error as Error).message}. Re-download the file, ` +
        `or pass input_ids instead of text.`,
    );
  }
}

function readOptionalJsonFile(path: string): unknown {
  return existsSync(path) ? readJsonFile(path) : undefined;
}

function readOptionalTextFile(path: string): string | undefined {
  return existsSync(path) ? readFileSync(path, "utf8") : undefined;
}
