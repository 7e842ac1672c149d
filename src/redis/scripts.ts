import { createHash } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import type { Redis, Cluster } from 'ioredis';
import { masterNodes } from './nodes.js';

/**
 * Loads every Lua script in src/queue/lua once; defineScripts puts each on the client as a method that
 * sends EVALSHA and, when the server answers NOSCRIPT, the script itself with EVAL (not ioredis's
 * defineCommand: see there why). A file named `<command>-<numberOfKeys>.lua` becomes
 * `client.<command>(...keys, ...args)`. The typed signatures are declared next to each operation's
 * wrapper in src/queue/.
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
    out.push({ name: m[1] as string, numberOfKeys: Number(m[2]), lua: withIncludes(readFileSync(LUA_DIR + file, 'utf8')) });
  }
  cache = out;
  return out;
}

/**
 * Steps more than one script takes live once, in lib/<name>.lua (a local function), and a script
 * takes them with a line `--@include <name>`: replaced here by that file, so Redis sees one script.
 */
function withIncludes(lua: string): string {
  return lua.replace(/^--@include ([A-Za-z][A-Za-z0-9]*)$/gm, (_line, name: string) => readFileSync(`${LUA_DIR}lib/${name}.lua`, 'utf8'));
}

/**
 * Every script becomes `client.<command>(...keys, ...args)`, plus `client.<command>Keys(numberOfKeys,
 * ...keys, ...args)` for calls that pass a number of keys of their own (one call over several
 * messages' keys on a single server), and `client.<command>Buffer(...)` whose reply keeps its bulk
 * strings as Buffers (binary message bodies). All at connect time, so a script can join any auto-pipeline.
 *
 * Not ioredis's defineCommand: every Pipeline object ioredis builds — one per auto-pipeline flush and
 * per MULTI, several per accepted or delivered recipient — copies each defined command onto itself, and
 * with ~60 of them that cost 48 µs a pipeline (against 5 µs without), ~20 % of the main thread in
 * bench/e2e.ts. A script here is a plain EVALSHA, a built-in command that pipelines inherit; a server
 * that does not know the script yet (first use, restart, failover) answers NOSCRIPT, and the call is
 * repeated once as EVAL, which loads it.
 */
export function defineScripts(client: Redis | Cluster): void {
  const target = client as unknown as Record<string, unknown>;
  // ioredis has a Buffer-replying twin of every command, not declared for these two.
  type Call = (...args: (string | number | Buffer)[]) => Promise<unknown>;
  const strings = client as unknown as { evalsha: Call; eval: Call };
  const bytes = client as unknown as { evalshaBuffer: Call; evalBuffer: Call };
  for (const s of loadScripts()) {
    const sha = createHash('sha1').update(s.lua).digest('hex');
    const runner = (evalsha: Call, evalLua: Call) => (numberOfKeys: number, args: (string | number | Buffer)[]): Promise<unknown> =>
      evalsha.call(client, sha, numberOfKeys, ...args).catch((err: unknown) => {
        if (!String((err as Error)?.message).startsWith('NOSCRIPT')) throw err;
        return evalLua.call(client, s.lua, numberOfKeys, ...args);
      });
    const run = runner(strings.evalsha, strings.eval);
    const runBuffer = runner(bytes.evalshaBuffer, bytes.evalBuffer);
    target[s.name] = (...args: (string | number | Buffer)[]) => run(s.numberOfKeys, args);
    target[`${s.name}Keys`] = (numberOfKeys: number, ...args: (string | number | Buffer)[]) => run(numberOfKeys, args);
    target[`${s.name}Buffer`] = (...args: (string | number | Buffer)[]) => runBuffer(s.numberOfKeys, args);
  }
}

/**
 * The SHA1 of the script `name` (the file name's command part), for an EVALSHA inside a MULTI: there
 * the NOSCRIPT fallback above cannot run (the transaction's other commands run regardless), so the
 * caller loads the script with loadScript and runs its MULTI again.
 */
export function scriptSha(name: string): string {
  const s = loadScripts().find((x) => x.name === name);
  if (!s) throw new Error(`no Lua script named ${name} in ${LUA_DIR}`);
  return createHash('sha1').update(s.lua).digest('hex');
}

/** SCRIPT LOAD of the script `name` on the server, or on every master of a cluster. */
export async function loadScript(client: Redis | Cluster, name: string): Promise<void> {
  const s = loadScripts().find((x) => x.name === name);
  if (!s) throw new Error(`no Lua script named ${name} in ${LUA_DIR}`);
  const nodes = await masterNodes(client);
  await Promise.all(nodes.map((n) => n.script('LOAD', s.lua)));
}
