// Flags for reading preference files: schema, container format, split, strictness and
// field mappings. `midpo data` and every training command that reads preference data
// take the same ones.

import { Command, Option } from "commander";
import { withoutDefaults, type LoadOptions } from "../data/load.js";
import { FILE_FORMATS, type FileFormat } from "../data/read.js";
import {
  DEFAULT_FIELDS,
  RECORD_SCHEMAS,
  type FieldNames,
  type RecordSchema,
} from "../data/validate.js";
import { MidpoError } from "../errors.js";
import { collect } from "./options.js";

export interface ReadFlags {
  format: RecordSchema | "auto";
  fileFormat?: FileFormat;
  split?: string;
  strict: boolean;
  field: string[];
}

export function addReadOptions(command: Command): Command {
  return command
    .addOption(
      new Option("--format <schema>", "record schema; auto detects it from the first record")
        .choices(["auto", ...RECORD_SCHEMAS])
        .default("auto"),
    )
    .addOption(
      new Option("--file-format <format>", "container format; default: detected").choices(
        FILE_FORMATS,
      ),
    )
    .option("--split <name>", "split to read from a dataset directory (train, test, ...)")
    .option(
      "--strict",
      "fail at the first invalid record instead of skipping and counting it",
      false,
    )
    .option(
      "--field <name=source>",
      `read a schema field from another column, e.g. chosen=response_chosen (repeatable; ` +
        `fields: ${Object.keys(DEFAULT_FIELDS).join(", ")})`,
      collect,
      [],
    );
}

/**
 * Returns the load options of the flags, without those left at their defaults, so that the
 * run keys of training runs started before these flags existed stay the same.
 */
export function readOptionsFrom(opts: ReadFlags): LoadOptions {
  return withoutDefaults({
    strict: opts.strict,
    schema: opts.format,
    fileFormat: opts.fileFormat,
    split: opts.split,
    fields: parseFieldMappings(opts.field),
  });
}

function parseFieldMappings(mappings: readonly string[]): Partial<FieldNames> {
  const fields: Partial<FieldNames> = {};
  for (const mapping of mappings) {
    const [name, source, ...rest] = mapping.split("=");
    if (source === undefined || source === "" || rest.length > 0 || !(name in DEFAULT_FIELDS)) {
      throw new MidpoError(
        `--field expects NAME=COLUMN with NAME one of ${Object.keys(DEFAULT_FIELDS).join(", ")}, ` +
          `got "${mapping}"`,
      );
    }
    fields[name as keyof FieldNames] = source;
  }
  return fields;
}
