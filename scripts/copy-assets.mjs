// Copies non-TypeScript assets (Lua scripts) next to the compiled JavaScript in dist/. The folder is
// replaced, not merged: a script renamed in src (its key count is in its name) must not linger in dist.
import { cpSync, existsSync, rmSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
const root = fileURLToPath(new URL('..', import.meta.url));
const from = `${root}src/queue/lua`;
const to = `${root}dist/queue/lua`;
rmSync(to, { recursive: true, force: true });
if (existsSync(from)) cpSync(from, to, { recursive: true });
