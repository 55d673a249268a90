// Writing the reports of an evaluation: report.md, report.html and results.json. All three are
// written under temporary names and renamed into place, results.json last, so a results.json
// on disk always sits beside the reports of the same run.

import { randomBytes } from "node:crypto";
import { mkdir, rename, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import type { EvaluationResults } from "../eval/results.js";
import { log } from "../log.js";
import { renderHtml } from "./html.js";
import { renderMarkdown } from "./markdown.js";

export const REPORT_FILES = {
  markdown: "report.md",
  html: "report.html",
  results: "results.json",
} as const;

/** Writes the three report files into `outDir` (created if missing). */
export async function writeReports(outDir: string, results: EvaluationResults): Promise<void> {
  const contents: [string, string][] = [
    [REPORT_FILES.markdown, renderMarkdown(results)],
    [REPORT_FILES.html, await renderHtml(results)],
    [REPORT_FILES.results, `${JSON.stringify(results, null, 2)}\n`],
  ];
  await mkdir(outDir, { recursive: true });
  const suffix = `.tmp-${process.pid}-${randomBytes(4).toString("hex")}`;
  const temporary = contents.map(([name]) => join(outDir, `.${name}${suffix}`));
  try {
    for (const [i, [, text]] of contents.entries()) await writeFile(temporary[i], text);
    await rm(join(outDir, REPORT_FILES.results), { force: true });
    for (const [i, [name]] of contents.entries()) await rename(temporary[i], join(outDir, name));
  } catch (error) {
    await Promise.all(temporary.map((path) => rm(path, { force: true })));
    throw error;
  }
  log.info({ outDir, files: Object.values(REPORT_FILES) }, "wrote evaluation reports");
}
