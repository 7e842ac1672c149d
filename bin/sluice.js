#!/usr/bin/env -S node --max-semi-space-size=4 --initial-old-space-size=32 --v8-pool-size=1
// The `sluice` command. Runs the compiled program in dist/ (built by `npm run build`).
import { existsSync } from 'node:fs';
const entry = new URL('../dist/cli/main.js', import.meta.url);
if (!existsSync(entry)) {
  process.stderr.write('sluice: not built yet; run `npm run build` first\n');
  process.exit(1);
}
const { main } = await import(entry.href);
process.exitCode = await main(process.argv.slice(2));
