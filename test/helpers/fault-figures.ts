import { mkdirSync, readFileSync, renameSync, rmdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

/**
 * The figures of the fault suite (test/faults): each run prints one line
 *   faults: kill9 sent=10000 lost=0 duplicated=37 inflight_bound=400
 * and merges its figures into bench/results/faults.json under its name, for the note.
 *
 * The runner executes two test files at once, so two processes may write the file together: a
 * directory made with mkdir (atomic) is the lock, and the file is replaced by rename (never half
 * written). A lock left by a killed process is taken over after LOCK_STALE_MS.
 */
const RESULTS = fileURLToPath(new URL('../../bench/results/', import.meta.url));
const FILE = join(RESULTS, 'faults.json');
const LOCK = join(RESULTS, '.faults.lock');
/** Writing the file takes milliseconds; a lock this old belongs to a process that died holding it. */
const LOCK_STALE_MS = 5_000;

export type Figures = Record<string, number | string | boolean>;

export async function recordFigures(name: string, figures: Figures): Promise<void> {
  const line = Object.entries(figures).map(([k, v]) => `${k}=${String(v)}`).join(' ');
  console.log(`faults: ${name} ${line}`);
  mkdirSync(RESULTS, { recursive: true });
  const deadline = Date.now() + LOCK_STALE_MS;
  for (;;) {
    try {
      mkdirSync(LOCK);
      break;
    } catch {
      if (Date.now() > deadline) break; // stale: the holder died; proceed (rename keeps the file whole)
      await new Promise((r) => setTimeout(r, 20));
    }
  }
  try {
    let all: Record<string, unknown> = {};
    try {
      all = JSON.parse(readFileSync(FILE, 'utf8')) as Record<string, unknown>;
    } catch {
      // first run, or an unreadable file: start afresh
    }
    all[name] = { ...figures, at: new Date().toISOString() };
    const tmp = `${FILE}.${process.pid}.tmp`;
    writeFileSync(tmp, JSON.stringify(all, null, 2) + '\n');
    renameSync(tmp, FILE);
  } finally {
    try {
      rmdirSync(LOCK);
    } catch {
      // taken over as stale by another writer
    }
  }
}
