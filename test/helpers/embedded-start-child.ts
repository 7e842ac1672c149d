/**
 * startEmbeddedRedis in a process of its own, for tests of starts in several processes at once:
 *   node --import tsx test/helpers/embedded-start-child.ts
 * Reads one JSON command a line on stdin: {"start": dir} answers {"started": pid of its server} or
 * {"refused": code, "message"}; {"stop": true} stops the server it started and answers
 * {"stopped": true}. Prints {"ready": true} once loaded, so that a test can start them all at once.
 */
import { createInterface } from 'node:readline';
import { startEmbeddedRedis, type EmbeddedRedis } from '../../src/redis/embedded.js';
import { isSluiceError } from '../../src/core/errors.js';

const say = (o: object) => process.stdout.write(`${JSON.stringify(o)}\n`);
let server: EmbeddedRedis | undefined;
say({ ready: true });
for await (const line of createInterface({ input: process.stdin })) {
  const cmd = JSON.parse(line) as { start?: string; stop?: true };
  if (cmd.start !== undefined) {
    try {
      server = await startEmbeddedRedis({ binary: 'redis-server', dir: cmd.start });
      say({ started: server.pid });
    } catch (err) {
      say({ refused: isSluiceError(err) ? err.code : 'not a SluiceError', message: String((err as Error).message) });
    }
  } else if (cmd.stop) {
    await server?.stop();
    server = undefined;
    say({ stopped: true });
  }
}
