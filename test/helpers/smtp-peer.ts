import { createServer, type Socket } from 'node:net';
import { SMTPServer, type SMTPServerSession } from 'smtp-server';

/**
 * Two real SMTP peers on 127.0.0.1:<ephemeral> for tests.
 *
 * startCapturePeer — a well-behaved MX (smtp-server, no auth) that keeps every message it accepts,
 *   with hooks to refuse a recipient or a message. Offers PIPELINING, 8BITMIME, SMTPUTF8, SIZE and,
 *   with `tls: true`, STARTTLS with smtp-server's built-in self-signed certificate.
 *
 * startScriptedPeer — a raw node:net peer that answers exactly what the test scripts, for the
 *   misbehaviour a library server will not produce: stalls, drops, 421s, garbage.
 */

/**
 * Where a peer listens: 127.0.0.1 and an ephemeral port by default. Several peers on one port at
 * 127.0.0.2, 127.0.0.3, … (all of 127.0.0.0/8 is loopback on Linux) are MX hosts of one domain,
 * whose addresses share the port MX routes use.
 */
export interface Listen {
  host?: string;
  port?: number;
}

// ── capture peer ──────────────────────────────────────────────────────────────

export interface CapturedMessage {
  envelope: { from: string; to: string[] };
  /** The message as received: dot-unstuffed, CRLF line endings. */
  raw: Buffer;
  /** The session was upgraded with STARTTLS. */
  secure: boolean;
  sessionId: string;
  /** The client's address: the source address of Sluice's connection. */
  remoteAddress: string;
  /** The name the client gave in EHLO/HELO. */
  ehloName: string;
}

export interface SmtpReplyOverride {
  code: number;
  message: string;
}

export interface CapturePeer {
  host: string;
  port: number;
  messages: CapturedMessage[];
  /** Connections accepted since start. */
  connections: () => number;
  /** Resolves once `n` messages have been captured; rejects after timeoutMs (default 5000). */
  waitFor(n: number, timeoutMs?: number): Promise<CapturedMessage[]>;
  close(): Promise<void>;
}

// smtp-server waits 30 s for open sessions on close(); a test peer answers them with 421 at once.
const CAPTURE_CLOSE_TIMEOUT_MS = 50;

export async function startCapturePeer(
  opts: {
    tls?: boolean;
    /** PEM key and certificate of the STARTTLS (with `tls`); default smtp-server's built-in self-signed pair. */
    key?: Buffer;
    cert?: Buffer;
    onRcpt?: (to: string) => null | SmtpReplyOverride;
    /** May answer later (a promise): the peer holds its reply to the message until then. */
    onData?: (msg: CapturedMessage) => null | SmtpReplyOverride | Promise<null | SmtpReplyOverride>;
    /** Advertised SIZE and enforced limit in bytes (smtp-server's default: no limit). */
    size?: number;
  } & Listen = {},
): Promise<CapturePeer> {
  const messages: CapturedMessage[] = [];
  const waiters: { n: number; resolve: () => void }[] = [];
  let connections = 0;

  const reject = (o: SmtpReplyOverride): Error => Object.assign(new Error(o.message), { responseCode: o.code });

  const server = new SMTPServer({
    logger: false,
    authOptional: true,
    disabledCommands: opts.tls ? ['AUTH'] : ['AUTH', 'STARTTLS'],
    closeTimeout: CAPTURE_CLOSE_TIMEOUT_MS,
    ...(opts.key !== undefined && opts.cert !== undefined ? { key: opts.key, cert: opts.cert } : {}),
    ...(opts.size !== undefined ? { size: opts.size } : {}),
    onConnect(_session, cb) {
      connections++;
      cb();
    },
    onRcptTo(address, _session, cb) {
      const override = opts.onRcpt?.(address.address) ?? null;
      cb(override ? reject(override) : undefined);
    },
    onData(stream, session: SMTPServerSession, cb) {
      const chunks: Buffer[] = [];
      stream.on('data', (c: Buffer) => chunks.push(c));
      stream.on('end', () => {
        const msg: CapturedMessage = {
          envelope: {
            from: session.envelope.mailFrom ? session.envelope.mailFrom.address : '',
            to: session.envelope.rcptTo.map((r) => r.address),
          },
          raw: Buffer.concat(chunks),
          secure: session.secure,
          sessionId: session.id,
          remoteAddress: session.remoteAddress,
          ehloName: session.hostNameAppearsAs,
        };
        const accept = (override: null | SmtpReplyOverride): void => {
          if (override) return cb(reject(override));
          messages.push(msg);
          for (const w of waiters.filter((w) => messages.length >= w.n)) {
            waiters.splice(waiters.indexOf(w), 1);
            w.resolve();
          }
          cb();
        };
        const override = opts.onData?.(msg) ?? null;
        if (override instanceof Promise) void override.then(accept);
        else accept(override);
      });
    },
  });

  await new Promise<void>((resolve, rejectListen) => {
    server.once('error', rejectListen);
    server.listen(opts.port ?? 0, opts.host ?? '127.0.0.1', () => resolve());
  });
  // Errors of single sessions (a client that drops) are normal in these tests.
  server.on('error', () => undefined);
  const address = server.server.address();
  const port = typeof address === 'object' && address ? address.port : 0;

  return {
    host: opts.host ?? '127.0.0.1',
    port,
    messages,
    connections: () => connections,
    waitFor(n, timeoutMs = 5000) {
      if (messages.length >= n) return Promise.resolve(messages.slice());
      return new Promise((resolve, rejectWait) => {
        const timer = setTimeout(() => rejectWait(new Error(`waited ${timeoutMs} ms for ${n} messages, got ${messages.length}`)), timeoutMs);
        waiters.push({ n, resolve: () => (clearTimeout(timer), resolve(messages.slice())) });
      });
    },
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

// ── scripted peer ─────────────────────────────────────────────────────────────

/**
 * What the peer does at one step:
 *   '250 2.1.5 ok'                a reply; several lines with '\n' ('250-a\n250 b'); any text goes,
 *                                 so 'hello there' sends garbage
 *   'drop'                        destroy the socket without a word
 *   'stall'                       never answer, ignore everything that follows on this connection
 *   'stop-reading'                never answer, and stop reading the socket (socket.pause()): a
 *                                 tarpit or a wedged server; once the kernel's buffers are full, the
 *                                 client's writes go nowhere (at 'BODY', for a message larger than them)
 *   { reply, then: 'drop' }       answer, then destroy the socket (a 421 that hangs up)
 */
export type ScriptAction = string | { reply: string; then: 'drop' };

/**
 * A step is one action, or a list used in turn — the n-th use of that step (counted over all
 * connections) takes the n-th entry and the last entry repeats: RCPT: ['451 4.3.0 try later', '250 ok'].
 */
export type ScriptStep = ScriptAction | readonly ScriptAction[];

export interface PeerScript {
  /** Default '220 scripted.test ESMTP'. */
  greeting?: ScriptStep;
  /** EHLO keywords after the first line, e.g. ['PIPELINING', 'SIZE 1000']. Default none. */
  ehlo?: string[];
  /**
   * Per command verb (upper case: 'EHLO', 'HELO', 'MAIL', 'RCPT', 'DATA', 'RSET', 'NOOP', 'QUIT',
   * 'STARTTLS', …) plus two steps of the data phase:
   *   'BODY' — taken when the first bytes of message content arrive (use 'drop' or 'stall' there);
   *   '.'    — the answer after the end of data.
   * Defaults: EHLO from `ehlo`, HELO/MAIL/RCPT/RSET/NOOP/'.' a 250, DATA '354', QUIT '221' and close,
   * STARTTLS '454 4.7.0 TLS not available', anything else '502 5.5.2 unknown command'.
   */
  on?: Record<string, ScriptStep>;
}

export interface ScriptedPeer {
  host: string;
  port: number;
  /** Every command line received, in order, over all connections (data lines excluded). */
  commands: string[];
  /** Message contents received (up to but excluding the terminating '.'). */
  messages: Buffer[];
  connections: () => number;
  close(): Promise<void>;
}

const DEFAULTS: Record<string, ScriptAction> = {
  HELO: '250 scripted.test',
  MAIL: '250 2.1.0 sender ok',
  RCPT: '250 2.1.5 recipient ok',
  DATA: '354 go ahead',
  '.': '250 2.0.0 queued',
  RSET: '250 2.0.0 reset',
  NOOP: '250 2.0.0 ok',
  QUIT: { reply: '221 2.0.0 bye', then: 'drop' },
  STARTTLS: '454 4.7.0 TLS not available',
  BODY: '',
};
const END_OF_DATA = Buffer.from('\r\n.\r\n');

export async function startScriptedPeer(script: PeerScript = {}, listen: Listen = {}): Promise<ScriptedPeer> {
  const commands: string[] = [];
  const messages: Buffer[] = [];
  const uses = new Map<string, number>();
  const sockets = new Set<Socket>();
  let connections = 0;

  const ehloReply = ['250' + (script.ehlo?.length ? '-' : ' ') + 'scripted.test', ...(script.ehlo ?? []).map((k, i, all) => `250${i === all.length - 1 ? ' ' : '-'}${k}`)].join('\n');

  function actionFor(step: string): ScriptAction {
    const scripted = step === 'GREETING' ? script.greeting : script.on?.[step];
    if (scripted === undefined) {
      if (step === 'GREETING') return '220 scripted.test ESMTP';
      if (step === 'EHLO') return ehloReply;
      return DEFAULTS[step] ?? '502 5.5.2 unknown command';
    }
    if (typeof scripted === 'string' || !Array.isArray(scripted)) return scripted as ScriptAction;
    const n = uses.get(step) ?? 0;
    uses.set(step, n + 1);
    return scripted[Math.min(n, scripted.length - 1)] as ScriptAction;
  }

  const server = createServer((socket) => {
    connections++;
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => undefined);
    let buf = Buffer.alloc(0);
    let inData = false;
    let bodyStarted = false;
    let stalled = false;
    /** In the data: how far the message so far (with the CRLF before it) has been searched for the terminator. */
    let scanned = 0;

    /** Performs an action; false when the connection is gone or stalled. */
    const act = (action: ScriptAction): boolean => {
      if (action === '') return true;
      if (action === 'drop') {
        socket.destroy();
        return false;
      }
      if (action === 'stall' || action === 'stop-reading') {
        stalled = true;
        if (action === 'stop-reading') socket.pause();
        return false;
      }
      const reply = typeof action === 'string' ? action : action.reply;
      socket.write(reply.split('\n').join('\r\n') + '\r\n');
      if (typeof action !== 'string') {
        socket.end(() => socket.destroy());
        return false;
      }
      return true;
    };

    const consume = (): void => {
      while (!stalled && !socket.destroyed) {
        if (inData) {
          if (!bodyStarted && buf.length > 0) {
            bodyStarted = true;
            if (!act(actionFor('BODY'))) return;
          }
          // The terminator is CRLF.CRLF; an empty message is just ".\r\n" right after the 354.
          // Searched from where the last search stopped, so a message of megabytes is read in one pass.
          const probe = Buffer.concat([Buffer.from('\r\n'), buf]);
          const end = probe.indexOf(END_OF_DATA, scanned);
          if (end === -1) {
            scanned = Math.max(0, probe.length - END_OF_DATA.length + 1);
            return;
          }
          messages.push(probe.subarray(2, end + 2));
          buf = probe.subarray(end + END_OF_DATA.length);
          inData = false;
          scanned = 0;
          if (!act(actionFor('.'))) return;
          continue;
        }
        const nl = buf.indexOf('\n');
        if (nl === -1) return;
        const line = buf.subarray(0, nl).toString('utf8').replace(/\r$/, '');
        buf = buf.subarray(nl + 1);
        commands.push(line);
        const verb = (/^[A-Za-z]+/.exec(line)?.[0] ?? '').toUpperCase();
        const action = actionFor(verb);
        if (!act(action)) return;
        if (verb === 'DATA' && typeof action === 'string' && action.startsWith('354')) {
          inData = true;
          bodyStarted = false;
        }
      }
    };

    socket.on('data', (chunk: Buffer) => {
      if (stalled) return;
      buf = Buffer.concat([buf, chunk]);
      consume();
    });
    act(actionFor('GREETING'));
  });

  await new Promise<void>((resolve, rejectListen) => {
    server.once('error', rejectListen);
    server.listen(listen.port ?? 0, listen.host ?? '127.0.0.1', () => resolve());
  });
  const address = server.address();
  const port = typeof address === 'object' && address ? address.port : 0;

  return {
    host: listen.host ?? '127.0.0.1',
    port,
    commands,
    messages,
    connections: () => connections,
    close() {
      for (const s of sockets) s.destroy();
      return new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

/**
 * Starts peers at several loopback addresses on one port (the first one's ephemeral port, so a DNS
 * stub can name them all with one MX port): `start` passes each peer it starts through `track`. That
 * port may be taken at one of the other addresses now and then: every peer started is then closed
 * and all start again, `tries` times at most.
 */
export async function startOnOnePort(start: (track: <P extends { close(): Promise<void> }>(peer: P) => P) => Promise<void>, tries = 5): Promise<void> {
  for (let attempt = 1; ; attempt++) {
    const started: { close(): Promise<void> }[] = [];
    try {
      await start((peer) => {
        started.push(peer);
        return peer;
      });
      return;
    } catch (err) {
      await Promise.all(started.map((p) => p.close()));
      if (attempt === tries) throw err;
    }
  }
}
