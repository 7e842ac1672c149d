import { mkdirSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { SMTPServer } from 'smtp-server';
import { parse, println, UsageError, type Io } from './args.js';

const USAGE = `Usage: sluice sink [--port 2526] [--host 127.0.0.1] [--dir ./var/sink]

A local SMTP capture peer for trying Sluice on a machine with no internet: it accepts every message
(no auth, no relay checks) and writes each one as <dir>/<n>-<recipient>.eml. Point Sluice's transport
map at it (delivery.transport: { '*': '127.0.0.1:2526' }). Not for production.`;

export async function runSink(argv: string[], io: Io): Promise<number> {
  const args = parse({ name: 'sink', usage: USAGE, options: { port: { type: 'string', default: '2526' }, host: { type: 'string', default: '127.0.0.1' }, dir: { type: 'string', default: './var/sink' } } }, argv);
  if (args.values.help) {
    println(io.out, USAGE);
    return 0;
  }
  const port = Number(args.values.port);
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new UsageError('--port must be 0–65535');
  const dir = resolve(args.values.dir);
  mkdirSync(dir, { recursive: true });
  let n = 0;
  const server = new SMTPServer({
    authOptional: true,
    disabledCommands: ['AUTH', 'STARTTLS'],
    logger: false,
    onData(stream, session, callback) {
      const chunks: Buffer[] = [];
      stream.on('data', (c: Buffer) => chunks.push(c));
      stream.on('end', () => {
        const to = session.envelope.rcptTo.map((r) => r.address).join(',');
        const file = join(dir, `${String(++n).padStart(6, '0')}-${to.replace(/[^A-Za-z0-9@._-]/g, '_').slice(0, 100)}.eml`);
        writeFileSync(file, Buffer.concat(chunks));
        println(io.out, `received ${file} (from ${session.envelope.mailFrom ? session.envelope.mailFrom.address : '<>'})`);
        callback(null, 'captured');
      });
    },
  });
  await new Promise<void>((res, rej) => {
    server.once('error', rej);
    server.listen(port, args.values.host, () => res());
  });
  println(io.out, `sink listening on ${args.values.host}:${port}, writing to ${dir}`);
  await new Promise<void>((res) => {
    const stop = () => server.close(() => res());
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
  });
  return 0;
}
