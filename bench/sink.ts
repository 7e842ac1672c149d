/**
 * A minimal, fast and correct SMTP sink for the benchmarks, on node:net, run as its own process
 * (forked by bench/e2e.ts, IPC for control):
 *
 *   220 greeting · EHLO (PIPELINING, 8BITMIME, CHUNKING, SIZE) / HELO · MAIL · RCPT · DATA (354,
 *   read to CRLF.CRLF, 250) · BDAT <n> [LAST] (RFC 3030: n bytes, 250 each) · RSET · NOOP · QUIT;
 *   commands may arrive pipelined, answers to one read go out in one write. CHUNKING is offered as
 *   Postfix, Exchange and Gmail offer it.
 *
 * It keeps no message: per message it checks that the header block names the recipient and carries
 * a DKIM-Signature (a wrong or unsigned copy is counted, not accepted silently), counts recipients,
 * distinct recipients and duplicates, and remembers the time of the first and last delivery.
 *
 * IPC: sends { type: 'listening', port } once; answers { type: 'stats', id } with a SinkStats
 * carrying the same id, and { type: 'wait', id, expected, timeoutMs } likewise as soon as `expected`
 * distinct recipients arrived (or at the timeout, with timedOut set); { type: 'reset', id } answers
 * the stats so far and starts counting afresh (after a warm-up; open connections stay open).
 */
import { createServer, type Socket } from 'node:net';

export interface SinkStats {
  type: 'stats';
  messages: number;
  recipients: number;
  distinct: number;
  duplicates: number;
  /** Messages whose header block lacked the recipient's address or a DKIM-Signature. */
  badContent: number;
  bytes: number;
  connections: number;
  firstAt: number | null;
  lastAt: number | null;
  timedOut?: boolean;
}

// 200 MB: far above any benchmark message; announced so the client's SIZE= is checked against it.
const MAX_SIZE = 200 * 1024 * 1024;
const CRLF_DOT_CRLF = Buffer.from('\r\n.\r\n');
const HEADER_END = Buffer.from('\r\n\r\n');
const DKIM = Buffer.from('DKIM-Signature:');

const seen = new Set<string>();
const stats: SinkStats = { type: 'stats', messages: 0, recipients: 0, distinct: 0, duplicates: 0, badContent: 0, bytes: 0, connections: 0, firstAt: null, lastAt: null };
const waiters: { id: number; expected: number; timer: NodeJS.Timeout }[] = [];

function reply(id: number): SinkStats & { id: number } {
  return { ...stats, distinct: seen.size, id };
}

function delivered(rcpts: string[], message: Buffer): void {
  const now = Date.now();
  stats.firstAt ??= now;
  stats.lastAt = now;
  stats.messages++;
  stats.bytes += message.length;
  const headerEnd = message.indexOf(HEADER_END);
  const header = (headerEnd < 0 ? message : message.subarray(0, headerEnd)).toString('latin1');
  for (const r of rcpts) {
    stats.recipients++;
    if (seen.has(r)) stats.duplicates++;
    else seen.add(r);
    if (!header.includes(r)) stats.badContent++;
  }
  if (message.indexOf(DKIM) < 0 || (headerEnd >= 0 && message.indexOf(DKIM) > headerEnd)) stats.badContent++;
  for (let i = waiters.length - 1; i >= 0; i--) {
    const w = waiters[i] as { id: number; expected: number; timer: NodeJS.Timeout };
    if (seen.size >= w.expected) {
      clearTimeout(w.timer);
      waiters.splice(i, 1);
      process.send?.(reply(w.id));
    }
  }
}

function session(socket: Socket): void {
  stats.connections++;
  socket.setNoDelay(true);
  let buf: Buffer = Buffer.alloc(0);
  let inData = false;
  // Where to resume the CRLF.CRLF search: a terminator may straddle two reads.
  let scanFrom = 0;
  let from: string | null = null;
  let rcpts: string[] = [];
  /** In a BDAT chunk: bytes of it still to read, whether it is the LAST, and the chunks so far. */
  let chunkLeft = -1;
  let chunkLast = false;
  let chunks: Buffer[] = [];

  socket.write('220 sink.bench.test ESMTP ready\r\n');

  const command = (line: string): string | null => {
    const verb = line.slice(0, 4).toUpperCase();
    switch (verb) {
      case 'EHLO':
        return `250-sink.bench.test\r\n250-PIPELINING\r\n250-8BITMIME\r\n250-CHUNKING\r\n250 SIZE ${MAX_SIZE}`;
      case 'HELO':
        return '250 sink.bench.test';
      case 'MAIL': {
        const m = /^MAIL FROM:\s*<([^>]*)>/i.exec(line);
        if (!m) return '501 5.5.4 Syntax: MAIL FROM:<address>';
        from = m[1] as string;
        rcpts = [];
        return '250 2.1.0 Ok';
      }
      case 'RCPT': {
        const m = /^RCPT TO:\s*<([^>]+)>/i.exec(line);
        if (from === null) return '503 5.5.1 Need MAIL first';
        if (!m) return '501 5.5.4 Syntax: RCPT TO:<address>';
        rcpts.push(m[1] as string);
        return '250 2.1.5 Ok';
      }
      case 'DATA':
        if (rcpts.length === 0) return '503 5.5.1 Need RCPT first';
        inData = true;
        // The data starts right after this line; a message may be empty, so the terminator may
        // be the very first ".\r\n": pretend a CRLF precedes it.
        scanFrom = 0;
        return '354 End data with <CR><LF>.<CR><LF>';
      case 'BDAT': {
        const m = /^BDAT (\d{1,10})( LAST)?$/i.exec(line);
        if (!m) return '501 5.5.4 Syntax: BDAT <size> [LAST]';
        // The chunk is read whatever the state; its answer comes once it is in (see the data loop).
        chunkLeft = Number(m[1]);
        chunkLast = m[2] !== undefined;
        return '';
      }
      case 'RSET':
        from = null;
        rcpts = [];
        chunks = [];
        return '250 2.0.0 Ok';
      case 'NOOP':
        return '250 2.0.0 Ok';
      case 'QUIT':
        socket.end('221 2.0.0 Bye\r\n');
        return null;
      default:
        return '502 5.5.2 Command not recognized';
    }
  };

  socket.on('data', (chunk: Buffer) => {
    buf = buf.length === 0 ? chunk : Buffer.concat([buf, chunk]);
    const out: string[] = [];
    for (;;) {
      if (chunkLeft >= 0) {
        const take = Math.min(chunkLeft, buf.length);
        if (take > 0) chunks.push(buf.subarray(0, take));
        buf = buf.subarray(take);
        chunkLeft -= take;
        if (chunkLeft > 0) break;
        chunkLeft = -1;
        if (rcpts.length === 0) {
          chunks = [];
          out.push('503 5.5.1 Need RCPT first');
        } else if (!chunkLast) out.push('250 2.0.0 Chunk ok');
        else {
          const message = chunks.length === 1 ? (chunks[0] as Buffer) : Buffer.concat(chunks);
          chunks = [];
          delivered(rcpts, message);
          out.push(`250 2.0.0 Ok: queued as ${stats.messages}`);
          from = null;
          rcpts = [];
        }
        continue;
      }
      if (inData) {
        // Prefix "\r\n" virtually: a message that is only ".\r\n" ends at once.
        if (scanFrom === 0 && buf.length >= 3 && buf[0] === 0x2e && buf[1] === 0x0d && buf[2] === 0x0a) {
          finishData(0, 3);
          continue;
        }
        const end = buf.indexOf(CRLF_DOT_CRLF, Math.max(0, scanFrom - 4));
        if (end < 0) {
          // Under 3 bytes the lone-dot check above has not been decided yet: keep scanning from 0.
          scanFrom = buf.length >= 3 ? buf.length : 0;
          break;
        }
        finishData(end + 2, end + 5);
        continue;
      }
      const nl = buf.indexOf(0x0a);
      if (nl < 0) {
        if (buf.length > 4096) socket.destroy(); // no command line is that long (RFC 5321: 512)
        break;
      }
      const line = buf.subarray(0, nl).toString('latin1').replace(/\r$/, '');
      buf = buf.subarray(nl + 1);
      const answer = command(line);
      if (answer === null) return;
      if (answer !== '') out.push(answer);
    }
    if (out.length > 0 && !socket.destroyed) socket.write(out.join('\r\n') + '\r\n');

    function finishData(messageEnd: number, consumed: number): void {
      const message = buf.subarray(0, messageEnd);
      delivered(rcpts, message);
      out.push(`250 2.0.0 Ok: queued as ${stats.messages}`);
      buf = buf.subarray(consumed);
      // Copy the rest off the (possibly large) message buffer so it can be freed.
      if (buf.length > 0) buf = Buffer.from(buf);
      inData = false;
      from = null;
      rcpts = [];
      scanFrom = 0;
    }
  });
  socket.on('error', () => socket.destroy());
}

const server = createServer(session);
server.listen(0, '127.0.0.1', () => {
  const addr = server.address();
  process.send?.({ type: 'listening', port: typeof addr === 'object' && addr ? addr.port : 0 });
});

process.on('message', (m: { type: string; id?: number; expected?: number; timeoutMs?: number }) => {
  const id = m.id ?? 0;
  if (m.type === 'stats') process.send?.(reply(id));
  else if (m.type === 'reset') {
    process.send?.(reply(id));
    seen.clear();
    Object.assign(stats, { messages: 0, recipients: 0, duplicates: 0, badContent: 0, bytes: 0, connections: 0, firstAt: null, lastAt: null });
  } else if (m.type === 'wait') {
    const expected = m.expected ?? 0;
    if (seen.size >= expected) {
      process.send?.(reply(id));
      return;
    }
    const w = {
      id,
      expected,
      timer: setTimeout(() => {
        waiters.splice(waiters.indexOf(w), 1);
        process.send?.({ ...reply(id), timedOut: true });
      }, m.timeoutMs ?? 60_000),
    };
    waiters.push(w);
  } else if (m.type === 'close') {
    server.close();
    process.disconnect?.();
  }
});
// The parent went away: stop serving so this process ends with it.
process.on('disconnect', () => {
  server.close();
  setTimeout(() => process.exit(0), 200).unref();
});
