// The pipeline configuration file (YAML or JSON), validated up front so that a typo fails in
// the first second with the key's path, not an hour later in the stage that reads it.

import { existsSync, readFileSync } from "node:fs";
import { dirname, resolve } from "node:path";
import { parse as parseYaml } from "yaml";
import { z } from "zod";
import { FILE_FORMATS } from "../data/read.js";
import { DEFAULT_FIELDS, RECORD_SCHEMAS } from "../data/validate.js";
import { MidpoError } from "../errors.js";

const positiveInt = z.number().int().positive();

const trainerSchema = z
  .object({
    lr: z.number().positive().optional(),
    epochs: positiveInt.optional(),
    max_steps: positiveInt.optional(),
    batch_size: positiveInt.optional(),
    grad_accum: positiveInt.optional(),
    warmup_ratio: z.number().min(0).max(1).optional(),
    weight_decay: z.number().min(0).optional(),
    schedule: z.enum(["constant", "linear", "cosine"]).optional(),
    save_every: z.number().int().min(0).optional(),
    eval_every: z.number().int().min(0).optional(),
  })
  .strict();

const loraSchema = z
  .object({
    r: positiveInt.optional(),
    alpha: z.number().positive().optional(),
    dropout: z.number().min(0).max(0.9).optional(),
    target_modules: z.array(z.string()).optional(),
  })
  .strict();

export const pipelineSchema = z
  .object({
    out: z.string(),
    seed: z.number().int().min(0).default(0),
    model: z.string(),
    cache_dir: z.string().optional(),
    data: z
      .object({
        files: z.array(z.string()).min(1),
        extra_safety: z.array(z.string()).default([]),
        eval_ratio: z.number().min(0).max(0.9).default(0.1),
        template: z.enum(["safe-rlhf", "chat"]).default("safe-rlhf"),
        max_length: positiveInt.default(512),
        strict: z.boolean().default(false),
        /** The `--format`, `--file-format`, `--split` and `--field` flags of `midpo data`. */
        format: z.enum(["auto", ...RECORD_SCHEMAS] as [string, ...string[]]).default("auto"),
        file_format: z.enum(FILE_FORMATS as [string, ...string[]]).optional(),
        split: z.string().optional(),
        fields: z
          .record(z.string(), z.string().min(1))
          .superRefine((fields, ctx) => {
            for (const name of Object.keys(fields).filter((k) => !(k in DEFAULT_FIELDS))) {
              ctx.addIssue({
                code: "custom",
                path: [name],
                message: `unknown field "${name}"; fields are ${Object.keys(DEFAULT_FIELDS).join(", ")}`,
              });
            }
          })
          .default({}),
      })
      .strict(),
    sft: trainerSchema
      .extend({ data: z.array(z.string()).min(1), lora: loraSchema.nullable().default(null) })
      .strict()
      .optional(),
    reward: trainerSchema
      .extend({
        lora: loraSchema.nullable().default({}),
        unfreeze_layers: z.number().int().min(0).default(0),
        regularization: z.number().min(0).default(0.001),
      })
      .strict()
      .default({ lora: {}, unfreeze_layers: 0, regularization: 0.001 }),
    cost: trainerSchema
      .extend({
        lora: loraSchema.nullable().default({}),
        unfreeze_layers: z.number().int().min(0).default(0),
        regularization: z.number().min(0).default(0.001),
      })
      .strict()
      .default({ lora: {}, unfreeze_layers: 0, regularization: 0.001 }),
    experts: trainerSchema
      .extend({
        beta: z.number().positive().default(0.1),
        margin_scale: z.number().min(0).default(1),
        lora: loraSchema.default({}),
        baselines: z.boolean().default(true),
      })
      .strict()
      .default({ beta: 0.1, margin_scale: 1, lora: {}, baselines: true }),
    router: trainerSchema
      .extend({
        kind: z.enum(["reference", "compact"]).default("reference"),
        hidden: positiveInt.default(512),
        lambda_alpha: z.number().min(0).default(1),
        lambda_beta: z.number().min(0).default(1),
        beta: z.number().positive().default(0.1),
        dual: z.enum(["label", "cost"]).default("label"),
      })
      .strict()
      .default({
        kind: "reference",
        hidden: 512,
        lambda_alpha: 1,
        lambda_beta: 1,
        beta: 0.1,
        dual: "label",
      }),
    eval: z
      .object({
        prompts: z.array(z.string()).min(1),
        max_new_tokens: positiveInt.default(64),
        temperature: z.number().min(0).default(0),
        limit: positiveInt.optional(),
        /** Label for the unlabelled rows of a set, by set name (file stem). */
        set_labels: z.record(z.string(), z.enum(["safe", "unsafe"])).default({}),
        static_mix: z
          .object({ alpha: z.number(), beta: z.number() })
          .strict()
          .default({ alpha: 0.5, beta: 0.5 }),
      })
      .strict()
      .optional(),
  })
  .strict();

export type PipelineConfig = z.infer<typeof pipelineSchema>;
export type TrainerSection = z.infer<typeof trainerSchema>;
export type LoraSection = z.infer<typeof loraSchema>;

/** Resolves relative paths in the config against the config file's directory. */
function resolvePaths(config: PipelineConfig, base: string): PipelineConfig {
  // path.resolve also normalises absolute paths ("/a/b/", "/a/../a/b"), so that one file written
  // two ways gives the same stage hash.
  const r = (p: string) => resolve(base, p);
  // A model whose first path segment is a directory next to the config is a path, even when
  // the rest is missing, so that resolveModel names the missing directory instead of asking
  // the hub for it.
  const looksLocal = (p: string) =>
    p.startsWith(".") ||
    p.startsWith("/") ||
    existsSync(resolve(base, p)) ||
    (p.includes("/") && !p.includes("@") && existsSync(resolve(base, p.split("/")[0]!)));
  return {
    ...config,
    out: r(config.out),
    model: looksLocal(config.model) ? r(config.model) : config.model,
    cache_dir: config.cache_dir === undefined ? undefined : r(config.cache_dir),
    data: {
      ...config.data,
      files: config.data.files.map(r),
      extra_safety: config.data.extra_safety.map(r),
    },
    sft: config.sft === undefined ? undefined : { ...config.sft, data: config.sft.data.map(r) },
    eval:
      config.eval === undefined
        ? undefined
        : { ...config.eval, prompts: config.eval.prompts.map(r) },
  };
}

export function parsePipelineConfig(
  value: unknown,
  source: string,
  baseDir: string,
): PipelineConfig {
  const result = pipelineSchema.safeParse(value);
  if (!result.success) {
    const lines = result.error.issues.map(
      (issue) => `  ${issue.path.join(".") || "(top level)"}: ${issue.message}`,
    );
    throw new MidpoError(`invalid pipeline config ${source}:\n${lines.join("\n")}`);
  }
  return resolvePaths(result.data, baseDir);
}

export function readPipelineConfig(path: string): PipelineConfig {
  if (!existsSync(path)) throw new MidpoError(`pipeline config ${path} does not exist`);
  let value: unknown;
  try {
    value = parseYaml(readFileSync(path, "utf8"));
  } catch (error) {
    throw new MidpoError(`${path} is not valid YAML: ${(error as Error).message}`);
  }
  return parsePipelineConfig(value, path, dirname(resolve(path)));
}
