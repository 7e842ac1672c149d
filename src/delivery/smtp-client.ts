import { isAscii } from 'node:buffer';
import { connect as netConnect, isIP, type Socket } from 'node:net';
import { connect as tlsConnect, type TLSSocket } from 'node:tls';
import type { TlsPolicy } from '../config/schema.js';
import { SluiceError } from '../core/errors.js';
import { NON_ASCII } from '../core/utf8.js';
import { classifyReply } from './classify.js';
import { toChunk, toDataBlock, type DataBlock } from '../render/data-block.js';
import { ReplyParser, type Reply } from './reply-parser.js';

/**
 * One outbound SMTP session (RFC 5321), reused for several messages, one recipient per transaction
 * (each envelope sender is a per-recipient VERP address).
 *
 *   connect ─► 220 greeting ─► EHLO (HELO if EHLO is refused) ─► [STARTTLS ─► TLS ─► EHLO]
 *     ─► { [RSET] MAIL FROM ─► RCPT TO ─► DATA ─► 354 ─► message ─► "." } × n ─► QUIT
 *
 * With a server that offers CHUNKING (RFC 3030) and PIPELINING, a transaction is one write and one
 * round trip: MAIL FROM, RCPT TO and "BDAT <size> LAST" followed by the message itself (counted, not
 * dot-stuffed), the three replies read together. DATA needs two: the 354 must come before the message.
 *
 * Written on node:net/tls instead of nodemailer's SMTPConnection for three reasons that matter here:
 * - Timeouts per phase (RFC 5321 §4.5.3.2): nodemailer has one socket inactivity timeout, so the
 *   10-minute wait after the final "." and a 5-minute command timeout cannot both hold. While the
 *   message is written, only a lack of progress ends the session (the 3-minute data block timeout),
 *   so a slow link that keeps moving delivers however large the message.
 * - PIPELINING (RFC 2920): MAIL, RCPT and DATA go out in one write, so a message costs two round
 *   trips instead of four; nodemailer waits for each reply.
 * - Every failure is an outcome: a reply, a drop, a timeout or a protocol violation is returned from
 *   send() with the command it answered, which is what the retry and backoff logic consume.
 */

export interface SmtpClientOptions {
  host: string;
  port: number;
  ehloName: string;
  /** STARTTLS policy of this session (config/schema.ts TlsPolicy). */
  tls: TlsPolicy;
  /**
   * The name the server's certificate must match under 'verify', and the SNI: the MX host name
   * (RouteHost.mx; `host` is its address). Default `host`.
   */
  tlsName?: string;
  /**
   * RFC 5321 §4.5.3.2: `dataBlockMs` bounds each step of writing the message (DATA after the 354, or
   * BDAT with its chunk): the session ends when the server takes none of it for that long (it stopped
   * reading), never for the total time a slow link takes. `dataMs` runs from the message's last byte
   * written (the terminating "." or the end of the last chunk) to the final reply. No other reply's
   * timer runs while the message is written: a server may hold its answers to MAIL and RCPT,
   * pipelined with BDAT, until it has read the chunk (RFC 2920 §3.1).
   */
  timeouts: { connectMs: number; greetingMs: number; commandMs: number; dataBlockMs: number; dataMs: number };
  /** Source address of the connection (delivery/bind.ts sourceFor). */
  localAddress?: string;
  /** Send with BDAT when the server offers CHUNKING (default true). */
  chunking?: boolean;
  /**
   * Ends a connect still under way (the TCP connect, the greeting, EHLO, STARTTLS) when it fires:
   * connect() then rejects. A shutdown's grace must not wait on a host that holds its greeting for
   * the timeouts' minutes (a tarpit).
   */
  signal?: AbortSignal;
}

export interface SmtpOutcome {
  result: 'delivered' | 'deferred' | 'bounced';
  code: number | null;
  enhanced: string | null;
  /** The remote reply lines joined by '\n', or what went wrong locally (drop, timeout, refused). */
  response: string;
  /** What was answered: 'CONN', 'EHLO', 'STARTTLS', 'RSET', 'MAIL FROM', 'RCPT TO', 'DATA', 'BDAT'. */
  command: string;
  /** 421, or a 4.7.x / 450 / 451 "slow down": feeds adaptive backoff. */
  throttled: boolean;
  /** False after a drop, a timeout or a 421: the caller must open a new connection. */
  connectionUsable: boolean;
  /**
   * The server offered CHUNKING but did not know BDAT (500/502): it read the message as commands, so
   * the session is over, the message is deferred, and the host should get DATA from now on.
   */
  chunkingRefused?: true;
  /**
   * The session was lost (a drop, a timeout, a reply that is not SMTP) before this transaction got
   * under way: before the message was written, or (MAIL, RCPT and BDAT with the message pipelined)
   * before the server answered MAIL FROM. Nothing was said about the recipient or the message, so it
   * is no attempt: the caller gives the copy back and seeks another session, as for a session that
   * ended before the transaction began (RFC 5321 §5.1: the next MX host). A duplicate is no likelier
   * than after a deferral, whose retry sends the copy again too.
   */
  sessionLost?: true;
}

/**
 * An outcome decided on this side, without a remote reply to classify: a drop, a timeout, a local
 * refusal, or the dispatcher's own verdict (suppressed, cancelled, not renderable). Never throttled.
 */
export function localOutcome(result: SmtpOutcome['result'], enhanced: string | null, response: string, command: string, connectionUsable: boolean): SmtpOutcome {
  return { result, code: null, enhanced, response, command, throttled: false, connectionUsable };
}

/** Rejection of SmtpClient.connect(): no session could be opened. `outcome.command` names the step. */
export class SmtpConnectError extends SluiceError {
  readonly outcome: SmtpOutcome;
  /**
   * The server offered STARTTLS and the session broke in the TLS handshake or in the EHLO after it:
   * the peer's TLS is broken, and a new session without STARTTLS may well deliver (the caller decides).
   */
  tlsFailed = false;
  /**
   * Under a mandatory TLS policy (encrypt, verify) the server did not offer STARTTLS or refused it
   * (4.7.4): the session was given up after EHLO for the policy alone.
   */
  tlsNotStarted = false;
  constructor(outcome: SmtpOutcome, cause?: unknown) {
    super('SLUICE_DELIVERY_CONNECT_FAILED', outcome.response, cause === undefined ? {} : { cause });
    this.outcome = outcome;
  }
}

/** A reply, or the reason none came. */
type Answer = { code: number; lines: string[] } | { code: null; reason: string };

interface Waiter {
  command: string;
  timeoutMs: number;
  /** The reply that ends a transaction (to the data): its timer is the data termination timeout. */
  final: boolean;
  resolve: (answer: Answer) => void;
}

// Enhanced codes (RFC 3463) of a session that could not be set up and has no reply of the server's
// to say why, as Postfix gives them: the TCP connection failed (refused, unreachable, timed out);
// it was made but broke or went silent before the session was up; the TLS handshake failed.
const NO_ANSWER = '4.4.1';
const BAD_CONNECTION = '4.4.2';
const TLS_FAILED = '4.7.5';
// Mandatory TLS the server does not offer or refuses (RFC 3463 "security features not supported"),
// as Postfix's "4.7.4 TLS is required, but was not offered by host …".
const TLS_REQUIRED = '4.7.4';
// The answer to QUIT changes nothing (RFC 5321 §4.1.1.10): wait a little for politeness, then close.
const QUIT_WAIT_MS = 5000;
// Addresses are interpolated into command lines; a CR, LF or angle bracket would inject commands.
const UNSAFE_ADDRESS = /[\r\n<>]/;
// The message goes to the socket in pieces of this size, each taken by the socket a sign of progress
// (the data block timer restarts). Small next to the kernel's buffers (megabytes on a fast link),
// large enough that a 25 MB message is a few hundred writes.
const DATA_PIECE_BYTES = 64 * 1024;

export class SmtpClient {
  private socket: Socket;
  private parser = new ReplyParser();
  private readonly waiters: Waiter[] = [];
  private timer: NodeJS.Timeout | null = null;
  /**
   * While the message is written: the data block timer, restarted each time the socket takes a piece.
   * No reply timer runs meanwhile (arm() waits for the write to end).
   */
  private writing: NodeJS.Timeout | null = null;
  /** EHLO keywords (upper case) → their parameters, e.g. SIZE → '52428800'. */
  private extensions = new Map<string, string>();
  private isSecure = false;
  private isUsable = true;
  private sent = 0;
  /** The last transaction did not complete: the next one starts with RSET. */
  private dirty = false;
  private closedReason: string | null = null;
  /** The first reply that answered no command (a 421 aside): the server's replies are out of step with ours. */
  private unsolicited: string | null = null;

  private constructor(
    private readonly opts: SmtpClientOptions,
    socket: Socket,
  ) {
    this.socket = socket;
    this.attach(socket);
  }

  /** Opens the session up to a ready EHLO (after STARTTLS when offered); rejects with SmtpConnectError. */
  static async connect(opts: SmtpClientOptions): Promise<SmtpClient> {
    const socket = await openSocket(opts);
    const client = new SmtpClient(opts, socket);
    const abort = (): void => client.terminate('connect aborted: shutting down');
    opts.signal?.addEventListener('abort', abort, { once: true });
    try {
      if (opts.signal?.aborted) abort();
      await client.handshake();
    } catch (err) {
      client.close();
      throw err instanceof SmtpConnectError ? err : connectError(`${(err as Error).message ?? String(err)}`, 'CONN', BAD_CONNECTION, err);
    } finally {
      opts.signal?.removeEventListener('abort', abort);
    }
    return client;
  }

  get secure(): boolean {
    return this.isSecure;
  }

  get usable(): boolean {
    return this.isUsable;
  }

  get messagesSent(): number {
    return this.sent;
  }

  /** Why the session is over (a drop, a timeout, an unsolicited reply…), null while it is not. */
  get closeReason(): string | null {
    return this.isUsable ? null : this.closedReason;
  }

  /** EHLO keywords the server announced (upper case), e.g. PIPELINING, STARTTLS, SIZE. */
  get serverExtensions(): ReadonlySet<string> {
    return new Set(this.extensions.keys());
  }

  /** Messages go out with BDAT: the server offers CHUNKING and this client may use it. Prefer giving send() a chunk (render/data-block.ts toChunk) then. */
  get chunking(): boolean {
    return this.opts.chunking !== false && this.extensions.has('CHUNKING');
  }

  /** host:port of the server. */
  get peer(): string {
    return `${this.opts.host}:${this.opts.port}`;
  }

  /**
   * One transaction with one recipient. Never rejects: every answer, drop or timeout is an outcome.
   * `message` is the message, or a DATA block or BDAT chunk already made (render/data-block.ts) by a
   * worker; either is sent the way this session can (a chunk as a DATA block to a server without
   * CHUNKING, a DATA block with DATA even to one with it).
   */
  async send(envelope: { from: string; to: string }, message: Buffer | Uint8Array | DataBlock): Promise<SmtpOutcome> {
    try {
      return await this.transaction(envelope, message);
    } catch (err) {
      this.terminate(`local error: ${(err as Error)?.message ?? String(err)}`);
      return this.dead('DATA');
    }
  }

  /** Says QUIT and closes. */
  async quit(): Promise<void> {
    if (this.isUsable) {
      this.isUsable = false;
      await this.command('QUIT', 'QUIT', Math.min(this.opts.timeouts.commandMs, QUIT_WAIT_MS), true);
    }
    this.close();
  }

  /** Closes at once, without QUIT. */
  close(): void {
    this.terminate('connection closed locally');
  }

  // ── session setup ─────────────────────────────────────────────────────────

  private async handshake(): Promise<void> {
    const { timeouts } = this.opts;
    const greeting = await this.expect('CONN', timeouts.greetingMs);
    if (greeting.code !== 220) throw this.refusal(greeting, 'CONN');
    await this.ehlo();
    const { tls } = this.opts;
    if (tls === 'none') return;
    // Mandatory TLS (encrypt, verify): nothing goes in plain text past EHLO, so a server without
    // STARTTLS, or a man in the middle who struck it from the EHLO answer, gets no mail.
    const required = tls !== 'may';
    if (!this.extensions.has('STARTTLS')) {
      if (required) throw this.tlsRequired(`TLS is required, but was not offered by host ${this.label}`, 'EHLO');
      return;
    }

    const answer = await this.command('STARTTLS', 'STARTTLS', timeouts.commandMs);
    // No answer, or 421 (RFC 5321 §3.8: the server is closing the channel): the session is over,
    // under any policy; there is no plain text to go on in.
    if (answer.code === null || answer.code === 421) throw this.refusal(answer, 'STARTTLS');
    // Opportunistic TLS (RFC 3207 §4.1): when the server declines (454 etc.) the session goes on in
    // plain text, exactly as if STARTTLS had not been offered.
    if (answer.code !== 220) {
      if (required) throw this.tlsRequired(`TLS is required, but host ${this.label} refused to start TLS: ${answer.lines.join(' ')}`, 'STARTTLS');
      return;
    }
    // A reply that came with the 220 answered no command (replies injected in plain text, the
    // pattern of CVE-2011-0411) and ended the session: no handshake on the closed socket, which would
    // only time out and mark the host's TLS broken. A bad connection, tried again on a new one.
    if (!this.isUsable) throw this.refusal({ code: null, reason: this.closedReason ?? 'connection is closed' }, 'STARTTLS');
    try {
      await this.upgrade();
      // RFC 3207 §4.2: forget everything learnt before TLS and ask again.
      await this.ehlo();
    } catch (err) {
      // A refusal in words (a 4xx/5xx to the new EHLO) is the server's answer, not broken TLS.
      if (err instanceof SmtpConnectError && !(this.isSecure && err.outcome.code !== null)) err.tlsFailed = true;
      throw err;
    }
  }

  private async ehlo(): Promise<void> {
    const { ehloName, timeouts } = this.opts;
    const answer = await this.command(`EHLO ${ehloName}`, 'EHLO', timeouts.commandMs);
    if (answer.code === 250) {
      this.extensions = parseExtensions(acted(answer));
      return;
    }
    // RFC 5321 §3.2: a server that does not know EHLO (500/502) is greeted with HELO instead.
    if (answer.code !== null && answer.code >= 500) {
      const helo = await this.command(`HELO ${ehloName}`, 'HELO', timeouts.commandMs);
      if (helo.code === 250) {
        this.extensions = new Map();
        return;
      }
      throw this.refusal(helo, 'HELO');
    }
    throw this.refusal(answer, 'EHLO');
  }

  /**
   * The session could not be opened: a 554 greeting bounces, anything else defers (via classifyReply);
   * no reply at all (a drop, a timeout, garbage) is a bad connection.
   */
  private refusal(answer: Answer, command: string): SmtpConnectError {
    const outcome = this.outcome(answer, command, true);
    this.terminate(`session refused at ${command}: ${outcome.response}`);
    return new SmtpConnectError({ ...outcome, ...(answer.code === null ? { enhanced: BAD_CONNECTION } : {}), connectionUsable: false });
  }

  /**
   * The session cannot meet its mandatory TLS policy: deferred (the server may offer TLS later, or
   * the next MX host does), never a bounce, whatever the server answered to STARTTLS; the answer
   * says nothing about the recipient, so it is no code of the server's. The caller tries the next host.
   */
  private tlsRequired(why: string, command: string): SmtpConnectError {
    this.terminate(why);
    const err = connectError(why, command, TLS_REQUIRED);
    err.tlsNotStarted = true;
    return err;
  }

  /** The server as logs and outcomes name it: 'mx.example.com[192.0.2.1]:25', or 'host:port' without a name. */
  private get label(): string {
    const { tlsName, host, port } = this.opts;
    return tlsName !== undefined && tlsName !== host ? `${tlsName}[${host}]:${port}` : `${host}:${port}`;
  }

  private async upgrade(): Promise<void> {
    const plain = this.socket;
    this.detach(plain);
    // The TLS socket reports failures of the transport under it; this only keeps an error on the
    // plain socket from being an unhandled 'error' event.
    plain.on('error', () => undefined);
    const { host, tls: policy, timeouts } = this.opts;
    const name = this.opts.tlsName ?? host;
    const secure = await new Promise<TLSSocket>((resolve, reject) => {
      const tls = tlsConnect({
        socket: plain,
        // SNI takes a host name, never an IP literal (RFC 6066 §3).
        ...(isIP(name) === 0 ? { servername: name } : {}),
        // Node checks the certificate against servername, else `host`: without this, an MX reached
        // by its address would be checked against the address, which no MX certificate names.
        host: name,
        rejectUnauthorized: policy === 'verify',
      });
      const timer = setTimeout(() => {
        tls.destroy();
        reject(new Error(`TLS handshake timed out after ${timeouts.commandMs} ms`));
      }, timeouts.commandMs);
      tls.once('secureConnect', () => {
        clearTimeout(timer);
        tls.removeAllListeners('error');
        resolve(tls);
      });
      tls.once('error', (err) => {
        clearTimeout(timer);
        tls.destroy();
        reject(err);
      });
    }).catch((err: Error) => {
      const why = `STARTTLS failed with ${this.label}: ${err.message}`;
      this.terminate(why);
      throw connectError(policy === 'may' ? why : `TLS is required, but ${why}`, 'CONN', TLS_FAILED, err);
    });
    // Bytes a server (or a man in the middle) sent in plain text after its 220 must not be read as
    // answers inside TLS (the STARTTLS command injection of CVE-2011-0411): start a fresh parser.
    this.parser = new ReplyParser();
    this.socket = secure;
    this.isSecure = true;
    this.attach(secure);
  }

  // ── one transaction ───────────────────────────────────────────────────────

  private async transaction(envelope: { from: string; to: string }, message: Buffer | Uint8Array | DataBlock): Promise<SmtpOutcome> {
    if (!this.isUsable) return lostBefore(this.dead('MAIL FROM'));
    const { commandMs, dataMs } = this.opts.timeouts;
    if (UNSAFE_ADDRESS.test(envelope.from)) return localReject('MAIL FROM', 'sender address contains a line break or angle bracket');
    if (UNSAFE_ADDRESS.test(envelope.to)) return localReject('RCPT TO', 'recipient address contains a line break or angle bracket');
    const block = this.block(message);
    // RFC 6531 §3.4: an address that is not ASCII makes the transaction need SMTPUTF8.
    const utf8Address = NON_ASCII.test(envelope.from) || NON_ASCII.test(envelope.to);
    if (utf8Address && !this.extensions.has('SMTPUTF8')) {
      // RFC 6531 §3.2: such an address goes only to a server that offers SMTPUTF8 (it would be
      // refused, or worse read as some other mailbox); as Postfix, a permanent 5.6.7.
      if (NON_ASCII.test(envelope.from)) return localOutcome('bounced', '5.6.7', `local: the sender address needs SMTPUTF8, which ${this.peer} does not offer`, 'MAIL FROM', true);
      return localOutcome('bounced', '5.6.7', `local: the recipient address needs SMTPUTF8, which ${this.peer} does not offer`, 'RCPT TO', true);
    }
    // UTF-8 header fields (RFC 6532) go with SMTPUTF8 where it is offered. Where it is not, the
    // message goes as it is, as Postfix sends mail its sender did not submit with SMTPUTF8 (ingress
    // requires SMTPUTF8 only for addresses): bouncing it would refuse mail most servers take.
    const utf8 = utf8Address || (this.extensions.has('SMTPUTF8') && utf8Headers(block));
    // RFC 1870 §6: a message larger than the server's declared fixed maximum is not sent (it would
    // only be refused after the transfer, or accepted against the server's word); it is a permanent
    // failure, as in Postfix ("message size exceeds size limit of server").
    const limit = this.sizeLimit();
    const size = block.size ?? block.bytes.length;
    if (limit !== null && size > limit) {
      return localOutcome('bounced', '5.3.4', `local: message size ${size} exceeds size limit ${limit} of server ${this.peer}`, 'MAIL FROM', true);
    }

    if (this.dirty) {
      const reset = await this.command('RSET', 'RSET', commandMs);
      if (reset.code !== 250) {
        // RSET failing says nothing about this message: defer it and drop the session.
        const outcome = this.outcome(reset, 'RSET', true);
        this.terminate('RSET was refused');
        return lostBefore({ ...outcome, result: 'deferred', connectionUsable: false });
      }
      this.dirty = false;
    }

    const mail = `MAIL FROM:<${envelope.from}>${this.mailParams(size, block.eightBit, utf8)}`;
    const rcpt = `RCPT TO:<${envelope.to}>`;
    this.dirty = true; // until the final reply says 2xx
    if (block.chunked === true) return this.chunked(mail, rcpt, block.bytes);

    let failed: { answer: Answer; command: string } | null = null;
    if (this.extensions.has('PIPELINING')) {
      // RFC 2920 §3.1: MAIL, RCPT and DATA may be sent together; DATA must be the last of a group.
      const pending = [this.expect('MAIL FROM', commandMs), this.expect('RCPT TO', commandMs), this.expect('DATA', commandMs)] as const;
      this.write(`${mail}\r\n${rcpt}\r\nDATA\r\n`);
      const [m, r, d] = [await pending[0], await pending[1], await pending[2]];
      if (!isPositive(m)) failed = { answer: m, command: 'MAIL FROM' };
      else if (!isPositive(r)) failed = { answer: r, command: 'RCPT TO' };
      else if (d.code !== 354) failed = { answer: d, command: 'DATA' };
      // A server may answer 354 although the recipient was refused (RFC 2920 §3.1): send an empty
      // message so the session stays in step, and ignore the answer to it.
      if (failed && d.code === 354) await this.command('.', 'DATA', commandMs);
    } else {
      const m = await this.command(mail, 'MAIL FROM', commandMs);
      if (!isPositive(m)) failed = { answer: m, command: 'MAIL FROM' };
      else {
        const r = await this.command(rcpt, 'RCPT TO', commandMs);
        if (!isPositive(r)) failed = { answer: r, command: 'RCPT TO' };
        else {
          const d = await this.command('DATA', 'DATA', commandMs);
          if (d.code !== 354) failed = { answer: d, command: 'DATA' };
        }
      }
    }
    if (failed) return lostBefore(this.outcome(failed.answer, failed.command, true));

    // While the message is written, the session ends only when the server takes none of it for
    // dataBlockMs (it stopped reading: TCP back-pressure); the wait for the final reply (dataMs) starts
    // once the terminating "." is written.
    const final = this.expect('DATA', dataMs, false, true);
    await this.writeMessage('', block.bytes);
    return this.ended(await final, 'DATA');
  }

  /** The outcome of the reply that ends a transaction (after the data); a 2xx leaves the session clean. */
  private ended(answer: Answer, command: 'DATA' | 'BDAT'): SmtpOutcome {
    const outcome = this.outcome(answer, command, !isPositive(answer));
    if (outcome.result === 'delivered') {
      this.sent++;
      this.dirty = false;
    }
    return outcome;
  }

  /** The message in the form this session sends: a BDAT chunk when it can chunk, else a DATA block. */
  private block(message: Uint8Array | DataBlock): DataBlock {
    if (message instanceof Uint8Array) return this.chunking ? toChunk(message) : toDataBlock(message);
    // A chunk is the message with CRLF line ends: framed for DATA as it is.
    if (message.chunked === true && !this.chunking) return toDataBlock(message.bytes);
    return message;
  }

  /**
   * MAIL, RCPT and "BDAT <n> LAST" with the message (RFC 3030). Pipelined, they are one write, and
   * the server reads the chunk even when it refused MAIL or RCPT (it answers the BDAT with an error),
   * so the session stays in step; the first refusal is the outcome.
   */
  private async chunked(mail: string, rcpt: string, bytes: Buffer): Promise<SmtpOutcome> {
    const { commandMs, dataMs } = this.opts.timeouts;
    const bdat = `BDAT ${bytes.length} LAST\r\n`;
    let final: Answer;
    if (this.extensions.has('PIPELINING')) {
      const pending = [this.expect('MAIL FROM', commandMs), this.expect('RCPT TO', commandMs), this.expect('BDAT', dataMs, false, true)] as const;
      await this.writeMessage(`${mail}\r\n${rcpt}\r\n${bdat}`, bytes);
      const [m, r, b] = [await pending[0], await pending[1], await pending[2]];
      // The message went with the commands: only a MAIL FROM without an answer is a session lost before the transaction.
      if (!isPositive(m)) return lostBefore(this.outcome(m, 'MAIL FROM', true));
      if (!isPositive(r)) return this.outcome(r, 'RCPT TO', true);
      final = b;
    } else {
      const m = await this.command(mail, 'MAIL FROM', commandMs);
      if (!isPositive(m)) return lostBefore(this.outcome(m, 'MAIL FROM', true));
      const r = await this.command(rcpt, 'RCPT TO', commandMs);
      if (!isPositive(r)) return lostBefore(this.outcome(r, 'RCPT TO', true));
      const b = this.expect('BDAT', dataMs, false, true);
      await this.writeMessage(bdat, bytes);
      final = await b;
    }
    if (final.code === 500 || final.code === 502) {
      // "Command unrecognized / not implemented" although CHUNKING was announced (a broken server or
      // a middlebox that passes the keyword through): not the message's fault, and not a bounce.
      this.terminate('BDAT refused although the server offered CHUNKING');
      return { ...localOutcome('deferred', '4.5.2', `BDAT refused although the server offered CHUNKING: ${final.lines.join(' ')}`, 'BDAT', false), chunkingRefused: true };
    }
    // Unlike DATA, whose 354 puts the replies back in step before the message, nothing tells the
    // answer to BDAT from a second answer to MAIL or RCPT: a server that answered one command twice
    // (the extra reply came with the others) may have refused the message with the reply after the
    // 250 taken for it. Not proof of delivery: retried (a duplicate at worst, never a loss).
    if (this.unsolicited !== null && isPositive(final)) {
      return localOutcome('deferred', null, `protocol error: more replies than commands (${JSON.stringify(this.unsolicited.slice(0, 80))} answered none), so the answer to BDAT is unknown`, 'BDAT', false);
    }
    return this.ended(final, 'BDAT');
  }

  /** The server's fixed maximum message size (EHLO SIZE with a number above 0), else null. */
  private sizeLimit(): number | null {
    const declared = this.extensions.get('SIZE');
    if (declared === undefined || !/^\d+$/.test(declared)) return null;
    const limit = Number(declared);
    return limit > 0 ? limit : null;
  }

  private mailParams(size: number, eightBit: boolean, utf8: boolean): string {
    let params = '';
    if (this.extensions.has('SIZE')) params += ` SIZE=${size}`; // RFC 1870: lets the server refuse before the data
    if (eightBit && this.extensions.has('8BITMIME')) params += ' BODY=8BITMIME'; // RFC 6152
    if (utf8) params += ' SMTPUTF8'; // RFC 6531 (transaction() made sure it is offered)
    return params;
  }

  /** Maps an answer to an outcome; `failed` marks a step whose answer was not the expected positive one. */
  private outcome(answer: Answer, command: string, failed: boolean): SmtpOutcome {
    if (answer.code === null) {
      return localOutcome('deferred', null, answer.reason, command, false);
    }
    const response = answer.lines.join('\n');
    const c = classifyReply(answer.code, acted(answer).join('\n'));
    // 421: the server is closing the channel (RFC 5321 §3.8); close ours too.
    if (answer.code === 421) this.terminate(`server closed the session: ${answer.lines.at(-1) ?? '421'}`);
    const result = failed && c.result === 'delivered' ? 'deferred' : c.result;
    return { result, code: answer.code, enhanced: c.enhanced, response, command, throttled: c.throttled, connectionUsable: this.isUsable };
  }

  private dead(command: string): SmtpOutcome {
    return localOutcome('deferred', null, this.closedReason ?? 'connection is closed', command, false);
  }

  // ── wire ──────────────────────────────────────────────────────────────────

  private command(line: string, command: string, timeoutMs: number, evenIfUnusable = false): Promise<Answer> {
    const answer = this.expect(command, timeoutMs, evenIfUnusable);
    this.write(`${line}\r\n`);
    return answer;
  }

  private write(text: string): void {
    if (!this.socket.destroyed) this.socket.write(text, 'utf8');
  }

  /**
   * Writes command lines (may be '') and the message after them, in pieces: the first piece goes in
   * one write (one writev) with the lines, each further one when the socket has taken the ones before
   * ('drain'). Returns once the socket has taken the last piece (at most its high-water mark, 16 KB,
   * still in Node's buffer), or when the session ended. Each
   * piece taken restarts the data block timer, whose end (dataBlockMs without progress) ends the
   * session; the reply timers are armed again after the last byte (the final one: dataMs from here).
   * Awaited before the final reply is read, so no command of a later transaction can be written
   * between two pieces of this message.
   */
  private async writeMessage(lines: string, bytes: Buffer): Promise<void> {
    const socket = this.socket;
    if (socket.destroyed) return;
    const { dataBlockMs } = this.opts.timeouts;
    this.disarm();
    this.writing = setTimeout(() => {
      this.writing = null;
      this.terminate(`data block timeout: the server took none of the message for ${dataBlockMs} ms`);
    }, dataBlockMs);
    try {
      let at = Math.min(DATA_PIECE_BYTES, bytes.length);
      socket.cork();
      let room = lines === '' || socket.write(lines, 'utf8');
      if (at > 0) room = socket.write(bytes.subarray(0, at));
      socket.uncork();
      while (!socket.destroyed) {
        if (!room) {
          if (!(await drained(socket))) return;
          this.writing?.refresh();
        }
        if (at >= bytes.length) break;
        room = socket.write(bytes.subarray(at, at + DATA_PIECE_BYTES));
        at += DATA_PIECE_BYTES;
      }
    } finally {
      if (this.writing !== null) clearTimeout(this.writing);
      this.writing = null;
      if (this.isUsable) this.arm();
    }
  }

  /** Queues a waiter for the next reply; replies are matched to waiters in order (RFC 2920 §3.1). */
  private expect(command: string, timeoutMs: number, evenIfUnusable = false, final = false): Promise<Answer> {
    if ((!this.isUsable && !evenIfUnusable) || this.socket.destroyed) {
      return Promise.resolve({ code: null, reason: this.closedReason ?? 'connection is closed' });
    }
    return new Promise((resolve) => {
      this.waiters.push({ command, timeoutMs, final, resolve });
      this.arm();
    });
  }

  /**
   * One timer, always for the oldest waiter: a reply may take up to its own timeout from its turn.
   * None while the message is written (the data block timer runs instead): the turn of a reply
   * pipelined before or with the message starts when its last byte is written.
   */
  private arm(): void {
    if (this.timer !== null || this.writing !== null) return;
    const head = this.waiters[0];
    if (!head) return;
    this.timer = setTimeout(() => {
      this.timer = null;
      const what = head.final ? `the final reply to ${head.command} (after the end of the message)` : `the reply to ${head.command}`;
      this.terminate(`timeout after ${head.timeoutMs} ms waiting for ${what}`);
    }, head.timeoutMs);
  }

  private disarm(): void {
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
  }

  private readonly onData = (chunk: Buffer): void => {
    for (const reply of this.parser.push(chunk)) this.onReply(reply);
    if (this.parser.error !== null) this.terminate(`protocol error: ${this.parser.error}`);
  };

  private onReply(reply: Reply): void {
    const waiter = this.waiters.shift();
    this.disarm();
    if (!waiter) {
      // Unsolicited: typically "421 idle timeout" just before the server hangs up. The session is over.
      // Anything else means a command got two answers, so the answers read so far may be off by one.
      if (reply.code !== 421) this.unsolicited ??= reply.lines[0] ?? '';
      this.terminate(`unsolicited reply: ${reply.lines[0] ?? ''}`);
      return;
    }
    waiter.resolve({ code: reply.code, lines: reply.lines });
    this.arm();
  }

  private readonly onError = (err: Error): void => {
    this.closedReason ??= `connection error: ${err.message}`;
  };

  private readonly onClose = (): void => {
    this.terminate('connection closed by the remote host');
  };

  private attach(socket: Socket): void {
    socket.on('data', this.onData);
    socket.on('error', this.onError);
    socket.on('close', this.onClose);
  }

  private detach(socket: Socket): void {
    socket.off('data', this.onData);
    socket.off('error', this.onError);
    socket.off('close', this.onClose);
  }

  /** Ends the session: every pending waiter gets `reason` (the first reason recorded wins). */
  private terminate(reason: string): void {
    this.isUsable = false;
    this.closedReason ??= reason;
    this.disarm();
    if (this.writing !== null) clearTimeout(this.writing);
    this.writing = null;
    if (!this.socket.destroyed) this.socket.destroy();
    const why = this.closedReason;
    for (const waiter of this.waiters.splice(0)) waiter.resolve({ code: null, reason: `${why} (during ${waiter.command})` });
  }
}

/** Resolves true at the socket's next 'drain', false when it closes first. */
function drained(socket: Socket): Promise<boolean> {
  return new Promise((resolve) => {
    const done = (ok: boolean) => () => {
      socket.off('drain', onDrain);
      socket.off('close', onClose);
      resolve(ok);
    };
    const onDrain = done(true);
    const onClose = done(false);
    socket.on('drain', onDrain);
    socket.on('close', onClose);
  });
}

function isPositive(answer: Answer): boolean {
  return answer.code !== null && answer.code >= 200 && answer.code < 300;
}

/**
 * The lines of a reply that carry its code (the last line's), from the first of them on: all of them,
 * unless the server mixed codes against RFC 5321 §4.2.1 ("250-ok" then "550 5.7.1 no"). The enhanced
 * code and the EHLO keywords are read from these; the recorded response keeps every line.
 */
function acted(answer: { code: number; lines: readonly string[] }): readonly string[] {
  const prefix = String(answer.code);
  const first = answer.lines.findIndex((line) => line.startsWith(prefix));
  return first <= 0 ? answer.lines : answer.lines.slice(first);
}

function parseExtensions(lines: readonly string[]): Map<string, string> {
  const out = new Map<string, string>();
  // The first line is the greeting ("250-mx.example.com Hello"); each further line is one keyword.
  for (const line of lines.slice(1)) {
    const text = line.slice(4).trim();
    if (text === '') continue;
    const space = text.indexOf(' ');
    out.set((space === -1 ? text : text.slice(0, space)).toUpperCase(), space === -1 ? '' : text.slice(space + 1).trim());
  }
  return out;
}

/**
 * The message's header section has a byte that is not ASCII: UTF-8 header fields (RFC 6532; ingress
 * refuses a header section that is not valid UTF-8, and Sluice's own headers are ASCII). Read only
 * for a message with 8-bit bytes: up to the empty line that ends the header section.
 */
function utf8Headers(block: DataBlock): boolean {
  if (!block.eightBit) return false;
  const { bytes } = block;
  // A message that starts with the empty line has no header section.
  if (bytes[0] === 0x0d && bytes[1] === 0x0a) return false;
  const end = bytes.indexOf('\r\n\r\n');
  return !isAscii(bytes.subarray(0, end === -1 ? bytes.length : end));
}

/** `outcome` of a step before the transaction got under way: without an answer, the session was lost there (SmtpOutcome.sessionLost). */
function lostBefore(outcome: SmtpOutcome): SmtpOutcome {
  return outcome.code === null ? { ...outcome, sessionLost: true } : outcome;
}

function localReject(command: string, why: string): SmtpOutcome {
  // A malformed address can never be sent: bounce it (5.1.3 bad destination syntax, RFC 3463).
  return localOutcome('bounced', '5.1.3', `local: ${why}`, command, true);
}

function connectError(response: string, command: string, enhanced: string, cause?: unknown): SmtpConnectError {
  return new SmtpConnectError(localOutcome('deferred', enhanced, response, command, false), cause);
}

function openSocket(opts: SmtpClientOptions): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const socket = netConnect({ host: opts.host, port: opts.port, ...(opts.localAddress ? { localAddress: opts.localAddress } : {}) });
    const abort = (): void => {
      clearTimeout(timer);
      socket.destroy();
      reject(connectError(`connect to ${opts.host}:${opts.port} aborted: shutting down`, 'CONN', NO_ANSWER));
    };
    const timer = setTimeout(() => {
      opts.signal?.removeEventListener('abort', abort);
      socket.destroy();
      reject(connectError(`connect timeout after ${opts.timeouts.connectMs} ms to ${opts.host}:${opts.port}`, 'CONN', NO_ANSWER));
    }, opts.timeouts.connectMs);
    if (opts.signal?.aborted) return abort();
    opts.signal?.addEventListener('abort', abort, { once: true });
    socket.once('connect', () => {
      opts.signal?.removeEventListener('abort', abort);
      clearTimeout(timer);
      socket.removeAllListeners('error');
      // SMTP is request/reply with small commands: Nagle would hold pipelined lines back for an ACK.
      socket.setNoDelay(true);
      resolve(socket);
    });
    socket.once('error', (err) => {
      opts.signal?.removeEventListener('abort', abort);
      clearTimeout(timer);
      socket.destroy();
      // Node's message is already the useful one, e.g. 'connect ECONNREFUSED 127.0.0.1:2525'.
      reject(connectError(err.message, 'CONN', NO_ANSWER, err));
    });
  });
}
