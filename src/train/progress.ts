// Progress of a training run on stderr: a bar with ETA and the latest metrics when stderr is
// a terminal, otherwise one log line every few steps so that logs of batch jobs stay short.

import cliProgress from "cli-progress";
import { log } from "../log.js";

type Metrics = Record<string, number>;

const SHOWN = ["loss", "rewards/accuracies", "rewards/margins", "accuracy", "grad_norm", "lr"];

function summary(m: Metrics): string {
  return SHOWN.filter((k) => k in m)
    .map(
      (k) =>
        `${k}=${Math.abs(m[k]) >= 1e-3 || m[k] === 0 ? m[k].toFixed(4) : m[k].toExponential(2)}`,
    )
    .join(" ");
}

export class Progress {
  private readonly bar: cliProgress.SingleBar | null;
  private readonly logEvery: number;
  private current: number;

  constructor(
    private readonly total: number,
    start: number,
  ) {
    this.current = start;
    if (process.stderr.isTTY) {
      this.bar = new cliProgress.SingleBar(
        {
          stream: process.stderr,
          format: "train |{bar}| {value}/{total} steps | ETA {eta_formatted} | {metrics}",
          hideCursor: true,
          etaBuffer: 20,
        },
        cliProgress.Presets.shades_classic,
      );
      this.bar.start(total, start, { metrics: "" });
    } else {
      this.bar = null;
    }
    this.logEvery = Math.max(1, Math.round(total / 20));
  }

  update(step: number, metrics: Metrics): void {
    this.current = step;
    if (this.bar) this.bar.update(step, { metrics: summary(metrics) });
    else if (step % this.logEvery === 0 || step === this.total) {
      log.info(`step ${step}/${this.total} ${summary(metrics)}`);
    }
  }

  /** Prints a line without breaking the bar. */
  note(text: string): void {
    if (this.bar) {
      this.bar.stop();
      process.stderr.write(`${text}\n`);
      this.bar.start(this.total, this.current, { metrics: "" });
    } else {
      log.info(text);
    }
  }

  stop(): void {
    this.bar?.stop();
  }
}
