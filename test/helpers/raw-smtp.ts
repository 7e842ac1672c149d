import { connect as netConnect, type Socket } from 'node:net';
import { connect as tlsConnect, type ConnectionOptions } from 'node:tls';

/**
 * A raw SMTP client for the tests that feed servers bad input: it writes exactly the bytes it is
 * given (bare LF, NUL, invalid UTF-8, a 50 MB body, one byte at a time) and reads replies as they
 * come, so each refusal's code can be asserted. Libraries such as nodemailer would refuse to send
 * most of these, or fix them on the way.
 */
export interface SmtpReply {
  code: number;
  /** The reply lines joined by '\n', codes included. */
  text: string;
}

/** Why no reply came: the server closed the connection, or said nothing within the wait. */
export type NoReply = { code: 0; text: 'closed' | 'timeout' };

export class RawSmtp {
  private socket: Socket;
  private buffered = '';
  private replies: (SmtpReply | NoReply)[] = [];
  private waiter: ((r: SmtpReply | NoReply) => void) | null = null;
  private ended = false;
  /** Resolves when the server closed the connection. */
  readonly closed: Promise<void>;
  private onClosed!: () => void;

  private constructor(socket: Socket) {
    this.socket = socket;
    this.closed = new Promise((r) => (this.onClosed = r));
    this.attach(socket);
  }

  /** Connects and reads the greeting. */
  static async open(port: number, host = '127.0.0.1'): Promise<{ client: RawSmtp; greeting: SmtpReply | NoReply }> {
    const socket = netConnect({ port, host });
    await new Promise<void>((resolve, reject) => {
      socket.once('connect', resolve);
      socket.once('error', reject);
    });
    const client = new RawSmtp(socket);
    return { client, greeting: await client.reply() };
  }

  private attach(socket: Socket): void {
    socket.on('data', (d: Buffer) => this.feed(d.toString('latin1')));
    socket.on('error', () => undefined);
    socket.on('close', () => {
      this.ended = true;
      this.onClosed();
      this.deliver({ code: 0, text: 'closed' });
    });
  }

  private feed(text: string): void {
    this.buffered += text;
    const lines: string[] = [];
    let nl: number;
    while ((nl = this.buffered.indexOf('\n')) !== -1) {
      lines.push(this.buffered.slice(0, nl).replace(/\r$/, ''));
      this.buffered = this.buffered.slice(nl + 1);
    }
    let current: string[] = [];
    for (const line of lines) {
      current.push(line);
      if (line[3] !== '-') {
        this.deliver({ code: Number(line.slice(0, 3)) || -1, text: current.join('\n') });
        current = [];
      }
    }
    // A reply cut between chunks keeps its first lines for the next feed.
    if (current.length > 0) this.buffered = current.map((l) => `${l}\r\n`).join('') + this.buffered;
  }

  private deliver(r: SmtpReply | NoReply): void {
    const w = this.waiter;
    if (w) {
      this.waiter = null;
      w(r);
    } else if (r.code !== 0 || !this.replies.some((x) => x.code === 0)) this.replies.push(r);
  }

  /** The next reply, or why none came within timeoutMs. */
  reply(timeoutMs = 5_000): Promise<SmtpReply | NoReply> {
    const queued = this.replies.shift();
    if (queued) return Promise.resolve(queued);
    if (this.ended) return Promise.resolve({ code: 0, text: 'closed' });
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.waiter = null;
        resolve({ code: 0, text: 'timeout' });
      }, timeoutMs);
      this.waiter = (r) => {
        clearTimeout(timer);
        resolve(r);
      };
    });
  }

  /** Writes bytes as they are; resolves once they are handed to the kernel. */
  write(data: string | Buffer): Promise<void> {
    if (this.ended) return Promise.resolve();
    return new Promise((resolve) => this.socket.write(data, () => resolve()));
  }

  /** One command line (CRLF added) and its reply. */
  async cmd(line: string | Buffer, timeoutMs?: number): Promise<SmtpReply | NoReply> {
    await this.write(Buffer.concat([Buffer.isBuffer(line) ? line : Buffer.from(line, 'utf8'), Buffer.from('\r\n')]));
    return this.reply(timeoutMs);
  }

  /**
   * EHLO, STARTTLS and EHLO again over TLS (the server's self-signed certificate is accepted unless
   * `tls` says otherwise). `pipelined` is written in the same packet as STARTTLS, after it: a command
   * injection (RFC 3207 §5: the server must discard it). Throws when the handshake fails; else the
   * reply to the EHLO over TLS.
   */
  async startTls(opts: { pipelined?: string; tls?: Omit<ConnectionOptions, 'socket'> } = {}): Promise<SmtpReply | NoReply> {
    await this.cmd('EHLO client.test');
    await this.write(`STARTTLS\r\n${opts.pipelined ?? ''}`);
    const go = await this.reply();
    if (go.code !== 220) throw new Error(`STARTTLS refused: ${go.text}`);
    const plain = this.socket;
    plain.removeAllListeners('data');
    plain.removeAllListeners('close');
    const secure = tlsConnect({ rejectUnauthorized: false, ...opts.tls, socket: plain });
    await new Promise<void>((resolve, reject) => {
      secure.once('secureConnect', resolve);
      secure.once('error', reject);
    });
    this.socket = secure;
    this.attach(secure);
    return this.cmd('EHLO client.test');
  }

  /** AUTH PLAIN; the reply. */
  auth(user: string, pass: string): Promise<SmtpReply | NoReply> {
    return this.cmd(`AUTH PLAIN ${Buffer.from(`\0${user}\0${pass}`).toString('base64')}`);
  }

  close(): void {
    this.socket.destroy();
  }
}
