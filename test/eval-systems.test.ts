import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { MidpoError } from "../src/errors.js";
import { loadSystemsFile } from "../src/eval/systems.js";

const work = mkdtempSync(join(tmpdir(), "midpo-eval-systems-"));
for (const dir of ["base", "safety", "helpfulness", "router", "dpo"]) {
  mkdirSync(join(work, "models", dir), { recursive: true });
}

afterAll(() => {
  rmSync(work, { recursive: true, force: true });
});

let counter = 0;
function systemsFile(text: string, extension = "yaml"): string {
  const path = join(work, `systems-${counter++}.${extension}`);
  writeFileSync(path, text);
  return path;
}

function loadYaml(text: string) {
  return () => loadSystemsFile(systemsFile(text));
}

describe("systems file", () => {
  it("reads every kind and resolves paths against the file", () => {
    const systems = loadSystemsFile(
      systemsFile(
        [
          "systems:",
          "  - { name: base, kind: base, base: models/base }",
          "  - { name: dpo, kind: adapter, base: models/base, adapter: models/dpo }",
          "  - name: mix",
          "    kind: static-mix",
          "    base: models/base",
          "    safety: models/safety",
          "    helpfulness: models/helpfulness",
          "    alpha: 0.3",
          "    beta: 0.7",
          "  - name: midpo",
          "    kind: router",
          "    base: models/base",
          "    safety: models/safety",
          "    helpfulness: models/helpfulness",
          "    router: models/router",
        ].join("\n"),
      ),
    );
    expect(systems.map((s) => s.kind)).toEqual(["base", "adapter", "static-mix", "router"]);
    expect(systems[1].adapter).toBe(join(work, "models", "dpo"));
    expect(systems[2].alpha).toBe(0.3);
    expect(systems[3].router).toBe(join(work, "models", "router"));
  });

  it("reads a JSON list", () => {
    const path = systemsFile(
      JSON.stringify([{ name: "b", kind: "base", base: "models/base" }]),
      "json",
    );
    expect(loadSystemsFile(path)).toEqual([
      { name: "b", kind: "base", base: join(work, "models", "base") },
    ]);
  });
});

describe("systems file errors", () => {
  it.each([
    [
      "a key the kind needs",
      "- { name: d, kind: adapter, base: models/base }",
      /systems\[0\]\.adapter: is required for kind "adapter"/,
    ],
    [
      "a key the kind does not use",
      "- { name: r, kind: router, base: models/base, safety: models/safety, helpfulness: models/helpfulness, router: models/router, alpha: 1 }",
      /systems\[0\]\.alpha: is not used by kind "router"/,
    ],
    [
      "a misspelt key",
      "- { name: d, kind: adapter, base: models/base, adaptor: models/dpo }",
      /systems\[0\]: Unrecognized key: "adaptor"/,
    ],
    [
      "an unknown kind",
      "- { name: d, kind: lora, base: models/base }",
      /systems\[0\]\.kind: Invalid option/,
    ],
    [
      "a gate that is not a number",
      "- { name: m, kind: static-mix, base: models/base, safety: models/safety, helpfulness: models/helpfulness, alpha: high, beta: 1 }",
      /systems\[0\]\.alpha: Invalid input: expected number/,
    ],
    [
      "a name unfit for a folder",
      "- { name: my/system, kind: base, base: models/base }",
      /systems\[0\]\.name: must start with a letter or digit/,
    ],
    [
      "a missing directory",
      "- { name: b, kind: base, base: models/nowhere }",
      /systems\[0\]\.base: directory not found: .*models\/nowhere/,
    ],
    [
      "a duplicate name",
      "- { name: b, kind: base, base: models/base }\n- { name: b, kind: base, base: models/base }",
      /systems\[1\]\.name "b" is used twice/,
    ],
    ["an empty list", "systems: []", /the systems list is empty/],
    ["a scalar", "just text", /expected a list of systems/],
    ["invalid YAML", "- { name: b, kind: base", /invalid systems file/],
  ])("names %s", (_case, text, message) => {
    const load = loadYaml(text);
    expect(load).toThrow(MidpoError);
    expect(load).toThrow(message);
  });

  it("names the key under a systems list", () => {
    const load = loadYaml("systems:\n  - { name: b, kind: base }");
    expect(load).toThrow(/systems\[0\]\.base: Invalid input: expected string/);
  });

  it("names the file", () => {
    const path = systemsFile("- { name: b, kind: base }");
    expect(() => loadSystemsFile(path)).toThrow(path);
  });

  it("reports a missing file", () => {
    expect(() => loadSystemsFile(join(work, "absent.yaml"))).toThrow(/systems file not found/);
  });
});
