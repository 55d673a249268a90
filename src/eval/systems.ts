// The systems file: which models an evaluation compares. YAML or JSON, either a list of systems
// or an object with a `systems` list. Each system is one of
//
//   base        the base model alone                      needs base
//   adapter     base + one LoRA adapter (e.g. a DPO expert)  needs base, adapter
//   static-mix  base + both experts with fixed gates       needs base, safety, helpfulness,
//                                                          alpha, beta
//   router      base + both experts mixed per token by a   needs base, safety, helpfulness,
//               trained router                             router
//
// Paths are relative to the systems file. Keys that a kind does not use are rejected, so a
// typo such as `adaptor` or an `alpha` on a router system is reported instead of ignored.
//
//   systems:
//     - { name: base, kind: base, base: models/alpaca }
//     - { name: midpo, kind: router, base: models/alpaca, safety: out/safety,
//         helpfulness: out/helpfulness, router: out/router }

import { existsSync, readFileSync, statSync } from "node:fs";
import { dirname, extname, resolve } from "node:path";
import { parse as parseYaml, YAMLParseError } from "yaml";
import { z } from "zod";
import { MidpoError } from "../errors.js";

export const SYSTEM_KINDS = ["base", "adapter", "static-mix", "router"] as const;

export type SystemKind = (typeof SYSTEM_KINDS)[number];

/** One system, with every path absolute. */
export interface SystemSpec {
  name: string;
  kind: SystemKind;
  base: string;
  adapter?: string;
  safety?: string;
  helpfulness?: string;
  router?: string;
  alpha?: number;
  beta?: number;
}

type OptionalKey = "adapter" | "safety" | "helpfulness" | "router" | "alpha" | "beta";

/** Keys each kind needs besides name, kind and base. Other optional keys are invalid. */
const REQUIRED_KEYS: Record<SystemKind, readonly OptionalKey[]> = {
  base: [],
  adapter: ["adapter"],
  "static-mix": ["safety", "helpfulness", "alpha", "beta"],
  router: ["safety", "helpfulness", "router"],
};

const OPTIONAL_KEYS: readonly OptionalKey[] = [
  "adapter",
  "safety",
  "helpfulness",
  "router",
  "alpha",
  "beta",
];

const pathSchema = z.string().min(1, "must be a non-empty path");

const systemSchema = z
  .strictObject({
    name: z
      .string()
      .regex(
        /^[A-Za-z0-9][A-Za-z0-9._-]*$/,
        "must start with a letter or digit and contain only letters, digits, '.', '_' and '-', " +
          "because it names output folders",
      ),
    kind: z.enum(SYSTEM_KINDS),
    base: pathSchema,
    adapter: pathSchema.optional(),
    safety: pathSchema.optional(),
    helpfulness: pathSchema.optional(),
    router: pathSchema.optional(),
    alpha: z.number().optional(),
    beta: z.number().optional(),
  })
  .superRefine((system, context) => {
    const required = REQUIRED_KEYS[system.kind];
    for (const key of OPTIONAL_KEYS) {
      const present = system[key] !== undefined;
      if (required.includes(key) && !present) {
        context.addIssue({
          code: "custom",
          path: [key],
          message: `is required for kind "${system.kind}"`,
        });
      }
      if (!required.includes(key) && present) {
        context.addIssue({
          code: "custom",
          path: [key],
          message: `is not used by kind "${system.kind}"; remove it or change the kind`,
        });
      }
    }
  });

const systemsFileSchema = z.union([
  z.array(systemSchema),
  z.strictObject({ systems: z.array(systemSchema) }),
]);

/**
 * Reads and validates a systems file. Errors name the file and the key, such as
 * `systems[2].safety`, and state what to change.
 */
export function loadSystemsFile(path: string): SystemSpec[] {
  if (!existsSync(path)) throw new MidpoError(`systems file not found: ${path}`);
  const raw = parseSystemsText(readFileSync(path, "utf8"), path);
  return validateSystems(raw, path, dirname(resolve(path)));
}

function parseSystemsText(text: string, path: string): unknown {
  try {
    return extname(path).toLowerCase() === ".json" ? JSON.parse(text) : parseYaml(text);
  } catch (error) {
    if (error instanceof SyntaxError || error instanceof YAMLParseError) {
      throw new MidpoError(`invalid systems file ${path}: ${error.message}`);
    }
    throw error;
  }
}

/**
 * Validates parsed systems (a list, or `{ systems: [...] }`) and resolves their paths against
 * `baseDir`. Every directory must exist. `source` names the input in errors.
 */
export function validateSystems(raw: unknown, source: string, baseDir: string): SystemSpec[] {
  if (typeof raw !== "object" || raw === null) {
    throw new MidpoError(
      `${source}: expected a list of systems or an object with a "systems" list, ` +
        `got ${JSON.stringify(raw)}`,
    );
  }
  const parsed = systemsFileSchema.safeParse(raw);
  if (!parsed.success) throw new MidpoError(describeIssue(parsed.error, raw, source));

  const systems = Array.isArray(parsed.data) ? parsed.data : parsed.data.systems;
  if (systems.length === 0) throw new MidpoError(`${source}: the systems list is empty`);

  const seen = new Set<string>();
  return systems.map((system, i) => {
    if (seen.has(system.name)) {
      throw new MidpoError(
        `${source}: systems[${i}].name "${system.name}" is used twice; give each system its own name`,
      );
    }
    seen.add(system.name);
    const spec: SystemSpec = { ...system };
    for (const key of ["base", ...OPTIONAL_KEYS] as const) {
      const value = system[key];
      if (typeof value !== "string") continue;
      const path = resolve(baseDir, value);
      if (!existsSync(path) || !statSync(path).isDirectory()) {
        throw new MidpoError(`${source}: systems[${i}].${key}: directory not found: ${path}`);
      }
      (spec as unknown as Record<string, unknown>)[key] = path;
    }
    return spec;
  });
}

/** Formats the first issue as `file: systems[1].alpha: message`, the way users locate it. */
function describeIssue(error: z.ZodError, raw: unknown, source: string): string {
  // A union reports both branches, and the branch matching the input's shape explains it.
  let issue = error.issues[0];
  if (issue.code === "invalid_union") {
    const branch = Array.isArray(raw) ? 0 : 1;
    issue = issue.errors[branch]?.[0] ?? issue;
  }
  const isList = Array.isArray(raw);
  const path = issue.path
    .map((part, i) => {
      if (typeof part === "number") return `[${part}]`;
      return i === 0 ? String(part) : `.${String(part)}`;
    })
    .join("");
  let where = path;
  if (isList) {
    where = `systems${path}`;
  } else if (path === "") {
    where = "(top level)";
  }
  return `${source}: ${where}: ${issue.message}`;
}
