/**
 * Summarises V8 CPU profiles (.cpuprofile, from `node --cpu-prof`; one file per thread) into where
 * the time went: self time per function and per phase of Sluice's work.
 *   node --import tsx bench/profile.ts DIR     (prints; bench/e2e.ts calls summarise() itself)
 *
 * A phase is decided by the frame's script (and for a few native frames, its name): the innermost
 * Sluice or library file that the time is spent in. Time a worker spends blocked waiting for its
 * next task (piscina's Atomics.wait loop) counts as idle, not busy. Self time in a node internal (e.g. the socket
 * write path) is charged to the nearest caller frame that has a phase, so "SMTP client" includes the
 * socket writes it caused and "HTTP API" the request parsing it waited on.
 */
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';

interface CallFrame {
  functionName: string;
  url: string;
  lineNumber: number;
}
interface ProfileNode {
  id: number;
  callFrame: CallFrame;
  children?: number[];
}
interface CpuProfile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
  startTime: number;
  endTime: number;
}

/** Ordered: the first pattern that matches the script URL names the phase. */
const PHASES: [RegExp, string][] = [
  [/\/render\/(dkim|crlf)\.|dkim/i, 'DKIM signing (hash + sign)'],
  [/\/render\//, 'rendering (compose MIME)'],
  [/nodemailer|mailparser|libmime|libqp|libbase64/, 'rendering (compose MIME)'],
  [/piscina/, 'worker pool (piscina, postMessage)'],
  [/\/delivery\/(smtp-client|dot-stuff|reply-parser)/, 'SMTP client'],
  [/\/delivery\//, 'dispatcher'],
  [/\/queue\/|\/store\//, 'queue + store wrappers'],
  [/ioredis|redis-parser|denque|cluster-key-slot|standard-as-callback/, 'Redis client (ioredis)'],
  [/zod/, 'HTTP validation (zod)'],
  [/\/ingress\/|addressparser/, 'HTTP API + accept'],
  [/pino|sonic-boom|thread-stream/, 'logging (pino)'],
  [/prom-client|\/observability\//, 'metrics'],
  [/undici/, 'undici'],
];

const NATIVE = new Map<string, string>([
  ['(garbage collector)', 'GC'],
  ['(idle)', 'idle'],
  // A piscina worker blocks in Atomics.wait between tasks: sampled as this frame, but not CPU.
  ['atomicsWaitLoop', 'idle'],
  ['(program)', 'V8/native (program)'],
  // The write(2)/writev(2) of a socket write happens synchronously inside these natives; on a VM
  // that is a large share of a small write's cost, so it is shown apart from whoever wrote.
  ['writeUtf8String', 'socket writes (syscalls)'],
  ['writeBuffer', 'socket writes (syscalls)'],
  ['writev', 'socket writes (syscalls)'],
  ['writeLatin1String', 'socket writes (syscalls)'],
]);

function phaseOf(frame: CallFrame): string | null {
  const native = NATIVE.get(frame.functionName);
  if (native) return native;
  if (frame.functionName === 'sign' || frame.functionName === 'update' || frame.functionName === 'digest') {
    // crypto natives are reported without a script; the caller decides (see the parent walk).
    return null;
  }
  for (const [re, name] of PHASES) if (re.test(frame.url)) return name;
  return null;
}

export interface ProfileSummary {
  file: string;
  thread: string;
  totalMs: number;
  busyMs: number;
  phases: { phase: string; ms: number; share: number }[];
  top: { fn: string; where: string; ms: number; share: number }[];
}

function where(f: CallFrame): string {
  if (!f.url) return '(native)';
  const u = f.url.replace(/^file:\/\//, '');
  const i = u.lastIndexOf('/node_modules/');
  const short = i >= 0 ? u.slice(i + 14) : u.replace(/^.*\/(dist|src)\//, '$1/');
  return `${short}:${f.lineNumber + 1}`;
}

export function summariseProfile(file: string, topN = 20): ProfileSummary {
  const p = JSON.parse(readFileSync(file, 'utf8')) as CpuProfile;
  const byId = new Map<number, ProfileNode>();
  const parent = new Map<number, number>();
  for (const n of p.nodes) {
    byId.set(n.id, n);
    for (const c of n.children ?? []) parent.set(c, n.id);
  }
  const self = new Map<number, number>();
  for (let i = 0; i < p.samples.length; i++) {
    // timeDeltas[i] is the time since the previous sample: it belongs to sample i-1's node; using
    // sample i's node instead shifts by one sample, immaterial over thousands of samples.
    const id = p.samples[i] as number;
    self.set(id, (self.get(id) ?? 0) + ((p.timeDeltas[i + 1] ?? p.timeDeltas[i] ?? 0) / 1000));
  }
  const phaseCache = new Map<number, string>();
  const phaseFor = (id: number): string => {
    const cached = phaseCache.get(id);
    if (cached) return cached;
    let cur: number | undefined = id;
    let found: string | null = null;
    while (cur !== undefined && found === null) {
      const n = byId.get(cur) as ProfileNode;
      found = phaseOf(n.callFrame);
      cur = parent.get(cur);
    }
    const phase = found ?? 'node internals / other';
    phaseCache.set(id, phase);
    return phase;
  };
  const phases = new Map<string, number>();
  const fns = new Map<string, { fn: string; where: string; ms: number }>();
  let total = 0;
  for (const [id, ms] of self) {
    total += ms;
    const n = byId.get(id) as ProfileNode;
    const ph = phaseFor(id);
    phases.set(ph, (phases.get(ph) ?? 0) + ms);
    const key = `${n.callFrame.functionName}@${where(n.callFrame)}`;
    const e = fns.get(key) ?? { fn: n.callFrame.functionName || '(anonymous)', where: where(n.callFrame), ms: 0 };
    e.ms += ms;
    fns.set(key, e);
  }
  const idle = phases.get('idle') ?? 0;
  const busy = total - idle;
  const share = (ms: number) => Math.round((ms / Math.max(1, busy)) * 1000) / 10;
  return {
    file,
    thread: threadOf(file),
    totalMs: Math.round(total),
    busyMs: Math.round(busy),
    phases: [...phases]
      .filter(([k]) => k !== 'idle')
      .sort((a, b) => b[1] - a[1])
      .map(([phase, ms]) => ({ phase, ms: Math.round(ms), share: share(ms) })),
    top: [...fns.values()]
      .filter((f) => f.fn !== '(idle)' && f.fn !== 'atomicsWaitLoop')
      .sort((a, b) => b.ms - a.ms)
      .slice(0, topN)
      .map((f) => ({ ...f, ms: Math.round(f.ms), share: share(f.ms) })),
  };
}

/** Node names profiles CPU.<date>.<time>.<pid>.<threadId>.<seq>.cpuprofile; thread 0 is the main one. */
function threadOf(file: string): string {
  const tid = /\.(\d+)\.\d+\.cpuprofile$/.exec(file)?.[1];
  return tid === undefined ? 'unknown' : tid === '0' ? 'main thread' : `worker thread ${tid}`;
}

/** Every .cpuprofile in `dir`, the busiest first. */
export function summariseDir(dir: string, topN = 20): ProfileSummary[] {
  return readdirSync(dir)
    .filter((f) => f.endsWith('.cpuprofile'))
    .map((f) => summariseProfile(join(dir, f), topN))
    .sort((a, b) => b.busyMs - a.busyMs);
}

export function printSummary(s: ProfileSummary, out: (line: string) => void = console.log): void {
  out(`\n${s.thread} (${s.file.split('/').pop()}): ${(s.busyMs / 1000).toFixed(2)} s busy of ${(s.totalMs / 1000).toFixed(2)} s sampled`);
  for (const ph of s.phases) out(`  ${ph.phase.padEnd(36)} ${String(ph.ms).padStart(7)} ms  ${ph.share.toFixed(1).padStart(5)} %`);
  out('  top functions (self time):');
  for (const f of s.top) out(`    ${String(f.ms).padStart(6)} ms ${f.share.toFixed(1).padStart(5)} %  ${f.fn}  ${f.where}`);
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const dir = process.argv[2];
  if (!dir) {
    console.error('usage: node --import tsx bench/profile.ts DIR');
    process.exit(2);
  }
  for (const s of summariseDir(dir)) printSummary(s);
}
