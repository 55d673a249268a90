// `midpo generate`: a streamed completion of one prompt.

import { MidpoError } from "../errors.js";
import { generate } from "../generate/generate.js";
import type { SamplingOptions } from "../generate/sampling.js";
import { loadModel } from "../model/load.js";
import { formatSafeRlhfPrompt } from "../tokenize/chat.js";
import type { Tokenizer } from "../tokenize/tokenizer.js";
import { applyVariant, type VariantOptions } from "./model-variant.js";

export interface GenerateCommandOptions extends SamplingOptions, VariantOptions {
  showGates: boolean;
  model: string;
  prompt?: string;
  promptIds?: number[];
  template: "none" | "safe-rlhf" | "chat";
  maxNewTokens: number;
  seed: number;
  stop: string[];
  stream: boolean;
  truncate: boolean;
}

function promptIds(options: GenerateCommandOptions, tokenizer: Tokenizer | undefined): number[] {
  if (options.promptIds !== undefined) return options.promptIds;
  if (options.prompt === undefined) {
    throw new MidpoError("pass --prompt TEXT or --prompt-ids IDS");
  }
  if (tokenizer === undefined) {
    throw new MidpoError(
      `--prompt needs a tokenizer, but the model has no tokenizer.json; pass --prompt-ids instead`,
    );
  }
  switch (options.template) {
    case "none":
      return tokenizer.encode(options.prompt);
    case "safe-rlhf":
      return tokenizer.encode(formatSafeRlhfPrompt([options.prompt], tokenizer.eosToken ?? ""));
    case "chat": {
      const text = tokenizer.applyChatTemplate([{ role: "user", content: options.prompt }], {
        addGenerationPrompt: true,
      });
      // Chat templates write their own BOS where the model wants one.
      return tokenizer.encode(text, { addSpecialTokens: false });
    }
  }
}

export async function runGenerate(options: GenerateCommandOptions): Promise<void> {
  const loaded = await loadModel(options.model, "if-present", { mapWeights: true });
  const tokenizer = loaded.tokenizer;
  if (options.showGates && options.router === undefined) {
    throw new MidpoError("--show-gates reports the router's gates, so it needs --router DIR");
  }
  const model = await applyVariant(loaded.model, loaded.directory, options, options.showGates);
  const gates = new GateStats(model.config.numHiddenLayers);
  if (options.stop.length > 0 && tokenizer === undefined) {
    throw new MidpoError("--stop needs a tokenizer, but the model has no tokenizer.json");
  }
  let ids = promptIds(options, tokenizer);
  const max = model.config.maxPositionEmbeddings;
  if (ids.length + options.maxNewTokens > max && options.truncate) {
    ids = ids.slice(Math.max(0, ids.length + options.maxNewTokens - max));
  }

  const eos = tokenizer?.eosTokenIds.length ? [...tokenizer.eosTokenIds] : model.config.eosTokenIds;
  const decode = tokenizer
    ? (t: readonly number[]) => tokenizer.decode(t, { skipSpecialTokens: true })
    : undefined;
  const generated: number[] = [];
  let written = "";

  const [result] = await generate(model, [ids], {
    ...options,
    eosTokenIds: eos,
    padTokenId: model.config.padTokenId ?? eos[0] ?? 0,
    stopStrings: options.stop,
    decode,
    onOutputs: options.showGates
      ? (out, mask, sampled) => gates.add(out, mask, sampled)
      : undefined,
    onToken: (_row, id) => {
      generated.push(id);
      if (!options.stream) return;
      if (decode === undefined) {
        process.stdout.write(`${generated.length > 1 ? " " : ""}${id}`);
        return;
      }
      const text = decode(generated);
      const safe = streamableLength(text, options.stop);
      if (safe > written.length && text.startsWith(written)) {
        process.stdout.write(text.slice(written.length, safe));
        written = text.slice(0, safe);
      }
    },
  });

  const final = result.text ?? result.tokens.join(" ");
  if (!options.stream) process.stdout.write(final);
  else if (decode !== undefined && final.startsWith(written)) {
    process.stdout.write(final.slice(written.length));
  }
  process.stdout.write("\n");
  if (options.showGates) process.stderr.write(gates.format());
  await model.release();
}

/**
 * Returns how much of the decoded text may be streamed. The streamed part stays one character
 * short of the longest stop string behind the text, so that a stop string is recognised
 * before any of it is printed. It also ends before a stop string already in the text,
 * because the token that completes one can bring several of its characters. A trailing
 * U+FFFD (an incomplete UTF-8 character) is held back too.
 */
export function streamableLength(text: string, stops: readonly string[]): number {
  const holdBack = stops.reduce((n, s) => Math.max(n, s.length - 1), 0);
  let safe = text.length - holdBack;
  if (text.endsWith("\uFFFD")) safe = Math.min(safe, text.length - 1);
  for (const stop of stops) {
    const at = stop === "" ? -1 : text.indexOf(stop);
    if (at >= 0) safe = Math.min(safe, at);
  }
  return Math.max(0, safe);
}

/**
 * Mean router gates per layer over the generated tokens. The prompt's runs are left out, so
 * the numbers describe the response; each later run processes one generated token.
 */
class GateStats {
  private promptDone = false;
  private readonly alpha: number[];
  private readonly beta: number[];
  private tokens = 0;

  constructor(private readonly layers: number) {
    this.alpha = new Array<number>(layers).fill(0);
    this.beta = new Array<number>(layers).fill(0);
  }

  add(out: Record<string, { data: unknown }>, mask: number[][], sampled: boolean): void {
    // The prompt's runs end with the first run whose logits are sampled.
    if (!this.promptDone) {
      this.promptDone = sampled;
      return;
    }
    const real = mask[0][mask[0].length - 1] === 1;
    if (!real) return;
    for (let l = 0; l < this.layers; l++) {
      const a = out[`gate.alpha.${l}`].data as Float32Array;
      const b = out[`gate.beta.${l}`].data as Float32Array;
      this.alpha[l] += a[a.length - 1];
      this.beta[l] += b[b.length - 1];
    }
    this.tokens++;
  }

  format(): string {
    if (this.tokens === 0) return "gates: no generated tokens to report\n";
    const mean = (xs: number[]) => xs.reduce((p, x) => p + x, 0) / xs.length / this.tokens;
    const rows = this.alpha.map(
      (a, l) =>
        `  layer ${String(l).padStart(2)}  alpha ${(a / this.tokens).toFixed(3)}  beta ${(this.beta[l] / this.tokens).toFixed(3)}`,
    );
    return `gates over ${this.tokens} generated tokens: mean alpha ${mean(this.alpha).toFixed(3)}, mean beta ${mean(this.beta).toFixed(3)}\n${rows.join("\n")}\n`;
  }
}
