// Questions about other processes on this machine.

/**
 * Returns whether process `pid` exists. A process that this user may not signal (EPERM) exists
 * too.
 */
export function isRunning(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === "EPERM";
  }
}
