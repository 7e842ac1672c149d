import { mkdirSync, readdirSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { SMTPServer } from 'smtp-server';
import { parse, println, UsageError, type Io } from './args.js';
import { listenOn } from '../core/listen.js';

const USAGE = `Usage: sluice sink [--port 2526] [--host 127.0.0.1] [--dir ./var/sink]

A local SMTP capture peer for trying Sluice on a machine with no internet: it accepts every message
(no auth, no relay checks) and writes each one as <dir>/<n>-<recipient>.eml. Point Sluice's transport
map at it (delivery.transport: { '*': '127.0.0.1:2526' }). --port 0 takes a free port and prints it.
Runs until SIGINT or SIGTERM. Not for production.`;

// On stop, sessions still open get this long to finish before they are cut (smtp-server's own
// default is 30 s, too long for a tool stopped with Ctrl-C).
const CLOSE_TIMEOUT_MS = 2_000;
// File names are <n>-<recipients>.eml with n zero-padded to six digits, so a listing sorts by arrival.
const SEQ_DIGITS = 6;
const FILE_RE = /^(\d+)-.*\.eml$/;
// Recipient part of a file name: bounded so that a 1,000-recipient message still names a valid file.
const MAX_NAME_CHARS = 100;

export async function runSink(argv: string[], io: Io): Promise<number> {
  const args = parse({ name: 'sink', usage: USAGE, options: { port: { type: 'string', default: '2526' }, host: { type: 'string', default: '127.0.0.1' }, dir: { type: 'string', default: './var/sink' } } }, argv);
  if (args.values.help) {
    println(io.out, USAGE);
    return 0;
  }
  const port = Number(args.values.port);
  if (!/^\d+$/.test(args.values.port) || port > 65535) throw new UsageError(`--port must be 0–65535, not '${args.values.port}'`);
  const dir = resolve(args.values.dir);
  try {
    mkdirSync(dir, { recursive: true });
  } catch (err) {
    throw new UsageError(`--dir ${dir}: cannot create it (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`);
  }
  // Continue the numbering of an earlier run in the same folder instead of overwriting its files.
  let n = 0;
  for (const name of readdirSync(dir)) n = Math.max(n, Number(FILE_RE.exec(name)?.[1] ?? 0));

  const server = new SMTPServer({
    authOptional: true,
    disabledCommands: ['AUTH', 'STARTTLS'],
    logger: false,
    closeTimeout: CLOSE_TIMEOUT_MS,
    onData(stream, session, callback) {
      const chunks: Buffer[] = [];
      stream.on('data', (c: Buffer) => chunks.push(c));
      stream.on('error', (err) => callback(err));
      stream.on('end', () => {
        const to = session.envelope.rcptTo.map((r) => r.address).join(',');
        const file = join(dir, `${String(++n).padStart(SEQ_DIGITS, '0')}-${to.replace(/[^A-Za-z0-9@._-]/g, '_').slice(0, MAX_NAME_CHARS)}.eml`);
        try {
          writeFileSync(file, Buffer.concat(chunks), { flag: 'wx' });
        } catch (err) {
          println(io.err, `sink: cannot write ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
          // A 4xx: the sender keeps the message and retries, nothing is lost.
          callback(Object.assign(new Error('cannot store the message, try again later'), { responseCode: 451 }));
          return;
        }
        println(io.out, `received ${file} (from ${session.envelope.mailFrom ? session.envelope.mailFrom.address : '<>'})`);
        callback(null, 'captured');
      });
    },
  });
  // A client that resets its connection mid-transaction surfaces as an 'error' event on the server;
  // unheard, it would end the process. It is the client's problem: report it and go on. (Listened
  // for before binding: smtp-server passes a bind error on as an 'error' event too.)
  let listening = false;
  server.on('error', (err: NodeJS.ErrnoException) => {
    if (listening) println(io.err, `sink: connection error: ${err.code ?? err.message}`);
  });
  const bound = await listenOn(server.server, port, args.values.host).catch((err: unknown) => {
    throw new UsageError((err as Error).message);
  });
  listening = true;
  println(io.out, `sink listening on ${args.values.host}:${bound}, writing to ${dir}`);
  await new Promise<void>((res) => {
    const stop = () => {
      process.off('SIGINT', stop);
      process.off('SIGTERM', stop);
      server.close(() => res());
    };
    process.on('SIGINT', stop);
    process.on('SIGTERM', stop);
  });
  println(io.out, 'sink stopped');
  return 0;
}
