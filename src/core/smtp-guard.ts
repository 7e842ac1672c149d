import type { SMTPServer, SMTPServerSession } from 'smtp-server';
import { keepOwnEnhancedCodes, type SmtpReplyError } from './smtp-reply.js';
import { isPeerError } from './peer-error.js';
import type { ClientLimiter } from './client-limit.js';

/**
 * What an SMTP listener does against clients that hold connections instead of using them: a cap on
 * concurrent connections per client (ClientLimiter), and, on the submission port, a deadline to
 * authenticate. smtp-server's own socketTimeout is an idle timeout, which a client sending a NOOP (or
 * one byte) now and then never reaches.
 *
 * Wire it into smtp-server's onConnect and onClose, call authenticated() on a successful AUTH, and
 * attach() the server once it is created (the deadline needs its open connections to close one): that
 * also gives it what every Sluice SMTP listener has (enhanced codes on every reply, its connection
 * errors logged).
 */
export interface SmtpGuardOptions {
  readonly limiter: ClientLimiter;
  /** A client not authenticated this long after connecting gets 421 and is disconnected; 0 = none. */
  readonly authTimeoutMs?: number;
  /**
   * A connection open this long gets 421 and is disconnected, whatever it is doing (a DATA trickled a
   * byte at a time never reaches the idle timeout); 0 = none. For a port that takes a few short
   * messages a session (the feedback MX), not for submission.
   */
  readonly sessionTimeoutMs?: number;
  /** Told of each connection refused for its client's count (e.g. to log and count it). */
  readonly onRefused?: (ip: string) => void;
  /** Told of each connection closed at the authentication or session deadline. */
  readonly onDeadline?: (ip: string, deadline: 'auth' | 'session') => void;
}

/** Where attach() logs a listener's connection errors (a pino logger). */
export interface ConnectionErrorLog {
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
}

export interface SmtpGuard {
  onConnect(session: SMTPServerSession, callback: (err?: Error | null) => void): void;
  onClose(session: SMTPServerSession): void;
  authenticated(session: SMTPServerSession): void;
  /**
   * Also: every reply gets an enhanced status code (keepOwnEnhancedCodes), and the server's 'error'
   * events (socket trouble of one connection, which smtp-server has closed; unheard, Node would throw
   * them and end the process) are logged as `message`: at info when the client caused them
   * (isPeerError: resets, broken TLS handshakes, routine on a public port), else as a warning.
   */
  attach(server: SMTPServer, log: ConnectionErrorLog, message: string): void;
}

interface Counted {
  readonly key: string;
  timer: NodeJS.Timeout | null;
  readonly sessionTimer: NodeJS.Timeout | null;
}

export function createSmtpGuard(opts: SmtpGuardOptions): SmtpGuard {
  const counted = new Map<string, Counted>();
  let server: SMTPServer | null = null;

  const expire = (session: SMTPServerSession, deadline: 'auth' | 'session'): void => {
    const c = counted.get(session.id);
    if (c && deadline === 'auth') c.timer = null;
    for (const conn of server?.connections ?? []) {
      if (conn.session.id !== session.id) continue;
      // smtp-server sets user on AUTH, and false when a session is reset without one.
      if (deadline === 'auth' && conn.session.user) return;
      opts.onDeadline?.(session.remoteAddress, deadline);
      conn.send(421, `4.4.2 ${deadline === 'auth' ? 'Authentication timeout' : 'Session time limit reached'}, closing connection [${session.id}]`, false);
      conn.close();
      return;
    }
  };

  return {
    onConnect(session, callback) {
      const key = opts.limiter.admit(session.remoteAddress);
      if (key === null) {
        opts.onRefused?.(session.remoteAddress);
        const err = new Error(`4.7.0 Too many connections from your address, try again later [${session.id}]`) as SmtpReplyError;
        err.responseCode = 421;
        return callback(err);
      }
      const ms = opts.authTimeoutMs ?? 0;
      const timer = ms > 0 ? setTimeout(() => expire(session, 'auth'), ms) : null;
      timer?.unref();
      const sessionMs = opts.sessionTimeoutMs ?? 0;
      const sessionTimer = sessionMs > 0 ? setTimeout(() => expire(session, 'session'), sessionMs) : null;
      sessionTimer?.unref();
      counted.set(session.id, { key, timer, sessionTimer });
      callback();
    },
    onClose(session) {
      const c = counted.get(session.id);
      if (!c) return;
      counted.delete(session.id);
      if (c.timer) clearTimeout(c.timer);
      if (c.sessionTimer) clearTimeout(c.sessionTimer);
      opts.limiter.release(c.key);
    },
    authenticated(session) {
      const c = counted.get(session.id);
      if (c?.timer) {
        clearTimeout(c.timer);
        c.timer = null;
      }
    },
    attach(s, log, message) {
      server = s;
      keepOwnEnhancedCodes(s);
      s.on('error', (err) => (isPeerError(err) ? log.info({ err }, message) : log.warn({ err }, message)));
    },
  };
}
