import { readdirSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import type { Redis, Cluster } from 'ioredis';

/**
 * Loads every Lua script in src/queue/lua once and defines it as an ioredis command. A file named
 * `<command>-<numberOfKeys>.lua` becomes `client.<command>(...keys, ...args)`. The typed signatures
 * are declared next to each operation's wrapper in src/queue/.
 */
const LUA_DIR = fileURLToPath(new URL('../queue/lua/', import.meta.url));
const NAME_RE = /^([A-Za-z][A-Za-z0-9]*)-(\d+)\.lua$/;

let cache: { name: string; numberOfKeys: number; lua: string }[] | undefined;

export function loadScripts(): { name: string; numberOfKeys: number; lua: string }[] {
  if (cache) return cache;
  const out: { name: string; numberOfKeys: number; lua: string }[] = [];
  let files: string[] = [];
  try {
    files = readdirSync(LUA_DIR);
  } catch {
    files = [];
  }
  for (const file of files.sort()) {
    const m = NAME_RE.exec(file);
    if (!m) continue;
    out.push({ name: m[1] as string, numberOfKeys: Number(m[2]), lua: readFileSync(LUA_DIR + file, 'utf8') });
  }
  cache = out;
  return out;
}

/**
 * Every script is also defined as `<command>Keys(numberOfKeys, ...keys, ...args)`, for calls that
 * pass a number of keys of their own (one call over several messages' keys on a single server).
 * All at connect time: ioredis's auto-pipelining builds its pipelines from the commands defined when
 * they are created, so a command defined later, while such a pipeline is waiting for its tick, is
 * missing from it — its callback then finds no result and the process dies in ioredis (an uncaught
 * "results[i] is not iterable").
 */
export function defineScripts(client: Redis | Cluster): void {
  for (const s of loadScripts()) {
    client.defineCommand(s.name, { numberOfKeys: s.numberOfKeys, lua: s.lua });
    client.defineCommand(`${s.name}Keys`, { lua: s.lua });
  }
}
