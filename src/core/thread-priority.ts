/**
 * Lowering the scheduling priority of the calling thread alone (not its process), for threads that
 * do bulk CPU work beside a main thread that serves connections.
 *
 * Linux schedules threads, and setpriority(PRIO_PROCESS, tid) there sets one thread's nice value
 * (os.setPriority passes its argument through); the calling thread's id is the last part of the
 * /proc/thread-self link. Lowering a priority needs no privilege. Elsewhere (no /proc/thread-self),
 * nothing is changed: os.setPriority with the process id would lower the whole process.
 */
import { readlinkSync } from 'node:fs';
import { getPriority, setPriority } from 'node:os';

/** The highest nice value (the lowest priority) Linux has. */
const NICE_MAX = 19;

/**
 * Makes the calling thread `steps` nice values lower in priority than it is (at most 19). Returns
 * the thread's nice value after it, or undefined where threads cannot be told apart (not Linux) or
 * the change was refused; the thread runs on as it was then.
 */
export function lowerThreadPriority(steps: number): number | undefined {
  if (!(steps > 0)) return undefined;
  try {
    const tid = Number(readlinkSync('/proc/thread-self').split('/').pop());
    if (!Number.isInteger(tid) || tid <= 0) return undefined;
    const nice = Math.min(NICE_MAX, getPriority(tid) + Math.floor(steps));
    setPriority(tid, nice);
    return nice;
  } catch {
    return undefined;
  }
}
