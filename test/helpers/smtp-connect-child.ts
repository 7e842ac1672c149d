/**
 * One SmtpClient.connect in a process of its own, for tests that need the process's trusted CAs
 * changed (NODE_EXTRA_CA_CERTS is read only at start-up): prints the result as one JSON line.
 *   node --import tsx test/helpers/smtp-connect-child.ts <port> <tls policy> <tlsName>
 */
import { SmtpClient, SmtpConnectError } from '../../src/delivery/smtp-client.js';
import type { TlsPolicy } from '../../src/config/schema.js';

const [port, tls, tlsName] = process.argv.slice(2);
const timeouts = { connectMs: 5000, greetingMs: 5000, commandMs: 5000, dataBlockMs: 5000, dataMs: 5000 };
try {
  const client = await SmtpClient.connect({ host: '127.0.0.1', port: Number(port), ehloName: 'sluice.test', tls: tls as TlsPolicy, ...(tlsName ? { tlsName } : {}), timeouts });
  process.stdout.write(`${JSON.stringify({ secure: client.secure })}\n`);
  await client.quit();
} catch (err) {
  if (!(err instanceof SmtpConnectError)) throw err;
  process.stdout.write(`${JSON.stringify({ enhanced: err.outcome.enhanced, response: err.outcome.response })}\n`);
}
