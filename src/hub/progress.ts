// Download progress: a cli-progress bar on stderr when it is a terminal, otherwise one log line
// per finished file, so that CI logs stay readable.

import { SingleBar } from "cli-progress";
import type { Logger } from "pino";

export interface FileProgress {
  /** Records the number of bytes of the file now on disk, resumed bytes included. */
  update(bytesOnDisk: number): void;
  /** Stops the bar, or writes the log line, after the file is complete. */
  finish(): void;
  /** Stops the bar without a summary line, after a failed attempt. */
  abort(): void;
}

export interface ProgressReporter {
  /** Starts reporting one file. `resumedBytes` were already on disk from an earlier attempt. */
  start(file: string, totalBytes: number | undefined, resumedBytes: number): FileProgress;
}

/** Files smaller than this finish too fast for a bar to be useful, so they get a log line. */
const MIN_BAR_BYTES = 1024 * 1024;

export function createProgressReporter(logger: Logger, showBar: boolean): ProgressReporter {
  return {
    start(file, totalBytes, resumedBytes) {
      if (showBar && totalBytes !== undefined && totalBytes >= MIN_BAR_BYTES) {
        return startBar(file, totalBytes, resumedBytes);
      }
      return startLogLines(logger, file, resumedBytes);
    },
  };
}

function startBar(file: string, totalBytes: number, resumedBytes: number): FileProgress {
  const startTime = performance.now();
  const bar = new SingleBar({
    stream: process.stderr,
    format: `${file} |{bar}| {percentage}% | {done}/{total_size} | {speed} | ETA {eta_formatted}`,
    hideCursor: true,
    etaBuffer: 50,
  });
  const payload = (bytesOnDisk: number) => ({
    done: formatBytes(bytesOnDisk),
    total_size: formatBytes(totalBytes),
    speed: `${formatBytes(bytesPerSecond(bytesOnDisk - resumedBytes, startTime))}/s`,
  });

  bar.start(totalBytes, resumedBytes, payload(resumedBytes));
  return {
    update: (bytesOnDisk) => bar.update(bytesOnDisk, payload(bytesOnDisk)),
    finish: () => bar.stop(),
    abort: () => bar.stop(),
  };
}

function startLogLines(logger: Logger, file: string, resumedBytes: number): FileProgress {
  const startTime = performance.now();
  let latest = resumedBytes;
  if (resumedBytes > 0) {
    logger.info({ file, resumedBytes }, `resuming ${file} at ${formatBytes(resumedBytes)}`);
  }

  return {
    update: (bytesOnDisk) => {
      latest = bytesOnDisk;
    },
    finish: () => {
      const seconds = (performance.now() - startTime) / 1000;
      const speed = formatBytes(bytesPerSecond(latest - resumedBytes, startTime));
      logger.info(
        { file, bytes: latest, seconds: Number(seconds.toFixed(2)) },
        `downloaded ${file} (${formatBytes(latest)}, ${speed}/s)`,
      );
    },
    abort: () => {},
  };
}

function bytesPerSecond(bytes: number, startTime: number): number {
  const seconds = Math.max((performance.now() - startTime) / 1000, 1e-3);
  return bytes / seconds;
}

/** Formats a byte count with binary units, e.g. 1536 -> "1.5 KiB". */
export function formatBytes(bytes: number): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return unit === 0 ? `${Math.round(value)} B` : `${value.toFixed(1)} ${units[unit]}`;
}
