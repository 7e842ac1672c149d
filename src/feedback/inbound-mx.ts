import { smtpReply, type SmtpReplyError } from '../core/smtp-reply.js';
import type { ReputationRecorder } from '../store/reputation.js';
import { readBounded, callOnce, ByteBudget } from '../core/read-bounded.js';
import { SMTPServer, type SMTPServerAddress, type SMTPServerDataStream, type SMTPServerSession } from 'smtp-server';
import type { Logger } from 'pino';
import type { RedisClient } from '../redis/client.js';
import type { Keys } from '../redis/keys.js';
import { SluiceError, toSluiceError } from '../core/errors.js';
import { newId, withFreeId } from '../core/ids.js';
import { DAY } from '../core/time.js';
import { assertRedisReady } from '../redis/client.js';
import { processFeedback, type FeedbackDeps, type FeedbackMail, type FeedbackMetricsHook, type ProcessOptions } from './process.js';
import { reserveFeedbackStorage } from '../store/feedback-stored.js';
import { claimDue, dropPending, loadFeedback, MAX_ATTEMPTS, recordOutcome, retryLater, storeFeedback } from './raw-store.js';
import { feedbackRecipient, type FeedbackRecipient, type VerifyUnsubscribeToken } from './recipients.js';
import { DEFAULT_EVENTS_MAX_LEN } from '../store/events.js';
import { ClientLimiter } from '../core/client-limit.js';
import { createSmtpGuard } from '../core/smtp-guard.js';
import { listenOn } from '../core/listen.js';
import { checkMailParams, checkRcptParams, checkUtf8Address } from '../core/smtp-envelope.js';
import type { TlsMaterial } from '../core/tls-material.js';

/**
 * The inbound MX of the bounce domain (the `feedback` role). It takes mail only for the VERP return
 * paths, the unsubscribe mailto addresses, the FBL addresses and postmaster (feedback/recipients.ts),
 * and relays nothing. Each accepted mail is stored raw BEFORE the 250 — once answered, the sender
 * forgets it — and processed after; a failure there is recorded on the stored mail and counted,
 * touches no other mail, and is tried again later (raw-store.ts feedback:pending).
 */
export interface InboundMxDeps {
  readonly redis: RedisClient;
  readonly keys: Keys;
  readonly logger: Logger;
  readonly metrics?: InboundMxMetricsHook | undefined;
  readonly reputation?: ReputationRecorder | undefined;
  /** A copy's later failure, passed on to its SMTP sender (process.ts FeedbackDeps). */
  readonly reportFailure?: FeedbackDeps['reportFailure'];
  readonly now?: (() => number) | undefined;
}

export interface InboundMxMetricsHook extends FeedbackMetricsHook {
  /** sluice_feedback_received_total{kind}: mail accepted and stored, once per recipient. */
  received?(kind: FeedbackRecipient['kind']): void;
  /** sluice_feedback_rejected_total{code}: RCPT or DATA refused, by error code. */
  rejected?(code: string): void;
  /** sluice_smtp_sessions_refused_total{interface="feedback"}: a connection refused for its client's count. */
  clientLimited?(): void;
}

export interface InboundMxOptions {
  readonly host: string;
  /** 0 = ephemeral. */
  readonly port: number;
  readonly bounceDomains: readonly string[];
  readonly fblAddresses: readonly string[];
  /** Bytes; real DSNs are a few KB, but some return the whole original message. */
  readonly maxMessageSize: number;
  /**
   * Bytes of mail held in memory at once, over every session: being received, and stored but not yet
   * processed. Beyond, a message is refused 452 4.3.1 (its sender retries) rather than buffered.
   * Default: 256 MiB.
   */
  readonly maxBufferedBytes?: number;
  /**
   * Bytes of feedback mail kept in Redis at most, over the raw mail's retention (feedback.maxStored):
   * beyond, a message is refused 452 4.3.1 rather than stored. Default: 2 GiB.
   */
  readonly maxStoredBytes?: number;
  readonly rawRetentionMs: number;
  /** How long per-recipient marks are kept (config retention.records). */
  readonly recordsRetentionMs?: number;
  readonly verifyUnsubscribeToken?: VerifyUnsubscribeToken | undefined;
  /** Key of the VERP tags (core/verp.ts): RCPT to an address with a wrong or missing tag gets 550. */
  readonly verpKey?: Buffer | undefined;
  /** Default 5 soft bounces … */
  readonly softBounceLimit?: number;
  /** … within 7 days, with no delivery in between. */
  readonly softBounceWindowMs?: number;
  /** Default 1,000,000 (config retention.eventsMaxLen). */
  readonly eventsMaxLen?: number;
  /**
   * Key and certificate of the STARTTLS it offers (RFC 3207), never requires: a sender that cannot do
   * TLS still gets its bounce through. The role passes loadOrCreateTls(config, 'feedback'); without
   * it, STARTTLS is not offered.
   */
  readonly tls?: TlsMaterial | undefined;
  /** Name in the greeting. Default 'localhost'. */
  readonly hostname?: string;
  /** Idle limit per connection. Default 60 s: RFC 5321 §4.5.3.2 asks for minutes, but a bounce is small. */
  readonly socketTimeoutMs?: number;
  /** A connection open this long gets 421 4.4.2 and is closed, whatever it is doing. Default 10 min. */
  readonly sessionTimeoutMs?: number;
  /** Concurrent connections. Default 100. */
  readonly maxClients?: number;
  /** Concurrent connections from one client (an IPv4 address, an IPv6 /64). Default 10. */
  readonly maxClientsPerIp?: number;
  /** Networks (addresses or CIDR) not counted by maxClientsPerIp. Default none. */
  readonly clientLimitExempt?: readonly string[];
  /** Recipients per transaction. Default 50: a bounce has one; a few more cover digests. */
  readonly maxRecipients?: number;
  /** How long close() lets sessions finish. Default 10 s. */
  readonly closeTimeoutMs?: number;
  /**
   * After a failed processing the mail is tried again after this, then twice as long, … (raw-store.ts
   * retryDelayMs, MAX_ATTEMPTS in all). Default 1 min.
   */
  readonly retryBaseMs?: number;
  /** How often mail due for processing (failed, or never processed: the process died) is looked for. Default 10 s. */
  readonly pendingIntervalMs?: number;
}

export interface InboundMx {
  readonly port: number;
  /** A renewed STARTTLS key and certificate (a reload): handshakes from now on use them. */
  updateTls(tls: TlsMaterial): void;
  /** The domains whose VERP and unsubscribe addresses it takes, from the next RCPT TO on (a reload). */
  setBounceDomains(domains: readonly string[]): void;
  /** Bytes of mail held in memory now (sluice_buffered_bytes{server="feedback"}); bounded by maxBufferedBytes. */
  bufferedBytes(): number;
  /** Resolves when every accepted mail has been processed (tests, graceful stop). */
  idle(): Promise<void>;
  close(): Promise<void>;
}

const RETRY_BASE_MS = 60_000;
const PENDING_INTERVAL_MS = 10_000;
/** A taken mail is another process's to take again after this (its processing takes milliseconds). */
const PENDING_LEASE_MS = 10 * 60_000;
/** Mails taken per look; each is processed in turn, so at most one is held in memory for it. */
const PENDING_PER_LOOK = 20;

/**
 * Refused RCPTs a connection may make; the next is answered 421 and the connection closed (Postfix's
 * smtpd_hard_error_limit is 20 too). A VERP or unsubscribe address's tag is 40 bits (core/verp.ts):
 * without a bound, one connection could test guesses as fast as it pipelines RCPT commands, and a
 * right one forges a hard bounce (a global suppression) or an unsubscribe. A real sender names one
 * or a few addresses per message.
 */
export const MAX_REFUSED_RCPTS = 20;
/** Five soft bounces in a row over a week: a mailbox full that long is abandoned, not busy. */
const DEFAULT_SOFT_BOUNCE_LIMIT = 5;
const DEFAULT_SOFT_BOUNCE_WINDOW_MS = 7 * DAY;

export async function startInboundMx(deps: InboundMxDeps, opts: InboundMxOptions): Promise<InboundMx> {
  const log = deps.logger;
  const now = deps.now ?? Date.now;
  const normalised = (domains: readonly string[]): string[] => domains.map((d) => d.trim().toLowerCase().replace(/\.$/, ''));
  const fblAddresses = opts.fblAddresses.map((a) => a.trim().toLowerCase());
  // bounceDomains is replaced by setBounceDomains (a reload that adds an account's return-path domain).
  const rules = { bounceDomains: normalised(opts.bounceDomains), fblAddresses, verifyUnsubscribeToken: opts.verifyUnsubscribeToken, verpKey: opts.verpKey };
  const processing: ProcessOptions = {
    get bounceDomains() {
      return rules.bounceDomains;
    },
    fblAddresses, verifyUnsubscribeToken: opts.verifyUnsubscribeToken, verpKey: opts.verpKey,
    softBounceLimit: opts.softBounceLimit ?? DEFAULT_SOFT_BOUNCE_LIMIT,
    softBounceWindowMs: opts.softBounceWindowMs ?? DEFAULT_SOFT_BOUNCE_WINDOW_MS,
    eventsMaxLen: opts.eventsMaxLen ?? DEFAULT_EVENTS_MAX_LEN,
    rawRetentionMs: opts.rawRetentionMs,
    recordsRetentionMs: opts.recordsRetentionMs,
  };
  const maxSize = opts.maxMessageSize;
  const maxStored = opts.maxStoredBytes ?? 2 * 1024 ** 3;
  // An unauthenticated port: without a bound, maxClients sessions of maxMessageSize each, and a
  // backlog of stored mail waiting for processing, could all sit in memory at once.
  const buffered = new ByteBudget(opts.maxBufferedBytes ?? 256 * 1024 * 1024);
  const maxRcpts = opts.maxRecipients ?? 50;
  /** Refused RCPTs of each open session (by session id): see MAX_REFUSED_RCPTS. */
  const refusedRcpts = new Map<string, number>();
  const inFlight = new Set<Promise<void>>();

  const refuse = (session: SMTPServerSession, err: SluiceError): SmtpReplyError => {
    deps.metrics?.rejected?.(err.code);
    return smtpReply(err, session.id);
  };

  /**
   * Processes a stored mail; a failure is recorded on it (outcome 'failed', listed) and it is tried
   * again later (raw-store.ts retryLater), never thrown.
   */
  const processStored = async (mail: FeedbackMail): Promise<void> => {
    try {
      await processFeedback({ ...deps, logger: log }, processing, mail);
    } catch (err) {
      deps.metrics?.outcome?.('failed');
      const again = await retryLater(deps.redis, deps.keys, mail.id, now(), opts.retryBaseMs ?? RETRY_BASE_MS).catch(() => true);
      log.error({ err, feedbackId: mail.id, retried: again }, again ? 'feedback processing failed; the mail is kept and tried again later' : `feedback processing failed ${MAX_ATTEMPTS} times; the mail is kept for the operator`);
      await recordOutcome(deps.redis, deps.keys, mail.id, 'failed', mail.receivedAt, opts.rawRetentionMs).catch((e: unknown) => log.warn({ err: e, feedbackId: mail.id }, 'could not record the failure'));
    }
  };

  /**
   * Processing runs after the 250: from the next turn, so the answer is written first (parsing is
   * synchronous work, which ran before it). The mail's bytes go back to the budget when it is done.
   */
  const processLater = (mail: FeedbackMail, bytes: number) => {
    const job = new Promise<void>((resolve) => setImmediate(resolve)).then(() => processStored(mail));
    inFlight.add(job);
    void job.finally(() => {
      inFlight.delete(job);
      buffered.give(bytes);
    });
  };

  /**
   * Stored mail whose processing is due: it failed (Redis refused a write, say) and its wait is over,
   * or it was answered 250 and the process died before processing it. One at a time.
   */
  let looking = false;
  let closed = false;
  const takeDue = async (): Promise<void> => {
    if (looking || closed || deps.redis.status !== 'ready') return;
    looking = true;
    try {
      for (const id of await claimDue(deps.redis, deps.keys, now(), PENDING_LEASE_MS, PENDING_PER_LOOK)) {
        if (closed) break;
        const stored = await loadFeedback(deps.redis, deps.keys, id);
        // Gone (its retention ended) or processed meanwhile: nothing to do.
        if (!stored || (stored.outcome !== '' && stored.outcome !== 'failed')) {
          await dropPending(deps.redis, deps.keys, id);
          continue;
        }
        log.info({ feedbackId: id, outcome: stored.outcome || 'not processed' }, 'processing stored feedback mail again');
        await processStored(stored);
      }
    } catch (err) {
      log.warn({ err }, 'could not look for feedback mail due for processing');
    } finally {
      looking = false;
    }
  };
  const pendingTimer = setInterval(() => {
    const job = takeDue();
    inFlight.add(job);
    void job.finally(() => inFlight.delete(job));
  }, opts.pendingIntervalMs ?? PENDING_INTERVAL_MS);
  pendingTimer.unref();

  const guard = createSmtpGuard({
    limiter: new ClientLimiter(opts.maxClientsPerIp ?? 10, opts.clientLimitExempt ?? []),
    sessionTimeoutMs: opts.sessionTimeoutMs ?? 10 * 60_000,
    onRefused: (ip) => {
      deps.metrics?.clientLimited?.();
      log.warn({ ip }, 'feedback connection refused: too many from this client');
    },
    onDeadline: (ip) => log.warn({ ip }, 'feedback connection closed at its session time limit'),
  });
  const server = new SMTPServer({
    name: opts.hostname ?? 'localhost',
    banner: 'Sluice feedback MX',
    // Plain text first, STARTTLS on offer; nothing here ever requires TLS (no AUTH to protect).
    secure: false,
    ...(opts.tls ? { key: opts.tls.key, cert: opts.tls.cert } : {}),
    disabledCommands: opts.tls ? ['AUTH'] : ['AUTH', 'STARTTLS'],
    authOptional: true,
    size: maxSize,
    maxClients: opts.maxClients ?? 100,
    socketTimeout: opts.socketTimeoutMs ?? 60_000,
    closeTimeout: opts.closeTimeoutMs ?? 10_000,
    disableReverseLookup: true,
    // Every reply carries an enhanced code (see keepOwnEnhancedCodes).
    hideENHANCEDSTATUSCODES: false,
    logger: false,

    onConnect: (session: SMTPServerSession, cb: (err?: Error | null) => void) => guard.onConnect(session, cb),
    onClose: (session: SMTPServerSession) => {
      refusedRcpts.delete(session.id);
      guard.onClose(session);
    },

    onMailFrom(address: SMTPServerAddress, session: SMTPServerSession, cb) {
      try {
        checkMailParams(address, { auth: false, dsn: false });
        checkUtf8Address(address, address, 'MAIL FROM');
      } catch (err) {
        return cb(refuse(session, toSluiceError(err)));
      }
      cb();
    },

    onRcptTo(address: SMTPServerAddress, session: SMTPServerSession, cb) {
      if (session.envelope.rcptTo.length >= maxRcpts) {
        return cb(refuse(session, new SluiceError('SLUICE_INGRESS_TOO_MANY_RECIPIENTS', `Too many recipients, at most ${maxRcpts} per message`)));
      }
      try {
        checkRcptParams(address, { dsn: false });
        checkUtf8Address(address, session.envelope.mailFrom, 'RCPT TO');
      } catch (err) {
        return cb(refuse(session, toSluiceError(err)));
      }
      if (!feedbackRecipient(address.address, rules)) {
        const refused = (refusedRcpts.get(session.id) ?? 0) + 1;
        refusedRcpts.set(session.id, refused);
        // 421 closes the connection (smtp-server): the next guesses need a new one.
        if (refused >= MAX_REFUSED_RCPTS) return cb(refuse(session, new SluiceError('SLUICE_FEEDBACK_GUESSING')));
        return cb(refuse(session, new SluiceError('SLUICE_FEEDBACK_NO_SUCH_RECIPIENT')));
      }
      cb();
    },

    onData(stream: SMTPServerDataStream, session: SMTPServerSession, cb) {
      const answer = callOnce<SmtpReplyError>(cb);
      readBounded(stream, maxSize, buffered).then(({ data, size, overBudget }) => {
        if (overBudget) {
          log.warn({ sessionId: session.id, buffered: buffered.used, limit: buffered.limit }, 'feedback mail refused for now: too much mail in memory');
          return answer(refuse(session, new SluiceError('SLUICE_FEEDBACK_BUSY')));
        }
        if (!data) {
          return answer(refuse(session, new SluiceError('SLUICE_FEEDBACK_TOO_LARGE', `Message exceeds the size limit of ${maxSize} bytes`)));
        }
        const receivedAt = now();
        const rcpts = session.envelope.rcptTo.map((r) => r.address);
        const mailFrom = session.envelope.mailFrom ? session.envelope.mailFrom.address : '';
        void (async () => {
          let mail: FeedbackMail;
          try {
            // While Redis is down the mail cannot be stored: a 4xx at once, not a wait for the outage.
            assertRedisReady(deps.redis);
            await reserveFeedbackStorage(deps.redis, deps.keys, size, receivedAt, { retentionMs: opts.rawRetentionMs, cap: maxStored });
            mail = await withFreeId(
              () => newId(receivedAt),
              async (id) => ((await storeFeedback(deps.redis, deps.keys, { id, raw: data, rcpts, mailFrom, receivedAt }, opts.rawRetentionMs)) ? { id, raw: data, rcpts, receivedAt } : null),
            );
          } catch (err) {
            // Not stored, so not accepted: a 4xx makes the sender keep it and retry.
            buffered.give(size);
            const e = toSluiceError(err);
            if (e.code === 'SLUICE_FEEDBACK_STORAGE_FULL') log.warn({ sessionId: session.id, bytes: size, limit: maxStored }, 'feedback mail refused for now: feedback.maxStored is reached');
            else log.error({ err: e.cause ?? e, sessionId: session.id }, 'feedback mail could not be stored');
            return answer(smtpReply(e.code === 'SLUICE_INTERNAL' ? new SluiceError('SLUICE_REDIS_UNAVAILABLE', undefined, { cause: err }) : e, session.id));
          }
          let postmaster = false;
          for (const rcpt of mail.rcpts) {
            const kind = feedbackRecipient(rcpt, rules)?.kind;
            if (kind) deps.metrics?.received?.(kind);
            postmaster ||= kind === 'postmaster';
          }
          log.info({ sessionId: session.id, feedbackId: mail.id, bytes: size }, 'feedback mail stored');
          // Written by a person for a person (a provider about a block, a recipient about a mail), and
          // rare: a warning, so that someone reads it.
          if (postmaster) log.warn({ sessionId: session.id, feedbackId: mail.id, bytes: size }, 'mail to postmaster stored: read it with `sluice bounce show ID`');
          processLater(mail, size);
          answer(null, `2.0.0 Ok: stored as ${mail.id}`);
        })();
      }, (err: Error) => answer(smtpReply(err, session.id)));
    },
  });

  guard.attach(server, log, 'feedback mx connection error');

  const port = await listenOn(server.server, opts.port, opts.host, 'feedback');
  log.info({ host: opts.host, port, bounceDomains: rules.bounceDomains, starttls: opts.tls !== undefined }, 'feedback mx listening');

  const idle = async () => {
    while (inFlight.size > 0) await Promise.allSettled([...inFlight]);
  };
  let closing: Promise<void> | undefined;
  return {
    port,
    updateTls(next) {
      server.updateSecureContext({ key: next.key, cert: next.cert });
    },
    setBounceDomains(domains) {
      rules.bounceDomains = normalised(domains);
    },
    bufferedBytes: () => buffered.used,
    idle,
    close() {
      closed = true;
      clearInterval(pendingTimer);
      closing ??= new Promise<void>((resolve) => server.close(() => resolve())).then(idle);
      return closing;
    },
  };
}
