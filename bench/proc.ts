/**
 * Process figures from /proc (Linux): CPU seconds (user + system, every thread of the process) and
 * peak resident memory. Read before and after a phase; the difference is what the phase cost.
 */
import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';

/** Clock ticks per second of /proc/<pid>/stat times (100 on every common Linux build; asked once). */
const CLK_TCK = (() => {
  try {
    return Number(execFileSync('getconf', ['CLK_TCK']).toString().trim()) || 100;
  } catch {
    return 100;
  }
})();

export interface CpuTimes {
  user: number;
  system: number;
}

/** User and system CPU seconds so far; zeros once the process is gone. */
export function cpuTimes(pid: number): CpuTimes {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // The command name (field 2) is in parentheses and may contain spaces: split after the last ')'.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    // fields[0] is field 3 (state); utime and stime are fields 14 and 15.
    return { user: Number(fields[11]) / CLK_TCK, system: Number(fields[12]) / CLK_TCK };
  } catch {
    return { user: 0, system: 0 };
  }
}

export function cpuDelta(before: CpuTimes, after: CpuTimes): CpuTimes & { total: number } {
  const user = after.user - before.user;
  const system = after.system - before.system;
  return { user: round(user, 2), system: round(system, 2), total: round(user + system, 2) };
}

/**
 * CPU seconds (user + system) of each thread of a process, by thread id (the main thread's id is the
 * pid). Node names every thread "node", so which thread is which is told by what it costs.
 */
export function threadCpu(pid: number): Map<number, number> {
  const out = new Map<number, number>();
  let tids: string[];
  try {
    tids = readdirSync(`/proc/${pid}/task`);
  } catch {
    return out;
  }
  for (const tid of tids) {
    try {
      const stat = readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8');
      const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      out.set(Number(tid), (Number(f[11]) + Number(f[12])) / CLK_TCK);
    } catch {
      // the thread ended between the listing and the read
    }
  }
  return out;
}

/**
 * What each thread of a process spent between two threadCpu() readings, busiest first, split the way
 * a Sluice process is built: the main thread (tid = pid), the `poolThreads` busiest others (the render
 * workers, when they do most of the work, which holds under load), and the rest (V8's platform
 * threads — GC and compilation — the recorder thread, libuv's pool).
 */
export function threadSplit(before: Map<number, number>, after: Map<number, number>, pid: number, poolThreads: number): {
  deltas: { tid: number; seconds: number }[];
  main: number;
  pool: { tid: number; seconds: number }[];
  poolSeconds: number;
  restSeconds: number;
} {
  const deltas = [...after].map(([tid, s]) => ({ tid, seconds: round(s - (before.get(tid) ?? 0), 2) })).sort((a, b) => b.seconds - a.seconds);
  const main = deltas.find((d) => d.tid === pid)?.seconds ?? 0;
  const others = deltas.filter((d) => d.tid !== pid);
  const pool = others.slice(0, poolThreads);
  const poolSeconds = round(pool.reduce((a, d) => a + d.seconds, 0), 2);
  const restSeconds = round(others.slice(poolThreads).reduce((a, d) => a + d.seconds, 0), 2);
  return { deltas, main, pool, poolSeconds, restSeconds };
}

export function round(n: number, digits = 0): number {
  const f = 10 ** digits;
  return Math.round(n * f) / f;
}

/**
 * CPU seconds the whole machine spent busy so far (every process: user, nice, system, irq, softirq,
 * steal), from the first line of /proc/stat. Minus what the benchmark's own processes used, it shows
 * how much other work shared the cores during a measurement.
 */
export function machineBusySeconds(): number {
  try {
    const line = readFileSync('/proc/stat', 'utf8').split('\n', 1)[0] as string;
    const [, user, nice, system, , , irq, softirq, steal] = line.trim().split(/\s+/).map(Number);
    return ((user ?? 0) + (nice ?? 0) + (system ?? 0) + (irq ?? 0) + (softirq ?? 0) + (steal ?? 0)) / CLK_TCK;
  } catch {
    return 0;
  }
}
