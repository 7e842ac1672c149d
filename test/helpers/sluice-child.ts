import { main } from '../../src/cli/main.js';

/**
 * The `sluice` binary as test/helpers/sluice-process.ts spawns it: `node --import tsx
 * test/helpers/sluice-child.ts start --config FILE`. Setting exitCode (not calling exit) lets
 * pino flush and the event loop drain exactly as a real start would.
 */
process.exitCode = await main(process.argv.slice(2));
