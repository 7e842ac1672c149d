import { createServer, STATUS_CODES, type IncomingMessage, type ServerResponse } from 'node:http';
import type { Duplex } from 'node:stream';
import type { Socket } from 'node:net';
import { ReplyError } from 'ioredis';
import { lastForwardedHop } from '../core/forwarded.js';
import { performance } from 'node:perf_hooks';
import type { TokenCodec, TokenKind, TokenPayload } from '../core/tokens.js';
import { classifyClick, type TrackingRequest } from './classify.js';
import { modeOf, type TrackingDeps, type TrackingSettings } from './deps.js';
import { isOneClickBody } from './one-click.js';
import { badRequestPage, invalidLinkPage, NOT_FOUND_TEXT, unsubscribedPage, unsubscribeFormPage } from './pages.js';
import { startRecorder } from './recorder.js';
import { CLICK_HOLD_MS } from './event-batch.js';
import { CLICKS_PER_RECIPIENT_MINUTE, OPENS_PER_RECIPIENT_MINUTE, RepeatLimit } from './repeat-limit.js';
import { mark, storedIp } from './record.js';
import { unsubscribe, unsubscribeTarget } from './unsubscribe.js';
import { listenOn } from '../core/listen.js';
import { limitHttpConnections, serviceUnavailable, type HttpConnectionLimits } from '../core/http-connection-limit.js';

/**
 * The tracking server: the public surface every recipient touches, on plain node:http.
 *
 *   GET  /o/<token>.gif  the pixel; answered at once, the open recorded after the answer
 *   GET  /c/<token>      302 to link <n> of the token's message (one Redis round trip), click recorded after
 *   GET  /u/<token>      confirmation page with a button; never unsubscribes
 *   POST /u/<token>      RFC 8058 one-click (or the page's form): suppresses at once, then answers 200
 *   GET  /healthz /readyz
 *
 * Tokens are verified without Redis; a bad token writes nothing anywhere. Events recorded after the
 * answer are bounded in number (maxPendingRecords), so a slow Redis sheds events instead of memory;
 * past half the bound a pixel's answer waits (PIXEL_HOLD_MS), which slows keep-alive clients first.
 * Clicks and unsubscribes waiting on Redis are bounded too (maxRedisWork): beyond, 503 at once.
 */
export interface TrackingServerOptions extends HttpConnectionLimits {
  readonly host: string;
  readonly port: number;
  /**
   * Where recipients reach this server, e.g. https://t.example.com (the page's form posts there). A
   * path in it (https://example.com/t) is served with and without it: a proxy may strip it or not.
   */
  readonly publicBaseUrl: string;
  /** Take the client address from the last X-Forwarded-For hop (only behind a proxy you run). */
  readonly trustProxy?: boolean;
  /**
   * Events written after their answer that may be in flight at once; beyond, new ones are dropped.
   * Past half of it, pixel answers are held back (see pixelHoldMs).
   */
  readonly maxPendingRecords?: number;
  /**
   * While more than half of maxPendingRecords wait to be written, a pixel's answer waits until they
   * fall under half, or this long (default PIXEL_HOLD_MS; 0 = never held).
   */
  readonly pixelHoldMs?: number;
  /**
   * Clicks and unsubscribes whose Redis work may be under way at once (default MAX_REDIS_WORK); beyond,
   * a request that needs Redis is answered 503 at once and sends nothing.
   */
  readonly maxRedisWork?: number;
  /** Opens of one recipient recorded per minute (default OPENS_PER_RECIPIENT_MINUTE, repeat-limit.ts); beyond, 'throttled'. */
  readonly opensPerRecipientMinute?: number;
  /** Clicks of one recipient recorded per minute (default CLICKS_PER_RECIPIENT_MINUTE, repeat-limit.ts); beyond, 'throttled'. */
  readonly clicksPerRecipientMinute?: number;
  /** How long the recorder thread gets to write what it holds when the server closes (default 10 s, recorder.ts). */
  readonly recorderCloseGraceMs?: number;
  /** Nice value of the recorder thread (default RECORDER_NICE; see recorder-worker.ts). */
  readonly recorderNice?: number;
  /** How long a person's first click on a link is held before it is written (default CLICK_HOLD_MS, event-batch.ts). */
  readonly clickHoldMs?: number;
  readonly maxHeaderBytes?: number;
  readonly maxBodyBytes?: number;
  readonly headersTimeoutMs?: number;
  readonly requestTimeoutMs?: number;
}

export interface TrackingServer {
  readonly port: number;
  /**
   * Puts a reloaded configuration's per-account settings (mode, IP anonymisation) in force: for
   * requests answered from now on, here and in the recorder thread.
   */
  updateSettings(settings: TrackingSettings): void;
  /** Reloaded token keys (tracking.keys): tokens are verified with them from the next request. */
  updateCodec(codec: TokenCodec): void;
  /** Resolves when every event written after its answer has been written (or has failed). */
  idle(): Promise<void>;
  close(): Promise<void>;
}

/** The 43-byte transparent 1×1 GIF89a, made once. */
export const PIXEL_GIF = Buffer.from('R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAICRAEAOw==', 'base64');

/** The recorder thread's default nice value (config tracking.recorderNice). */
export const RECORDER_NICE = 10;
/**
 * Clicks and unsubscribes waiting on Redis at once. A request answered 503 at its deadline
 * (REDIS_DEADLINE_MS) still holds its command, request and socket until Redis answers, and node:http
 * starts every request a client pipelines on one connection without waiting for the answers before
 * it: with Redis stalled, one client grew the process by ~25 MB/s, to a heap out of memory. At ~9 KB
 * each, this bound keeps it under ~10 MB; 1,000 clicks in flight is ~100× what a Redis that answers
 * in a millisecond has under the load bench:tracking puts on it.
 */
const MAX_REDIS_WORK = 1_000;
/** 10,000 events × ~1 KB of closures and buffers: ~10 MB at most waiting on a slow Redis. */
const MAX_PENDING_RECORDS = 10_000;
/**
 * How long a pixel's answer may be held while the recorder is behind. Image proxies (Gmail's, Apple's)
 * and browsers fetch over keep-alive connections, one request at a time on each: an answer held is a
 * request not yet sent, so the recorder thread gets the CPU and Redis the time to catch up, where
 * answering at full speed would have the bound reached and opens dropped (bench/tracking.ts, in a
 * minute when the host had ~half its speed: 19 % of the opens). A quarter of a second is nothing to
 * an image in a mail, and bounds what a stuck Redis costs every client.
 */
const PIXEL_HOLD_MS = 250;
/** Tracking URLs are under 200 bytes and browsers send 1–2 KB of headers; 8 KiB leaves room for cookies of a shared domain. */
const MAX_HEADER_BYTES = 8 * 1024;
/** A one-click body is 26 bytes; a multipart one a few hundred. */
const MAX_BODY_BYTES = 16 * 1024;
/** All headers within 5 s and the whole request within 10 s: a slow-loris client holds a socket no longer. */
const HEADERS_TIMEOUT_MS = 5_000;
const REQUEST_TIMEOUT_MS = 10_000;
/** How often Node checks those timeouts (its default, 30 s, would let a slow client linger 6× longer). */
const TIMEOUT_CHECK_INTERVAL_MS = 1_000;
/** close(): requests in flight get this long before their connections are cut. */
const CLOSE_GRACE_MS = 5_000;

/** What a client over its connection cap gets before the socket closes: a clear answer, not a reset. */
const TOO_MANY_CONNECTIONS = serviceUnavailable('Too many connections from your address\n');

/** An open's request result, counted when its batch verifies the token. */
const COUNTED_LATER = '';
/** The same, its answer held back: its duration is observed when it is sent. */
const HELD = 'held';

const TOKEN_RE = /^[A-Za-z0-9_-]{1,256}$/;
const TEXT = 'text/plain; charset=utf-8';
const HTML = 'text/html; charset=utf-8';

type Endpoint = 'open' | 'click' | 'unsubscribe' | 'health' | 'other';

export async function startTrackingServer(given: TrackingDeps, opts: TrackingServerOptions): Promise<TrackingServer> {
  // A copy of its own, whose settings updateSettings() replaces: every reader takes deps.settings
  // when it answers a request.
  const deps: { -readonly [K in keyof TrackingDeps]: TrackingDeps[K] } = { ...given };
  const log = deps.logger.child({ role: 'tracking' });
  const now = deps.now ?? Date.now;
  const maxPending = opts.maxPendingRecords ?? MAX_PENDING_RECORDS;
  const maxBody = opts.maxBodyBytes ?? MAX_BODY_BYTES;
  const publicOrigin = new URL(opts.publicBaseUrl).origin;
  // The path of publicBaseUrl ('' at its root), which every tracking URL starts with: a proxy that
  // passes it on as is reaches the same endpoints as one that strips it.
  const basePath = new URL(opts.publicBaseUrl).pathname.replace(/\/+$/, '');
  const csp = `default-src 'none'; style-src 'unsafe-inline'; form-action 'self' ${publicOrigin}; frame-ancestors 'none'`;
  const pixelHeaders = [
    'X-Content-Type-Options', 'nosniff', 'Content-Security-Policy', csp,
    'Content-Type', 'image/gif', 'Content-Length', String(PIXEL_GIF.length), 'Cache-Control', 'no-store, max-age=0',
  ];
  let closing = false;
  /** Whether a request came on a connection over its client's cap (closing: nothing on it is served). */
  let isRefused: ((socket: Socket) => boolean) | null = null;

  // Opens and clicks are written after their answer, in batches, by the recorder thread
  // (recorder.ts): bounded, and awaited by idle() and close().
  const recorder = startRecorder(
    {
      connect: deps.connect, prefix: deps.keys.prefix, codec: deps.codec.options, settings: deps.settings, eventsMaxLen: deps.eventsMaxLen, retentionMs: deps.retentionMs,
      nice: opts.recorderNice ?? RECORDER_NICE,
      clickHoldMs: opts.clickHoldMs ?? CLICK_HOLD_MS,
      opensPerRecipientMinute: opts.opensPerRecipientMinute ?? OPENS_PER_RECIPIENT_MINUTE,
    },
    { maxPending, metrics: deps.metrics, logger: log, onFlushed: () => releaseAnswers(false), ...(opts.recorderCloseGraceMs !== undefined ? { closeGraceMs: opts.recorderCloseGraceMs } : {}) },
  );
  const idle = (): Promise<void> => recorder.idle();

  // ── pixel answers held while the recorder is behind (PIXEL_HOLD_MS) ─────────────────────────────
  const holdAbove = Math.max(1, Math.floor(maxPending / 2));
  const pixelHoldMs = opts.pixelHoldMs ?? PIXEL_HOLD_MS;
  /** Oldest first; `started` is the request's performance.now(). */
  let held: { res: ServerResponse; started: number }[] = [];
  let holdTimer: NodeJS.Timeout | null = null;

  const answerPixel = (res: ServerResponse): void => {
    res.writeHead(200, pixelHeaders);
    res.end(res.req.method === 'HEAD' ? undefined : PIXEL_GIF);
  };

  /** Sends the held answers: all of them once the recorder is under the mark (or `all`), else those held long enough. */
  const releaseAnswers = (all: boolean): void => {
    if (held.length === 0) return;
    const t = performance.now();
    let n = held.length;
    if (!all && recorder.pending >= holdAbove) {
      n = 0;
      while (n < held.length && t - (held[n] as { started: number }).started >= pixelHoldMs) n++;
      if (n === 0) return;
    }
    const out = n === held.length ? held : held.slice(0, n);
    held = n === held.length ? [] : held.slice(n);
    for (const h of out) {
      // A client that went away meanwhile gets nothing; its open is recorded all the same.
      if (!h.res.destroyed) answerPixel(h.res);
      deps.metrics?.duration.observe({ endpoint: 'open' }, (t - h.started) / 1000);
    }
    if (held.length === 0 && holdTimer) {
      clearInterval(holdTimer);
      holdTimer = null;
    }
  };

  // Read from the raw header list: req.headers would build an object of every header, per pixel.
  const clientOf = (req: IncomingMessage): TrackingRequest => {
    let ip = req.socket.remoteAddress ?? '';
    let userAgent = '';
    const forwarded: string[] = [];
    const raw = req.rawHeaders;
    for (let i = 0; i + 1 < raw.length; i += 2) {
      const name = raw[i] as string;
      if (name.length === 10 && userAgent === '' && name.toLowerCase() === 'user-agent') userAgent = raw[i + 1] as string;
      else if (opts.trustProxy && name.length === 15 && name.toLowerCase() === 'x-forwarded-for') forwarded.push(raw[i + 1] as string);
    }
    if (opts.trustProxy) ip = lastForwardedHop(forwarded) ?? ip;
    return { method: req.method ?? 'GET', userAgent, ip };
  };

  /**
   * A click or an unsubscribe needs Redis: while the client is not connected it is answered 503 at
   * once, and after REDIS_DEADLINE_MS without an answer (the request handler's catch); while
   * maxRedisWork of them wait on it, 503 at once too ('busy').
   */
  const maxRedisWork = opts.maxRedisWork ?? MAX_REDIS_WORK;
  const clickRepeats = new RepeatLimit(opts.clicksPerRecipientMinute ?? CLICKS_PER_RECIPIENT_MINUTE);
  /** Clicks and unsubscribes whose Redis work is under way, answered or not (see MAX_REDIS_WORK). */
  let redisWork = 0;
  const withRedis = (res: ServerResponse, work: () => Promise<string>): Promise<string> => {
    if (deps.redis.status !== 'ready') return Promise.resolve(unavailable(res, 'unavailable'));
    if (redisWork >= maxRedisWork) return Promise.resolve(unavailable(res, 'busy'));
    redisWork++;
    return withDeadline(work().finally(() => redisWork--));
  };

  // The codec refuses anything longer than a token or not base64url before decoding it.
  const verify = (token: string, kind: TokenKind): TokenPayload | null => deps.codec.verify(token, now(), kind);

  // ── endpoints ─────────────────────────────────────────────────────────────────────────────────

  /**
   * The pixel never fails: a broken image in someone's mail client is worse than a lost open. The
   * answer needs nothing from the token, so all of its work (HMAC, decoding, classification, marks)
   * happens in the batch; the request result ('ok' or 'invalid') is counted there too.
   */
  const open = (req: IncomingMessage, res: ServerResponse, token: string, started: number): string => {
    // Over the mark, the answer of a request that is recorded waits (PIXEL_HOLD_MS); else it goes first.
    const wellFormed = TOKEN_RE.test(token);
    const hold = wellFormed && pixelHoldMs > 0 && !closing && recorder.pending >= holdAbove;
    if (!hold) answerPixel(res);
    if (!wellFormed) return 'invalid';
    const client = clientOf(req);
    recorder.open({ token, at: now(), method: client.method, userAgent: client.userAgent, ip: client.ip });
    if (!hold) return COUNTED_LATER;
    held.push({ res, started });
    deps.metrics?.pixelsHeld?.inc();
    holdTimer ??= setInterval(() => releaseAnswers(false), Math.max(5, Math.floor(pixelHoldMs / 5)));
    return HELD;
  };

  /** The URL of a click token's link in its message's link table (null: none). */
  const linkOf = (p: TokenPayload): Promise<string | null> => deps.redis.lindex(deps.keys.links(p.msgId), p.link ?? 0);

  /** A click of a verified token (route verified it before asking for Redis: a bad link is a 404 whatever Redis's state). */
  const click = async (req: IncomingMessage, res: ServerResponse, p: TokenPayload): Promise<string> => {
    const mode = modeOf(deps.settings, p.account);
    const client = clientOf(req);
    const at = now();
    // One copy's link clicked over and over (a script): still redirected, from the link table, and
    // recorded nowhere past the recipient's limit (repeat-limit.ts).
    if (clickRepeats.over(`${p.msgId}:${p.idx}`, at)) {
      const target = redirectTarget((await linkOf(p)) ?? '');
      if (target === null) return send(res, 404, TEXT, NOT_FOUND_TEXT, 'not_found');
      redirect(res, target);
      return 'throttled';
    }
    const ctx = { nowS: Math.floor(at / 1000), issuedAt: p.issuedAt, burst: 0 };
    const before = classifyClick(client, ctx);
    const m = await mark(deps, p, mode, at, before !== null).catch(async (err: unknown) => {
      // Redis answered but refused the marks (maxmemory, MISCONF, a read-only replica): the link
      // table can still be read, and a working link matters more than its count. Unreachable or
      // silent, it is the 503 of the request handler.
      if (!(err instanceof ReplyError)) throw err;
      log.warn({ err }, 'click not recorded: Redis refused the write');
      return { url: await linkOf(p), unrecorded: true } as const;
    });
    // Only an http(s) URL of the message's own table is a target; anything else is not followed.
    const target = m.url === null ? null : redirectTarget(m.url);
    if (target === null) return res.headersSent ? 'not_found' : send(res, 404, TEXT, NOT_FOUND_TEXT, 'not_found');
    // Answered 503 already when Redis took longer than its deadline (withDeadline): the marks and
    // counts were written all the same, so the event that stands for them is written too (else the
    // counters held a first click no event or webhook ever showed).
    if (!res.headersSent) redirect(res, target);
    if ('unrecorded' in m) return 'unrecorded';
    // An erased recipient's old link still leads where it led, but nothing about them is recorded.
    if (mode !== 'off' && !m.erased) {
      const machine = before ?? classifyClick(client, { ...ctx, burst: m.burst, burstLimit: m.burstLimit });
      const burst = machine === 'burst' && m.burstSince > 0 ? { burstSince: m.burstSince } : {};
      recorder.event(p, { now: at, mode, first: m.first, machine, userAgent: client.userAgent, ip: storedIp(deps.settings, p.account, client.ip), ...burst });
    }
    return 'ok';
  };

  /**
   * A POST's body is read before Redis is asked anything (and so before the Redis deadline starts):
   * a client sending it slowly is the request timeout's business (408), not a Redis outage (503).
   */
  const unsubscribePage = async (req: IncomingMessage, res: ServerResponse, token: string): Promise<string> => {
    const p = verify(token, 'u');
    if (!p) return send(res, 404, HTML, invalidLinkPage(), 'invalid');
    const body = req.method === 'POST' ? await readBody(req, maxBody) : null;
    if (body === 'too-large') {
      res.setHeader('Connection', 'close');
      return send(res, 413, TEXT, 'Request body too large\n', 'too_large');
    }
    return withRedis(res, async () => {
      const target = await unsubscribeTarget(deps, p);
      if (!target) return send(res, 404, HTML, invalidLinkPage(), 'invalid');
      if (body === null) return send(res, 200, HTML, unsubscribeFormPage(target.address, target.from), 'ok');
      if (!isOneClickBody(String(req.headers['content-type'] ?? ''), body)) return send(res, 400, HTML, badRequestPage(), 'bad_request');
      const client = clientOf(req);
      const r = await unsubscribe(deps, p, { via: 'http', userAgent: client.userAgent, ip: client.ip, target });
      if (!r.ok) return send(res, 404, HTML, invalidLinkPage(), 'invalid');
      return send(res, 200, HTML, unsubscribedPage(r.address, r.from), 'ok');
    });
  };

  // ── routing ───────────────────────────────────────────────────────────────────────────────────

  const route = async (req: IncomingMessage, res: ServerResponse, url: string): Promise<[Endpoint, string]> => {
    const method = req.method ?? 'GET';
    const path = url.split('?')[0] as string;
    const read = method === 'GET' || method === 'HEAD';
    if (path === '/healthz' || path === '/readyz') {
      if (!read) return ['health', notAllowed(res, 'GET, HEAD')];
      const ready = path === '/healthz' ? !closing : !closing && deps.redis.status === 'ready';
      return ['health', send(res, ready ? 200 : 503, TEXT, ready ? 'ok\n' : 'not ready\n', ready ? 'ok' : 'unavailable')];
    }
    const slash = path.indexOf('/', 1);
    const prefix = slash === -1 ? path : path.slice(0, slash);
    const rest = slash === -1 ? '' : path.slice(slash + 1);
    // GET and HEAD of the pixel never get here (see the request handler).
    if (prefix === '/o' && rest.endsWith('.gif')) return ['open', notAllowed(res, 'GET, HEAD')];
    if (prefix === '/c') {
      if (!read) return ['click', notAllowed(res, 'GET, HEAD')];
      const p = verify(rest, 'c');
      if (!p) return ['click', send(res, 404, TEXT, NOT_FOUND_TEXT, 'invalid')];
      return ['click', await withRedis(res, () => click(req, res, p))];
    }
    if (prefix === '/u') {
      if (!read && method !== 'POST') return ['unsubscribe', notAllowed(res, 'GET, HEAD, POST')];
      return ['unsubscribe', await unsubscribePage(req, res, rest)];
    }
    return ['other', send(res, 404, TEXT, NOT_FOUND_TEXT, 'not_found')];
  };

  const server = createServer(
    {
      maxHeaderSize: opts.maxHeaderBytes ?? MAX_HEADER_BYTES,
      headersTimeout: opts.headersTimeoutMs ?? HEADERS_TIMEOUT_MS,
      requestTimeout: opts.requestTimeoutMs ?? REQUEST_TIMEOUT_MS,
      connectionsCheckingInterval: TIMEOUT_CHECK_INTERVAL_MS,
    },
    (req, res) => {
      if (isRefused !== null && isRefused(req.socket)) return void res.destroy();
      const started = performance.now();
      // RFC 9112 §3.2.2: a server MUST accept the absolute form (GET http://host/c/…), as a proxy or
      // some clients send it; its path is what routes. The origin form (the usual) is left as it is.
      const raw = originForm(req.url ?? '/');
      const url = basePath !== '' && raw.startsWith(basePath) && raw.charCodeAt(basePath.length) === 47 ? raw.slice(basePath.length) : raw;
      // The hot path, synchronously and with its headers in one array: no promise, no header map.
      if (url.startsWith('/o/') && (req.method === 'GET' || req.method === 'HEAD')) {
        const path = url.split('?')[0] as string;
        if (path.endsWith('.gif')) {
          const result = open(req, res, path.slice('/o/'.length, -'.gif'.length), started);
          if (result === HELD) return;
          if (result !== COUNTED_LATER) deps.metrics?.requests.inc({ endpoint: 'open', result });
          deps.metrics?.duration.observe({ endpoint: 'open' }, (performance.now() - started) / 1000);
          return;
        }
      }
      res.setHeader('X-Content-Type-Options', 'nosniff');
      res.setHeader('Content-Security-Policy', csp);
      route(req, res, url)
        .then(([endpoint, result]) => {
          if (result !== COUNTED_LATER) deps.metrics?.requests.inc({ endpoint, result });
          deps.metrics?.duration.observe({ endpoint }, (performance.now() - started) / 1000);
        })
        .catch((err: unknown) => {
          // Redis unreachable (a click or an unsubscribe needs it): say so, keep serving.
          log.warn({ err }, 'tracking request failed');
          const endpoint: Endpoint = url.startsWith('/c/') ? 'click' : url.startsWith('/u/') ? 'unsubscribe' : 'other';
          deps.metrics?.requests.inc({ endpoint, result: 'error' });
          deps.metrics?.duration.observe({ endpoint }, (performance.now() - started) / 1000);
          if (!res.headersSent) unavailable(res, 'error');
          else res.destroy();
        });
    },
  );
  // Behind a proxy (trustProxy) every connection has the proxy's address: counting them per client
  // would cap the proxy, not a client. The proxy bounds its clients; only the total applies here.
  const limits = opts.trustProxy ? { maxConnections: opts.maxConnections } : opts;
  isRefused = limitHttpConnections(server, limits, TOO_MANY_CONNECTIONS, (reason) => deps.metrics?.connectionsRefused?.inc({ reason }));
  server.on('clientError', (err: NodeJS.ErrnoException, socket: Duplex) => {
    // Oversized headers, a timed-out request, bytes that are not HTTP: answer if the socket still
    // can, then drop it. Never an exception: a bad client must not touch the process.
    const status = err.code === 'HPE_HEADER_OVERFLOW' ? 431 : err.code === 'ERR_HTTP_REQUEST_TIMEOUT' ? 408 : 400;
    if (err.code !== 'ECONNRESET') deps.metrics?.requests.inc({ endpoint: 'other', result: String(status) });
    // Only while no answer is under way on the connection: behind a pipelined request still being
    // answered (a click waiting for Redis) or answered in part, a raw status line would be read as
    // that request's answer or as part of it. Then the connection is cut, and the client asks again.
    const answering = (socket as Duplex & { _httpMessage?: unknown })._httpMessage;
    if (socket.writable && err.code !== 'ECONNRESET' && !answering) {
      socket.end(`HTTP/1.1 ${status} ${STATUS_CODES[status]}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n`);
    } else socket.destroy();
  });

  const port = await listenOn(server, opts.port, opts.host, 'tracking');
  server.on('error', (err) => log.error({ err }, 'tracking server error'));
  log.info({ port }, 'tracking server listening');

  return {
    port,
    idle,
    updateSettings(settings) {
      deps.settings = settings;
      recorder.updateSettings(settings);
    },
    updateCodec(codec) {
      deps.codec = codec;
      recorder.updateCodec(codec.options);
    },
    async close() {
      closing = true;
      releaseAnswers(true);
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      server.closeIdleConnections();
      const cut = setTimeout(() => server.closeAllConnections(), CLOSE_GRACE_MS);
      cut.unref();
      await closed;
      clearTimeout(cut);
      // The recorder writes what it holds, the clicks held for the burst window too, and stops.
      await recorder.close();
    },
  };
}

/**
 * The Location of a link as the message had it: parsed as a browser parses an href (WHATWG URL), so
 * the redirect leads where a click on the untracked link would have. Links are stored as written in
 * the HTML, where non-ASCII characters, spaces and line breaks (a long URL wrapped by its generator)
 * occur; as a header value they would be sent as Latin-1 bytes or refused, where a browser
 * percent-encodes them, turns the host to punycode and drops the line breaks. Null unless http(s).
 */
export function redirectTarget(url: string): string | null {
  if (!URL.canParse(url)) return null;
  const u = new URL(url);
  return u.protocol === 'http:' || u.protocol === 'https:' ? u.href : null;
}

function redirect(res: ServerResponse, target: string): void {
  res.writeHead(302, { Location: target, 'Cache-Control': 'no-store', 'Referrer-Policy': 'no-referrer', 'Content-Length': 0 });
  res.end();
}

function send(res: ServerResponse, status: number, type: string, body: string, result: string): string {
  const buf = Buffer.from(body, 'utf8');
  res.writeHead(status, { 'Content-Type': type, 'Content-Length': buf.length, 'Cache-Control': 'no-store', 'Referrer-Policy': 'no-referrer' });
  res.end(res.req.method === 'HEAD' ? undefined : buf);
  return result;
}

/**
 * 503 for a request that needs Redis while it is unreachable. The shared client keeps commands
 * queued until it reconnects (nothing accepted is lost that way), which would leave a recipient's
 * browser waiting with no answer and its socket held.
 */
function unavailable(res: ServerResponse, result: string): string {
  res.setHeader('Retry-After', '30');
  return send(res, 503, TEXT, 'Temporarily unavailable, please try again\n', result);
}

/** How long a click or an unsubscribe may wait on Redis before the recipient is answered 503. */
const REDIS_DEADLINE_MS = 5_000;

/** `work`, or a rejection after REDIS_DEADLINE_MS (the request handler answers 503); the work itself goes on. */
function withDeadline<T>(work: Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no answer from Redis within ${REDIS_DEADLINE_MS} ms`)), REDIS_DEADLINE_MS);
  });
  return Promise.race([work, deadline]).finally(() => clearTimeout(timer));
}

function notAllowed(res: ServerResponse, allow: string): string {
  res.setHeader('Allow', allow);
  return send(res, 405, TEXT, 'Method not allowed\n', 'method_not_allowed');
}

/** The request body, up to `limit` bytes (a larger declared or streamed body is refused unread). */
function readBody(req: IncomingMessage, limit: number): Promise<Buffer | 'too-large'> {
  if (Number(req.headers['content-length'] ?? 0) > limit) return Promise.resolve('too-large');
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size > limit) {
        req.removeAllListeners('data');
        req.pause();
        resolve('too-large');
        return;
      }
      chunks.push(chunk);
    });
    req.on('end', () => resolve(Buffer.concat(chunks)));
    req.on('error', reject);
  });
}

/**
 * The origin form (path and query) of a request target: an absolute-form target ("http://host/c/…",
 * RFC 9112 §3.2.2) loses its scheme and authority; anything else is returned as it is.
 */
export function originForm(target: string): string {
  if (target.charCodeAt(0) === 47) return target;
  const scheme = /^https?:\/\//i.exec(target);
  if (!scheme) return target;
  const rest = target.slice(scheme[0].length);
  const cut = rest.search(/[/?]/);
  if (cut === -1) return '/';
  return rest.charCodeAt(cut) === 47 ? rest.slice(cut) : `/${rest.slice(cut)}`;
}
