import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    testTimeout: 120_000,
    hookTimeout: 120_000,
    // ORT sessions use both cores; running test files one at a time keeps
    // timings steady and memory bounded on a 2-core machine.
    fileParallelism: false,
  },
});
