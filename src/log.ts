// The project's logger: pino, printed for people on stderr so that stdout stays free for
// results (JSONL, generated text). MIDPO_LOG_LEVEL sets the level (default "info").

import { pino, type Logger } from "pino";
import pretty from "pino-pretty";

export const log: Logger = pino(
  { level: process.env.MIDPO_LOG_LEVEL ?? "info" },
  pretty({ destination: 2, sync: true, ignore: "pid,hostname", translateTime: "HH:MM:ss" }),
);
