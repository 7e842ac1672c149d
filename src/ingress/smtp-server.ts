import { smtpReply, type SmtpReplyError } from '../core/smtp-reply.js';
import { readBounded, callOnce, ByteBudget } from '../core/read-bounded.js';
import { SMTPServer, type SMTPServerAddress, type SMTPServerAuthentication, type SMTPServerDataStream, type SMTPServerEnvelope, type SMTPServerSession } from 'smtp-server';
import type { DsnNotify, MessageDsn } from '../store/messages.js';
import type { Logger } from 'pino';
import { SluiceError, toSluiceError } from '../core/errors.js';
import { parseAddress } from '../core/address.js';
import { assertRedisReady } from '../redis/client.js';
import type { Account } from '../accounts/registry.js';
import { AuthThrottle, recipientCap, type AuthThrottleOptions, type AuthVerdict } from '../accounts/limits.js';
import { acceptMessage, checkFrom, checkOpen, type AcceptDeps } from './accept.js';
import { headerAuthors } from './header-from.js';
import { withoutBcc } from '../render/raw.js';
import { checkMessageLines, malformed } from './message-check.js';
import { loadOrCreateTls } from './tls.js';
import type { TlsMaterial } from '../core/tls-material.js';
import { ClientLimiter } from '../core/client-limit.js';
import { createSmtpGuard } from '../core/smtp-guard.js';
import { listenOn } from '../core/listen.js';
import { checkMailParams, checkRcptParams, checkUtf8Address } from '../core/smtp-envelope.js';

/**
 * SMTP submission (RFC 6409): AUTH PLAIN/LOGIN required, STARTTLS offered, and every transaction
 * answered 250 only after the message is persisted and queued. Every refusal is a SluiceError turned
 * into a reply once, here, with its code and enhanced status and the session id for support.
 */
export interface SubmissionDeps extends AcceptDeps {
  readonly logger: Logger;
}

export interface SubmissionOptions {
  /** Default: config.ingress.smtp.host / port (0 = ephemeral). */
  readonly host?: string;
  readonly port?: number;
  /** Default: loadOrCreateTls(config). */
  readonly tls?: TlsMaterial;
  /** Allow AUTH before STARTTLS (tests on loopback, or TLS terminated in front). Default false. */
  readonly allowInsecureAuth?: boolean;
  readonly authThrottle?: Partial<AuthThrottleOptions>;
  /** How long close() lets open sessions finish before cutting them. Default 10 s. */
  readonly closeTimeoutMs?: number;
}

export interface SubmissionServer {
  readonly port: number;
  /** The STARTTLS key and certificate in force. */
  readonly tls: TlsMaterial;
  /** A renewed key and certificate (a reload): STARTTLS handshakes from now on use them. */
  updateTls(tls: TlsMaterial): void;
  close(): Promise<void>;
}

/**
 * smtp-server decodes command lines as UTF-8, turning invalid bytes into U+FFFD: its presence in an
 * address means the client sent bytes that are not UTF-8 (RFC 6531 allows UTF-8 addresses only).
 */
const REPLACEMENT_CHAR = '\uFFFD';

/**
 * The transaction's DSN parameters as the message keeps them, or undefined when it gave none. RET
 * and ENVID are read from the accepted MAIL FROM's own parameters (xtext-decoded by smtp-server):
 * envelope.dsn keeps those of a MAIL FROM that was refused.
 */
function dsnOf(envelope: SMTPServerEnvelope): MessageDsn | undefined {
  const args = (envelope.mailFrom && envelope.mailFrom.args) || {};
  const ret = typeof args['RET'] === 'string' ? args['RET'].toUpperCase() : undefined;
  const envid = typeof args['ENVID'] === 'string' ? args['ENVID'] : undefined;
  const rcpts = envelope.rcptTo.map((r) => (r.dsn?.notify || r.dsn?.orcpt ? { ...(r.dsn.notify ? { notify: r.dsn.notify as DsnNotify[] } : {}), ...(r.dsn.orcpt ? { orcpt: r.dsn.orcpt } : {}) } : null));
  const given = rcpts.some((r) => r !== null);
  if (ret === undefined && envid === undefined && !given) return undefined;
  return { ...(ret === 'FULL' || ret === 'HDRS' ? { ret } : {}), ...(envid !== undefined ? { envid } : {}), ...(given ? { rcpts } : {}) };
}

interface SessionUser {
  accountId: string;
  username: string;
  /** The stored hash the password matched: a reload that changes or removes it ends the login. */
  hash: string;
}

export async function startSubmissionServer(deps: SubmissionDeps, opts: SubmissionOptions = {}): Promise<SubmissionServer> {
  const cfg = deps.config.ingress.smtp;
  const tls = opts.tls ?? (await loadOrCreateTls(deps.config));
  const log = deps.logger; // app/ binds { role, interface }
  const throttle = new AuthThrottle(deps.redis, deps.keys, { delayAfter: cfg.authFailuresBeforeDelay, ...opts.authThrottle });
  // The tighter of the per-transaction SMTP limit and the per-message limit of every interface.
  const maxRcpts = Math.min(cfg.maxRecipients, deps.config.ingress.maxRecipients);
  const guard = createSmtpGuard({
    limiter: new ClientLimiter(cfg.maxClientsPerIp, cfg.clientLimitExempt),
    authTimeoutMs: cfg.authTimeout,
    onRefused: (ip) => {
      deps.metrics?.smtpSessionsRefused.inc({ interface: 'submission', reason: 'client_limit' });
      log.warn({ ip }, 'smtp connection refused: too many from this client');
    },
    onDeadline: (ip) => {
      deps.metrics?.smtpSessionsRefused.inc({ interface: 'submission', reason: 'auth_timeout' });
      log.info({ ip }, 'smtp connection closed: not authenticated in time');
    },
  });
  const maxSize = cfg.maxMessageSize;
  const insecureAuth = opts.allowInsecureAuth ?? false;
  const buffered = deps.buffered ?? new ByteBudget(deps.config.ingress.maxBuffered);

  const reject = (session: SMTPServerSession, err: unknown): SmtpReplyError => {
    const e = toSluiceError(err);
    if (e.code === 'SLUICE_INTERNAL' || e.code === 'SLUICE_REDIS_UNAVAILABLE') log.error({ err: e.cause ?? e, sessionId: session.id }, 'submission failed');
    return smtpReply(e, session.id);
  };
  const rejected = (session: SMTPServerSession, err: unknown): SmtpReplyError => {
    const e = toSluiceError(err);
    deps.metrics?.messagesRejected.inc({ source: 'smtp', code: e.code });
    return reject(session, e);
  };
  const accountOf = (session: SMTPServerSession): Account | undefined => {
    const user = session.user as SessionUser | undefined;
    return user && deps.registry.smtpUserInForce(user.username, user.hash, user.accountId) ? deps.registry.get(user.accountId) : undefined;
  };

  /**
   * Sessions whose message is being stored (by session id). smtp-server's own close timeout answers
   * 421 on every connection and cuts it, one whose message is being stored too: the client, told to
   * try again, sends it twice. close() cuts the others at closeTimeoutMs and these once answered.
   */
  const storing = new Set<string>();
  let closingDown = false;
  const cutSession = (id: string): void => {
    for (const conn of server.connections) {
      if (conn.session.id !== id) continue;
      conn.close();
      return;
    }
  };
  const closeTimeoutMs = opts.closeTimeoutMs ?? 10_000;

  const server = new SMTPServer({
    name: deps.config.instance.hostname,
    banner: 'Sluice submission',
    secure: false,
    key: tls.key,
    cert: tls.cert,
    authMethods: ['PLAIN', 'LOGIN'],
    authOptional: false,
    allowInsecureAuth: insecureAuth,
    size: maxSize,
    maxClients: cfg.maxClients,
    socketTimeout: cfg.socketTimeout,
    // Never (a Node timer's longest): close() below cuts the sessions instead, but not one being stored.
    closeTimeout: 2 ** 31 - 1,
    // A PTR lookup per connection adds latency and a DNS dependency for nothing: the log has the IP.
    disableReverseLookup: true,
    // Every reply carries an enhanced code: smtp-server's own derived ones, Sluice's refusals their
    // precise one at the start of the text (keepOwnEnhancedCodes, below).
    hideENHANCEDSTATUSCODES: false,
    // DSN (RFC 3461): smtp-server checks RET's and NOTIFY's values and ORCPT's syntax (501 5.5.4);
    // the message keeps them (dsnOf) and its failure notices honour them (delivery/dispatcher.ts).
    hideDSN: false,
    logger: false,

    onConnect: (session: SMTPServerSession, cb: (err?: Error | null) => void) => {
      // Until STARTTLS, AUTH is neither listed in EHLO nor taken (500 5.5.2): a client that sees it
      // listed may send AUTH PLAIN with its password in the initial response, in the clear, before
      // any refusal can stop it (RFC 4954 §4; Postfix's smtpd_tls_auth_only). TLS lifts it (onSecure).
      if (!insecureAuth) session.disabledCommands = ['AUTH'];
      guard.onConnect(session, cb);
    },
    onSecure: (_socket, session: SMTPServerSession, cb: (err?: Error | null) => void) => {
      session.disabledCommands = undefined;
      cb();
    },
    onClose: (session: SMTPServerSession) => guard.onClose(session),

    onAuth(auth: SMTPServerAuthentication, session: SMTPServerSession, cb) {
      const ip = session.remoteAddress;
      const username = auth.username ?? '';
      void (async () => {
        try {
          // AUTH, MAIL and DATA need Redis: while it is down, a 4xx at once rather than a wait.
          assertRedisReady(deps.redis);
          // Room among the attempts being checked, or a wait for it: guesses sent at once cannot pass the limit (begin).
          const attempt = await throttle.begin(ip, username);
          let found: Awaited<ReturnType<typeof deps.registry.authenticateSmtpUser>>;
          let verdict: AuthVerdict | null = null;
          try {
            found = await deps.registry.authenticateSmtpUser(username, auth.password ?? '');
            if (found) await throttle.succeed(username);
            else verdict = await throttle.fail(ip, username);
          } finally {
            await throttle.end(attempt);
          }
          if (found) {
            const { account } = found;
            log.info({ sessionId: session.id, account: account.id }, 'smtp auth ok');
            guard.authenticated(session);
            const user: SessionUser = { accountId: account.id, username, hash: found.hash };
            return cb(null, { user });
          }
          deps.metrics?.authFailures.inc({ interface: 'smtp' });
          log.warn({ sessionId: session.id, ip }, 'smtp auth failed');
          const delayMs = verdict?.delayMs ?? 0;
          if (delayMs > 0) await new Promise((r) => setTimeout(r, delayMs));
          cb(smtpReply(new SluiceError('SLUICE_AUTH_FAILED'), session.id));
        } catch (err) {
          cb(reject(session, err));
        }
      })();
    },

    onMailFrom(address: SMTPServerAddress, session: SMTPServerSession, cb) {
      const account = accountOf(session);
      if (!account) return cb(smtpReply(new SluiceError('SLUICE_AUTH_REQUIRED'), session.id));
      // The null sender (<>) names no domain; the header From is still checked after DATA.
      try {
        checkMailParams(address, { auth: true, dsn: true });
        if (address.address.includes(REPLACEMENT_CHAR)) throw new SluiceError('SLUICE_INGRESS_BAD_ADDRESS', 'The sender address is not valid UTF-8');
        checkUtf8Address(address, address, 'MAIL FROM');
        assertRedisReady(deps.redis);
      } catch (err) {
        return cb(rejected(session, err));
      }
      // A closed account is refused here already, before it sends a byte of DATA.
      checkOpen(deps, account)
        .then(() => {
          if (address.address !== '') checkFrom(deps.registry, account, address.address);
          cb();
        })
        .catch((err: unknown) => cb(rejected(session, err)));
    },

    onRcptTo(address: SMTPServerAddress, session: SMTPServerSession, cb) {
      // A repeated recipient (any case) replaces its earlier entry in smtp-server's envelope: it adds
      // none, so it is taken at the limit too, as smtp-server's own maxRecipients check does.
      // Looked for only at a limit: a scan per RCPT would make a long envelope quadratic.
      const key = address.address.toLowerCase();
      const repeat = (): boolean => session.envelope.rcptTo.some((r) => r.address.toLowerCase() === key);
      if (session.envelope.rcptTo.length >= maxRcpts && !repeat()) {
        return cb(reject(session, new SluiceError('SLUICE_INGRESS_TOO_MANY_RECIPIENTS', `Too many recipients, at most ${maxRcpts} per message`)));
      }
      // Past the account's smallest limit (quota, rate window) the message could never be accepted:
      // 452 here makes the client send these recipients in a later transaction (RFC 5321 §4.5.3.1.10),
      // where the 451 after DATA would have it retry the whole message, refused again, for days.
      const account = accountOf(session);
      const cap = account ? recipientCap(account) : null;
      if (cap !== null && session.envelope.rcptTo.length >= cap && !repeat()) {
        return cb(reject(session, new SluiceError('SLUICE_INGRESS_TOO_MANY_RECIPIENTS', `Too many recipients, this account may send at most ${cap} per message`)));
      }
      try {
        checkRcptParams(address, { dsn: true });
        if (address.address.includes(REPLACEMENT_CHAR) || !parseAddress(address.address)) throw new SluiceError('SLUICE_INGRESS_BAD_ADDRESS', 'The recipient address is not valid');
        checkUtf8Address(address, session.envelope.mailFrom, 'RCPT TO');
      } catch (err) {
        // A recipient refused, not the message (counted when a message is): the client goes on without it.
        return cb(reject(session, err));
      }
      cb();
    },

    onData(stream: SMTPServerDataStream, session: SMTPServerSession, cb) {
      // Read the whole message (bounded) before answering: the answer depends on all of it, and
      // smtp-server needs the stream drained either way.
      const answer = callOnce<SmtpReplyError>(cb);
      readBounded(stream, maxSize, buffered).then(({ data, size, overBudget }) => {
        void (async () => {
          const account = accountOf(session);
          if (overBudget) {
            log.warn({ sessionId: session.id, buffered: buffered.used, limit: buffered.limit }, 'message refused for now: too much mail in memory');
            return answer(rejected(session, new SluiceError('SLUICE_INGRESS_BUSY')));
          }
          if (!data) {
            return answer(rejected(session, new SluiceError('SLUICE_INGRESS_TOO_LARGE', `Message exceeds the size limit of ${maxSize} bytes`)));
          }
          // The message's bytes stay taken from the budget until it is persisted or refused.
          if (!account) {
            buffered.give(size);
            return answer(smtpReply(new SluiceError('SLUICE_AUTH_REQUIRED'), session.id));
          }
          const raw = data;
          storing.add(session.id);
          try {
            let from: string;
            try {
              assertRedisReady(deps.redis);
              checkMessageLines(raw);
              const authors = headerAuthors(raw);
              // From is acceptMessage's to check (as for the API); the other author fields are held to its rule here.
              from = authors.from;
              for (const o of authors.others) checkFrom(deps.registry, account, o.address, o.field);
            } catch (err) {
              // acceptMessage counts its own refusals; those of Redis, the message's lines and headers are counted here.
              return answer(rejected(session, err));
            }
            const accepted = await acceptMessage(
              { ...deps, logger: log },
              {
                account,
                source: 'smtp',
                kind: 'raw',
                from,
                recipients: session.envelope.rcptTo.map((r) => r.address),
                returnPath: session.envelope.mailFrom ? session.envelope.mailFrom.address : '',
                dsn: dsnOf(session.envelope),
                // Kept as submitted, but for a Bcc field: every recipient gets these bytes.
                body: withoutBcc(raw),
              },
            );
            log.info({ sessionId: session.id, msgId: accepted.id, account: account.id, recipients: accepted.recipients.length, bytes: size }, 'message accepted');
            answer(null, `2.0.0 Ok: queued as ${accepted.id}`);
          } catch (err) {
            answer(reject(session, err));
          } finally {
            buffered.give(size);
            storing.delete(session.id);
            // Shutting down: the answer is the session's last (written before the socket ends).
            if (closingDown) setImmediate(() => cutSession(session.id));
          }
        })();
      }, (err: Error & { code?: string }) => {
        // The client hung up before the end of the data (smtp-server destroys the stream with
        // ECONNECTION): nothing was stored and nobody hears the answer. Not an internal error.
        if (err.code === 'ECONNECTION') {
          log.info({ sessionId: session.id }, 'client disconnected during DATA; nothing stored');
          return answer(smtpReply(malformed('the connection closed before the end of the data'), session.id));
        }
        answer(reject(session, err));
      });
    },
  });

  guard.attach(server, log, 'smtp connection error');

  const host = opts.host ?? cfg.host;
  const port = opts.port ?? cfg.port;
  const bound = await listenOn(server.server, port, host, 'ingress.smtp');
  log.info({ port: bound }, 'smtp submission listening');

  let closing: Promise<void> | undefined;
  let inForce = tls;
  return {
    port: bound,
    get tls() {
      return inForce;
    },
    updateTls(next) {
      server.updateSecureContext({ key: next.key, cert: next.cert });
      inForce = next;
    },
    close() {
      closing ??= new Promise<void>((resolve) => {
        closingDown = true;
        // New connections are refused, commands on open ones answered 421 (smtp-server, while closing).
        server.close(() => resolve());
        const cut = setTimeout(() => {
          for (const conn of server.connections) {
            if (storing.has(conn.session.id)) continue;
            conn.send(421, `4.4.2 Server shutting down [${conn.session.id}]`, false);
            conn.close();
          }
        }, closeTimeoutMs);
        cut.unref();
      });
      return closing;
    },
  };
}
