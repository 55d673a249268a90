// Progress of a long evaluation step on stderr: a bar when stderr is a terminal, otherwise a
// log line at about every tenth of the work, so logs of batch jobs stay short.

import cliProgress from "cli-progress";
import { log } from "../log.js";

export class EvalProgress {
  private readonly bar: cliProgress.SingleBar | null;
  private done = 0;
  private nextLog: number;

  constructor(
    private readonly label: string,
    private readonly total: number,
    private readonly unit: string,
  ) {
    this.nextLog = Math.ceil(total / 10);
    if (process.stderr.isTTY) {
      this.bar = new cliProgress.SingleBar(
        {
          stream: process.stderr,
          format: `${label} |{bar}| {value}/{total} ${unit} | ETA {eta_formatted}`,
          hideCursor: true,
        },
        cliProgress.Presets.shades_classic,
      );
      this.bar.start(total, 0);
    } else {
      this.bar = null;
    }
  }

  advance(count: number): void {
    this.done += count;
    if (this.bar !== null) {
      this.bar.update(this.done);
    } else if (this.done >= this.nextLog || this.done === this.total) {
      log.info(`${this.label}: ${this.done}/${this.total} ${this.unit}`);
      this.nextLog = this.done + Math.ceil(this.total / 10);
    }
  }

  stop(): void {
    this.bar?.stop();
  }
}
