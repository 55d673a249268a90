/**
 * An error caused by the user's input (a file, a flag, a config value). The CLI prints its
 * message without a stack trace and exits with code 1; any other error is a bug and is
 * printed with its stack.
 */
export class MidpoError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "MidpoError";
  }
}
