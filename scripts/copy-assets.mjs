// Copies non-TypeScript assets (Lua scripts) next to the compiled JavaScript in dist/.
import { cpSync, existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
const root = fileURLToPath(new URL('..', import.meta.url));
const from = `${root}src/queue/lua`;
if (existsSync(from)) cpSync(from, `${root}dist/queue/lua`, { recursive: true });
