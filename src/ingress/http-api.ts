import { isAscii, isUtf8 } from 'node:buffer';
import { createServer, STATUS_CODES, type IncomingMessage, type ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import type { Logger } from 'pino';
import { z } from 'zod';
import { SluiceError, toSluiceError, type FieldError } from '../core/errors.js';
import { decodeUtf8, hasLoneSurrogate } from '../core/utf8.js';
import { isId, newId } from '../core/ids.js';
import { assertRedisReady } from '../redis/client.js';
import type { Account } from '../accounts/registry.js';
import { ByteBudget } from '../core/read-bounded.js';
import { AuthThrottle, LimitError, type AuthThrottleOptions } from '../accounts/limits.js';
import { messageStatus } from './message-status.js';
import { cancelMessage } from './message-cancel.js';
import { acceptMessage, checkOpen, rejectionCounted, type AcceptDeps, type Submission } from './accept.js';
import { persistedWhole, refsTtlMs } from './persist.js';
import { deleteMessage, getMessage } from '../store/messages.js';
import { fieldErrors, messageSchema, toSpecSubmission, validateMessage } from './http-schema.js';
import type { Config } from '../config/schema.js';
import { IdempotencyStore, isValidIdempotencyKey, RequestHash, type StoredAnswer } from './idempotency.js';
import { importSuppressionsRoute, matchSuppressionRoute, MAX_SUPPRESSION_BODY_BYTES, SUPPRESSION_IMPORT_PATH } from './suppression-routes.js';
import { webhookRoute } from './webhook-routes.js';
import { campaignRoute } from './campaign-routes.js';
import { listRoute } from './list-routes.js';
import { matchAdminRoute } from './admin-routes.js';
import { matchPrivacyRoute } from './privacy-routes.js';
import { createDomainRoutes } from './domain-routes.js';
import { createDnsLookup, publicSourceAddresses } from '../accounts/domain-check.js';
import { JSON_TYPE, methodNotAllowed, splitUrl, type RouteAnswer } from './http-route.js';
import { addressRef, appendAudit } from '../store/audit.js';
import { OperatorRegistry } from '../accounts/operators.js';
import { apiKeyAccount, operatorKeyId } from '../accounts/secrets.js';
import { extractLinks } from '../render/links.js';
import { PreparePool, type PreparePoolOptions } from '../render/prepare-pool.js';
import { encodeSpecRecord } from '../render/spec-record.js';
import { listenOn } from '../core/listen.js';
import { limitHttpConnections, serviceUnavailable } from '../core/http-connection-limit.js';
import { lastForwardedHop } from '../core/forwarded.js';

/**
 * The HTTP API, on plain node:http (this is a handful of routes; a framework would add more code
 * than it saves):
 *
 *   POST /v1/messages         one message                 → 202 { id, recipients }
 *   POST /v1/messages/batch   { messages: [...] }         → 202 { results: [...], accepted, rejected }
 *   GET  /v1/messages/:id     delivery state per recipient → 200, or 404 (unknown or another account's)
 *
 * `Authorization: Bearer sk_…` on every route. Errors are `{ code, message, errors: [{ path, message }] }`.
 * A 202 is sent only once the message is persisted and queued.
 */
export interface HttpApiDeps extends AcceptDeps {
  readonly logger: Logger;
  /** 32-byte key sealing webhook secrets at rest (webhooks.secretKeyFile); none = stored plain. */
  readonly webhookSecretKey?: Buffer | undefined;
  /** A campaign became due in this process (the campaign enqueuer may look at once). */
  readonly onCampaignDue?: (() => void) | undefined;
  /** Operator keys (config operators): admin rights; none = no key has them. */
  readonly operators?: OperatorRegistry | undefined;
  /** The configuration in force, when a reload may change it (app/reload.ts: shaping rules); default `config`. */
  readonly configNow?: (() => Config) | undefined;
}

export interface HttpApiOptions {
  /** Default: config.ingress.http.host / port (0 = ephemeral). */
  readonly host?: string;
  readonly port?: number;
  readonly authThrottle?: Partial<AuthThrottleOptions>;
  /** Messages of one batch processed at once: enough to fill Redis pipelines, bounded per request. */
  readonly batchConcurrency?: number;
  /** How long close() lets requests in progress finish. Default 10 s. */
  readonly closeTimeoutMs?: number;
  /** The campaign preparation worker's bounds (render/prepare-pool.ts); its defaults otherwise. */
  readonly prepare?: Omit<PreparePoolOptions, 'onFailed'>;
}

export interface HttpApi {
  readonly port: number;
  close(): Promise<void>;
}

// A bearer key and an Idempotency-Key are short; 16 KiB bounds per-connection header memory while
// leaving room for proxies' additions. Node answers 431 beyond it.
const MAX_HEADER_BYTES = 16 * 1024;
const STATUS_PATH = /^\/v1\/messages\/([^/]+)$/;

type Route = 'send' | 'batch' | 'status' | 'suppressions' | 'sender' | 'webhooks' | 'campaigns' | 'lists' | 'admin' | 'recipients' | 'domains' | 'other';

const ROUTE_PREFIXES: readonly [string, Route][] = [
  ['/v1/suppressions', 'suppressions'], ['/v1/sender', 'sender'], ['/v1/webhooks', 'webhooks'], ['/v1/campaigns', 'campaigns'],
  ['/v1/lists', 'lists'], ['/v1/recipients', 'recipients'], ['/v1/domains', 'domains'],
  ['/v1/audit', 'admin'], ['/v1/queue', 'admin'], ['/v1/holds', 'admin'], ['/v1/accounts', 'admin'],
];

/**
 * The route a path names, for a request refused before its route answered (401, 404, 413, 503…): its
 * `sluice_http_requests_total` line is the route's, so a refusal rate per route shows.
 */
function routeOfPath(path: string): Route {
  if (path === '/v1/messages') return 'send';
  if (path === '/v1/messages/batch') return 'batch';
  if (path.startsWith('/v1/messages/')) return 'status';
  for (const [prefix, r] of ROUTE_PREFIXES) if (path === prefix || path.startsWith(`${prefix}/`)) return r;
  return 'other';
}

/** The changes a closed account may still make besides DELETE: stopping its campaigns. */
const STOPS_SENDING = /^\/v1\/campaigns\/[^/]+\/(?:pause|cancel)$/;

/** Whether a request adds or changes an account's data (refused once the account is closed). */
function addsData(req: IncomingMessage): boolean {
  const method = req.method ?? 'GET';
  return method !== 'GET' && method !== 'HEAD' && method !== 'DELETE' && !STOPS_SENDING.test(splitUrl(req.url ?? '/').path);
}

/** The caller of a request, once its key is verified. */
type Principal =
  | { readonly kind: 'account'; readonly account: Account; readonly keyId: string; readonly ip: string }
  | { readonly kind: 'operator'; readonly id: string; readonly keyId: string; readonly ip: string };

/**
 * The identity a key claims (the id in sk_<account>_… / op_<operator>_…), throttled as the "user":
 * known before any scrypt runs. Anything else (a malformed key) is throttled by IP only.
 */
function claimedIdentity(key: string): string | undefined {
  const op = operatorKeyId(key);
  if (op !== undefined) return `op:${op}`;
  const account = apiKeyAccount(key);
  return account === undefined ? undefined : `api:${account}`;
}

class Answer {
  constructor(
    readonly status: number,
    readonly body: unknown,
    readonly headers: Record<string, string> = {},
  ) {}
}

function errorAnswer(err: SluiceError): Answer {
  const headers: Record<string, string> = {};
  if (err instanceof LimitError) headers['retry-after'] = String(Math.max(1, Math.ceil(err.retryAfterMs / 1000)));
  if (err.code === 'SLUICE_AUTH_REQUIRED' || err.code === 'SLUICE_AUTH_FAILED') headers['www-authenticate'] = 'Bearer';
  if (err.code === 'SLUICE_AUTH_THROTTLED') headers['retry-after'] = '60';
  if (err.code === 'SLUICE_REDIS_UNAVAILABLE') headers['retry-after'] = '5';
  if (err.code === 'SLUICE_INGRESS_BUSY') headers['retry-after'] = '5';
  const body = err.code === 'SLUICE_INTERNAL' ? { code: err.code, message: 'Internal error', errors: [] } : err.toJSON();
  return new Answer(err.http, body, headers);
}

/**
 * The request body, at most `max` bytes. With a `budget`, the bytes are taken from it as they arrive
 * (503 SLUICE_INGRESS_BUSY when it runs out, what was taken given back); the body's bytes stay taken
 * when it resolves, and the caller gives them back once it lets go of the body. `hash` is fed each
 * chunk as it is taken.
 */
function readBody(req: IncomingMessage, max: number, budget?: ByteBudget, hash?: RequestHash): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    let done = false;
    const fail = (err: Error) => {
      if (done) return;
      done = true;
      chunks.length = 0;
      budget?.give(size);
      reject(err);
    };
    req.on('data', (chunk: Buffer) => {
      if (done) return;
      if (size + chunk.length > max) {
        // Stop buffering: the caller answers 413 and closes the connection.
        req.pause();
        fail(new SluiceError('SLUICE_INGRESS_TOO_LARGE', `The request body exceeds ${max} bytes`));
        return;
      }
      if (budget && !budget.take(chunk.length)) {
        req.pause();
        fail(new SluiceError('SLUICE_INGRESS_BUSY'));
        return;
      }
      size += chunk.length;
      chunks.push(chunk);
      hash?.update(chunk);
    });
    req.on('end', () => {
      if (done) return;
      done = true;
      resolve(Buffer.concat(chunks, size));
    });
    req.on('error', fail);
    req.on('close', () => fail(new SluiceError('SLUICE_INGRESS_BAD_REQUEST', 'the request was aborted')));
  });
}

/** Whether a string (or key) anywhere in a parsed JSON value holds a lone surrogate; without recursion. */
function holdsLoneSurrogate(value: unknown): boolean {
  const stack = [value];
  while (stack.length > 0) {
    const v = stack.pop();
    if (typeof v === 'string') {
      if (hasLoneSurrogate(v)) return true;
    } else if (typeof v === 'object' && v !== null) {
      for (const [k, x] of Object.entries(v)) {
        if (hasLoneSurrogate(k)) return true;
        stack.push(x);
      }
    }
  }
  return false;
}

const QUOTE = 0x22;
const BACKSLASH = 0x5c;

/**
 * What is wrong with the names of a JSON text that JSON.parse took, or undefined. A name given twice
 * in one object: JSON.parse keeps the last (RFC 8259 §4: names SHOULD be unique, parsers differ on
 * which counts): {"to": [...], ..., "to": [...]} from a client that builds its JSON by hand sent to
 * the second list only, in silence, as a misspelt field would without the schema's strictness. And
 * the name __proto__, which an object built from the parsed one drops. Strings are skipped
 * with indexOf, so a body of megabytes of base64 or html costs little over JSON.parse's own pass.
 */
function nameProblem(text: string): string | undefined {
  // One entry per open container: the names of an object so far, null for an array.
  const open: (Set<string> | null)[] = [];
  let nameNext = false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c === QUOTE) {
      // The string ends at the next quote not escaped (preceded by an even number of backslashes).
      let end = text.indexOf('"', i + 1);
      for (;;) {
        let escapes = 0;
        while (text.charCodeAt(end - 1 - escapes) === BACKSLASH) escapes++;
        if (escapes % 2 === 0) break;
        end = text.indexOf('"', end + 1);
      }
      if (nameNext) {
        const raw = text.slice(i + 1, end);
        const name = raw.includes('\\') ? (JSON.parse(text.slice(i, end + 1)) as string) : raw;
        const names = open[open.length - 1] as Set<string>;
        if (names.has(name)) return `the name ${JSON.stringify(name.slice(0, 100))} is given twice in one object`;
        // A plain object's key: assigning it sets the prototype instead, so in metadata or headers it
        // would vanish in silence (or worse, read as inherited fields).
        if (name === '__proto__') return 'the name "__proto__" is not accepted';
        names.add(name);
        nameNext = false;
      }
      i = end;
    } else if (c === 0x7b) {
      open.push(new Set());
      nameNext = true;
    } else if (c === 0x5b) open.push(null);
    else if (c === 0x7d || c === 0x5d) open.pop();
    else if (c === 0x2c) nameNext = open[open.length - 1] instanceof Set;
  }
  return undefined;
}

function parseJson(body: Buffer): unknown {
  try {
    // JSON bodies are nearly always ASCII (non-ASCII is usually \u-escaped): then a one-byte string
    // is a plain copy, cheaper than UTF-8 decoding megabytes of batch body.
    let text: string;
    if (isAscii(body)) text = body.toString('latin1');
    // RFC 8259 §8.1: JSON text is UTF-8. Decoding invalid bytes would turn them silently into U+FFFD
    // and accept a message that says something else than what was sent.
    else if (!isUtf8(body)) throw new Error('the body is not valid UTF-8');
    else text = decodeUtf8(body);
    const value: unknown = JSON.parse(text);
    const problem = nameProblem(text);
    if (problem !== undefined) throw new Error(problem);
    // The same for an escaped lone surrogate ("\ud800", RFC 8259 §8.2): stored as UTF-8 it becomes
    // U+FFFD. Only a body that escapes a surrogate can hold one, so the bytes are searched first.
    if ((body.includes('\\ud') || body.includes('\\uD')) && holdsLoneSurrogate(value)) {
      throw new Error('a string holds a lone surrogate (\\uD800-\\uDFFF without its pair), which is not Unicode text');
    }
    return value;
  } catch (err) {
    throw new SluiceError('SLUICE_INGRESS_BAD_JSON', `The request body is not valid JSON: ${(err as Error).message}`);
  }
}

export async function startHttpApi(deps: HttpApiDeps, opts: HttpApiOptions = {}): Promise<HttpApi> {
  const cfg = deps.config.ingress.http;
  const buffered = deps.buffered ?? new ByteBudget(deps.config.ingress.maxBuffered);
  const log = deps.logger; // app/ binds { role, interface }
  // API keys cannot be guessed: an account's failures delay wrong keys, never refuse its right one.
  const throttle = new AuthThrottle(deps.redis, deps.keys, { delayAfter: deps.config.ingress.smtp.authFailuresBeforeDelay, lockUsers: false, ...opts.authThrottle });
  const idempotency = new IdempotencyStore(deps.redis, deps.keys, deps.config.ingress.idempotencyTtl);
  const schema = messageSchema();
  const batchSchema = z.object({ messages: z.array(z.unknown()).min(1).max(cfg.maxBatch) }).strict();
  const batchConcurrency = opts.batchConcurrency ?? 32;
  const hostname = deps.config.instance.hostname;
  const acceptDeps: AcceptDeps = { ...deps, logger: log };
  // Mail is tracked when tokens can be signed (tracking.keys, as app/start.ts builds the codec) and
  // the account's mode (as the registry has it: a reload may change it) is not 'off'.
  const tokensConfigured = deps.config.tracking.keys.length > 0;
  // Campaign templates are validated and compiled in a thread of its own (started at the first
  // POST /v1/campaigns), closed by close() once the requests that use it are answered.
  const preparation = new PreparePool({ ...opts.prepare, onFailed: (err) => log.error({ err }, 'campaign preparation failed in its worker') });

  const principals = new WeakMap<IncomingMessage, Principal>();

  /**
   * The error a request is answered with; a failure of the server's own (Redis refused or could not
   * be reached, a bug) is logged first, since its answer tells the client no more than its code.
   */
  const failure = (err: unknown): SluiceError => {
    const e = toSluiceError(err);
    if (e.code === 'SLUICE_INTERNAL' || e.code === 'SLUICE_REDIS_UNAVAILABLE') log.error({ err: e.cause ?? e }, 'http request failed');
    return e;
  };

  /**
   * The client's address: the socket's, or behind a proxy (ingress.http.trustProxy) the last
   * X-Forwarded-For hop, so that failed logins are throttled per client, not per proxy.
   */
  const clientAddress = (req: IncomingMessage): string => {
    const socket = req.socket.remoteAddress ?? 'unknown';
    if (!cfg.trustProxy) return socket;
    const xff = req.headers['x-forwarded-for'];
    return lastForwardedHop(xff === undefined ? [] : Array.isArray(xff) ? xff : [xff]) ?? socket;
  };

  /**
   * Who sends the request: an account (its own key) or an operator. Failures are throttled per
   * client IP and per claimed identity (the account or operator id a key names), in Redis, so a
   * guesser is slowed across every ingress process whichever address it comes from.
   */
  async function identify(req: IncomingMessage): Promise<Principal> {
    const known = principals.get(req);
    if (known) return known;
    const header = req.headers.authorization;
    if (!header) throw new SluiceError('SLUICE_AUTH_REQUIRED', 'Authentication required: send Authorization: Bearer <api key>');
    const ip = clientAddress(req);
    const key = /^Bearer +([\x21-\x7e]{1,200})$/i.exec(header)?.[1];
    const user = key === undefined ? undefined : claimedIdentity(key);
    const before = await throttle.check(ip, user);
    let principal: Principal | null = null;
    if (key !== undefined && OperatorRegistry.isOperatorKey(key)) {
      const op = deps.operators ? await deps.operators.authenticate(key) : null;
      if (op) principal = { kind: 'operator', id: op.id, keyId: op.keyId, ip };
    } else if (key !== undefined) {
      const found = await deps.registry.authenticateApiKeyWithId(key);
      if (found) principal = { kind: 'account', account: found.account, keyId: found.keyId, ip };
    }
    if (principal) {
      if (user !== undefined && before.userFailures > 0) await throttle.succeed(user);
      principals.set(req, principal);
      return principal;
    }
    deps.metrics?.authFailures.inc({ interface: 'http' });
    const verdict = await throttle.fail(ip, user);
    if (verdict.delayMs > 0) await new Promise((r) => setTimeout(r, verdict.delayMs));
    throw new SluiceError('SLUICE_AUTH_FAILED', 'Invalid API key');
  }

  /**
   * The account the request acts on: the caller's own, or — for an operator — the one named by
   * ?account=ID. An account key has no way to name another account.
   */
  async function authenticate(req: IncomingMessage): Promise<Account> {
    const p = await identify(req);
    let account: Account | undefined;
    if (p.kind === 'account') account = p.account;
    else {
      const id = namedAccount(req);
      if (id === undefined) throw new SluiceError('SLUICE_ADMIN_ACCOUNT_REQUIRED');
      account = deps.registry.get(id);
      if (!account) throw new SluiceError('SLUICE_ACCOUNT_UNKNOWN', `No account ${id} in the configuration`);
    }
    // A closed account's data is deleted after its window, and what it wrote after the deletion (its
    // record stays while the config names it) would be kept for ever: it may read, export, delete,
    // erase and stop its campaigns, but not add or change data.
    if (addsData(req)) await checkOpen(deps, account, 'cannot send, add or change data');
    return account;
  }

  /**
   * The optional JSON body of a small request (a suppression, a resume, a hold): read whole, bounded
   * by MAX_SUPPRESSION_BODY_BYTES; undefined when there is none.
   */
  async function smallJsonBody(req: IncomingMessage): Promise<unknown> {
    if (req.headers['transfer-encoding'] === undefined && !(Number(req.headers['content-length'] ?? 0) > 0)) return undefined;
    if (!JSON_TYPE.test(req.headers['content-type'] ?? '')) throw new SluiceError('SLUICE_INGRESS_UNSUPPORTED_MEDIA');
    const body = await readBody(req, MAX_SUPPRESSION_BODY_BYTES);
    return body.length > 0 ? parseJson(body) : undefined;
  }

  /** The account an operator names with ?account=ID; undefined when none is named. */
  function namedAccount(req: IncomingMessage): string | undefined {
    return splitUrl(req.url ?? '/').query.get('account') || undefined;
  }

  /**
   * The request hooks an account-scoped route module takes. authenticate() remembers the account it
   * resolved (the caller's, or the one an operator named), for the audit entry of the route's change.
   */
  // GET /v1/domains: DNS as receivers see it, through delivery's resolvers, results kept a minute.
  const domainRoutes = createDomainRoutes();
  const domainDns = createDnsLookup(deps.config.delivery.dns.servers, deps.config.delivery.dns.timeout);

  function scoped(req: IncomingMessage) {
    let accountId = '';
    return {
      authenticate: async (): Promise<Account> => {
        const account = await authenticate(req);
        accountId = account.id;
        return account;
      },
      readJson: async (max: number): Promise<unknown> => parseJson(await readBody(req, max)),
      accountId: (): string => accountId,
    };
  }

  /** A route module's answer, once the change it made (if any) is in the audit log. */
  async function routed(req: IncomingMessage, name: Route, account: string, r: RouteAnswer): Promise<{ route: Route; answer: Answer }> {
    if (r.audit) await audit(req, r.audit.action, account, r.audit.target);
    return { route: name, answer: new Answer(r.status, r.body) };
  }

  /** Who made a request, as the audit log names them: account:<id> or operator:<id>. */
  function actorOf(p: Principal): string {
    return p.kind === 'account' ? `account:${p.account.id}` : `operator:${p.id}`;
  }

  /** Writes the audit entry of a change the request made. The change is done: a failure is logged, not answered. */
  async function audit(req: IncomingMessage, action: string, account: string, target?: string): Promise<void> {
    const p = principals.get(req);
    if (!p) return;
    const actor = actorOf(p);
    await appendAudit(deps.redis, deps.keys, { actor, key: p.keyId, action, account, target, from: p.ip }, deps.config.retention.auditMaxLen)
      .catch((err: unknown) => log.error({ err, action, account }, 'could not write the audit entry'));
  }

  /**
   * One message of a request, validated and encoded for storage with its id, synchronously: its
   * html and text strings are let go in the turn that parsed them. Kept across the awaits of
   * persisting (tens to hundreds of ms under load, a batch's last message waiting for its first),
   * they outlived the young generation and were copied into the old one: at 10 KB each, most of
   * the ingress thread's GC work in bench/e2e.ts.
   */
  function prepareMessage(account: Account, input: unknown, now: number): Submission {
    const parsed = validateMessage(schema, input);
    if (!parsed.ok) throw new SluiceError('SLUICE_INGRESS_BAD_REQUEST', 'The message is invalid', { errors: parsed.errors });
    const sub = toSpecSubmission(parsed.message, hostname);
    const tracked = tokensConfigured && account.tracking.mode !== 'off';
    // Links are found once here, not per recipient: the worker rewrites link i to the click URL of
    // entry i of this table. Copied out of the html, whose substrings they are (see ownString).
    const links = tracked ? extractLinks(parsed.message.html ?? '').map(ownString) : undefined;
    const id = newId(now);
    return {
      account,
      source: 'http',
      kind: 'spec',
      from: sub.from,
      recipients: sub.recipients,
      recipientPaths: sub.recipientPaths,
      id,
      acceptedAt: now,
      // Stored as bytes (a Buffer argument is written to Redis as it is), the html raw after a JSON
      // header (render/spec-record.ts): not escaped here, not unescaped in the worker.
      body: encodeSpecRecord(links === undefined ? sub.spec(id) : { ...sub.spec(id), tracking: { links: links.length } }),
      links,
      tags: parsed.message.tags,
      metadata: parsed.message.metadata,
    };
  }

  /**
   * An Idempotency-Key's earlier run of this request, which stopped before it answered (its process
   * died): the ids it gave its messages, and the ones persisted by then, each answered for as it was
   * stored (the message id and its recipients) instead of being stored and sent a second time.
   */
  interface Resume {
    readonly earlier: readonly (string | null)[] | null;
    /** Notes this run's ids before any is persisted (IdempotencyStore.recordIds). */
    readonly record: (ids: readonly (string | null)[]) => Promise<void>;
  }

  /** The earlier run's message at position i, when it was persisted (for this account), as its answer said. */
  async function storedEarlier(account: Account, resume: Resume | undefined, i: number): Promise<{ id: string; recipients: string[] } | null> {
    const id = resume?.earlier?.[i];
    if (id === undefined || id === null) return null;
    const stored = await getMessage(deps.redis, deps.keys, id);
    if (!stored || stored.meta.account !== account.id) return null;
    // Stored but not queued whole (its process died in between, on a cluster or for a message of
    // thousands of recipients): not accepted. Its record goes, and the message is accepted anew.
    if (!(await persistedWhole(deps.redis, deps.keys, id, stored.meta.rcpts.length))) {
      await deleteMessage(deps.redis, deps.keys, id);
      return null;
    }
    return { id, recipients: stored.meta.rcpts.map((r) => r.address) };
  }

  async function acceptOne(account: Account, input: unknown, resume: Resume | undefined): Promise<Answer> {
    const sub = prepareMessage(account, input, (deps.now ?? Date.now)());
    const before = await storedEarlier(account, resume, 0);
    if (before) return new Answer(202, before);
    await resume?.record([sub.id ?? null]);
    const r = await acceptMessage(acceptDeps, sub);
    return new Answer(202, { id: r.id, recipients: r.recipients });
  }

  async function acceptBatch(account: Account, input: unknown, resume: Resume | undefined): Promise<Answer> {
    const parsed = batchSchema.safeParse(input);
    if (!parsed.success) throw new SluiceError('SLUICE_INGRESS_BAD_REQUEST', 'The batch is invalid', { errors: fieldErrors(parsed.error) });
    const messages = parsed.data.messages;
    const count = messages.length;
    const results: ({ id: string; recipients: string[] } | { error: { code: string; message: string; errors: readonly FieldError[] } })[] = new Array(count);
    // Redis refusing writes fails every message of the batch alike: one line for them all, after it.
    let unavailable: { count: number; err: unknown } | undefined;
    const failed = (i: number, err: unknown): void => {
      const e = toSluiceError(err);
      countRejected(e);
      if (e.code === 'SLUICE_INTERNAL') log.error({ err: e.cause ?? e }, 'batch message failed');
      if (e.code === 'SLUICE_REDIS_UNAVAILABLE') {
        if (unavailable) unavailable.count++;
        else unavailable = { count: 1, err: e.cause ?? e };
      }
      results[i] = { error: errorAnswer(e).body as { code: string; message: string; errors: readonly FieldError[] } };
    };
    // Every message is prepared (and its strings let go) before the first is persisted.
    const now = (deps.now ?? Date.now)();
    const ready = messages.map((message, i): Submission | undefined => {
      try {
        return prepareMessage(account, message, now);
      } catch (err) {
        failed(i, err);
        return undefined;
      }
    });
    // The parsed body still holds every message (zod's copy and the JSON's own): let them go too.
    messages.length = 0;
    const raw = (input as { messages?: unknown }).messages;
    if (Array.isArray(raw)) raw.length = 0;
    let accepted = 0;
    if (resume) {
      // Those an earlier run of this request persisted are answered as stored, not sent again.
      if (resume.earlier) {
        for (let i = 0; i < count; i++) {
          const before = ready[i] === undefined ? null : await storedEarlier(account, resume, i);
          if (!before) continue;
          results[i] = before;
          ready[i] = undefined;
          accepted++;
        }
      }
      await resume.record(
        ready.map((sub, i) => {
          const done = results[i];
          return sub?.id ?? (done !== undefined && 'id' in done ? done.id : null);
        }),
      );
    }
    let next = 0;
    const worker = async () => {
      while (next < ready.length) {
        const i = next++;
        const sub = ready[i];
        ready[i] = undefined;
        if (sub === undefined) continue;
        try {
          const r = await acceptMessage(acceptDeps, sub);
          results[i] = { id: r.id, recipients: r.recipients };
          accepted++;
        } catch (err) {
          failed(i, err);
        }
      }
    };
    await Promise.all(Array.from({ length: Math.min(batchConcurrency, count) }, worker));
    const down = unavailable as { count: number; err: unknown } | undefined;
    if (down) log.error({ err: down.err, messages: down.count, batch: count }, 'batch messages failed: Redis unavailable');
    return new Answer(202, { results, accepted, rejected: count - accepted });
  }

  const suppressed = (reason: string, n: number): void => deps.metrics?.suppressionsAdded.inc({ list: 'account', reason }, n);

  /** A submission refused (invalid JSON or fields, …) that acceptMessage did not count itself. */
  const countRejected = (e: SluiceError): void => {
    if (!rejectionCounted.has(e)) deps.metrics?.messagesRejected.inc({ source: 'http', code: e.code });
  };

  /** POST routes: auth, body, idempotency, then the route's work. */
  async function post(req: IncomingMessage, route: 'send' | 'batch'): Promise<Answer> {
    const declared = Number(req.headers['content-length'] ?? 0);
    if (declared > cfg.maxBodySize) throw new SluiceError('SLUICE_INGRESS_TOO_LARGE', `The request body exceeds ${cfg.maxBodySize} bytes`);
    const account = await authenticate(req);
    if (!JSON_TYPE.test(req.headers['content-type'] ?? '')) throw new SluiceError('SLUICE_INGRESS_UNSUPPORTED_MEDIA');
    const idemHeader = req.headers['idempotency-key'];
    const idemKey = Array.isArray(idemHeader) ? idemHeader[0] : idemHeader;
    if (idemKey !== undefined && !isValidIdempotencyKey(idemKey)) {
      throw new SluiceError('SLUICE_INGRESS_BAD_REQUEST', 'Invalid Idempotency-Key', { errors: [{ path: 'Idempotency-Key', message: 'must be 1–255 printable ASCII characters' }] });
    }
    // With a key, the request is hashed while its body is read (see RequestHash).
    const idem = idemKey === undefined ? undefined : { key: idemKey, hash: new RequestHash(route) };
    // The body's bytes stay taken from the ingress budget until the request is answered.
    const body = await readBody(req, cfg.maxBodySize, buffered, idem?.hash);
    try {
      return await accept(route, account, body, idem && { key: idem.key, hash: idem.hash.digest() });
    } finally {
      buffered.give(body.length);
    }
  }

  async function accept(route: 'send' | 'batch', account: Account, body: Buffer, idem: { key: string; hash: string } | undefined): Promise<Answer> {
    const run = async (resume?: Resume): Promise<Answer> => {
      try {
        const input = parseJson(body);
        if (route === 'batch') return await acceptBatch(account, input, resume);
        return await acceptOne(account, input, resume);
      } catch (err) {
        const e = failure(err);
        countRejected(e);
        return errorAnswer(e);
      }
    };
    if (idem === undefined) return run();
    const { key: idemKey, hash } = idem;
    const begun = await idempotency.begin(account.id, idemKey, hash);
    if (begun.kind === 'replay') return replay(begun.answer);
    let answer: Answer;
    try {
      const earlier = await idempotency.earlierIds(account.id, idemKey, hash).catch(() => null);
      answer = await run({ earlier, record: (ids) => idempotency.recordIds(account.id, idemKey, hash, ids) });
    } catch (err) {
      // run() answers every error itself; should it throw all the same, the key is not held on.
      await begun.lease.end();
      throw err;
    }
    const stored: StoredAnswer = { status: answer.status, body: JSON.stringify(answer.body) };
    await idempotency.finish(account.id, idemKey, hash, stored, begun.lease).catch((err: unknown) => log.warn({ err }, 'could not store the idempotent answer'));
    return answer;
  }

  function replay(a: StoredAnswer): Answer {
    let body: unknown;
    try {
      body = JSON.parse(a.body);
    } catch {
      body = {};
    }
    return new Answer(a.status, body, { 'idempotent-replayed': 'true' });
  }

  /** The route's answer; null when the route (a streamed export) has answered itself. */
  async function route(req: IncomingMessage, res: ServerResponse): Promise<{ route: Route; answer: Answer | null }> {
    const { path } = splitUrl(req.url ?? '/');
    const method = req.method ?? 'GET';
    // Every route needs Redis (authentication's throttle first of all): refuse at once while it is down.
    assertRedisReady(deps.redis);
    const only = (allowed: string): void => {
      if (method !== allowed) throw methodNotAllowed(allowed);
    };
    if (path === '/v1/messages') {
      only('POST');
      return { route: 'send', answer: await post(req, 'send') };
    }
    if (path === '/v1/messages/batch') {
      only('POST');
      return { route: 'batch', answer: await post(req, 'batch') };
    }
    const m = STATUS_PATH.exec(path);
    if (m && method === 'DELETE') {
      const account = await authenticate(req);
      const id = m[1] as string;
      const r = isId(id) ? await cancelMessage(deps.redis, deps.keys, id, account.id, { now: (deps.now ?? Date.now)(), recordTtlMs: deps.config.retention.records, refsTtlMs: refsTtlMs(deps.config), eventsMaxLen: deps.config.retention.eventsMaxLen }) : null;
      if (!r) throw new SluiceError('SLUICE_INGRESS_NOT_FOUND', 'No such message');
      // A cancelled event each (sluice_events_total counts every event written).
      if (r.cancelled > 0) deps.metrics?.eventsAppended.inc({ type: 'cancelled' }, r.cancelled);
      await audit(req, 'message.cancel', account.id, id);
      return { route: 'status', answer: new Answer(200, { cancelled: r.cancelled, sending: r.sending, ...r.status }) };
    }
    if (m) {
      if (method !== 'GET') throw methodNotAllowed('GET, DELETE');
      const account = await authenticate(req);
      const id = m[1] as string;
      const status = isId(id) ? await messageStatus(deps.redis, deps.keys, id, account.id) : null;
      if (!status) throw new SluiceError('SLUICE_INGRESS_NOT_FOUND', 'No such message');
      return { route: 'status', answer: new Answer(200, status) };
    }
    const admin = matchAdminRoute(method, req.url ?? '/');
    if (admin) {
      const p = await identify(req);
      if (p.kind !== 'operator') throw new SluiceError('SLUICE_ADMIN_REQUIRED');
      const input = admin.hasBody ? await smallJsonBody(req) : undefined;
      const r = await admin.run({ redis: deps.redis, keys: deps.keys, registry: deps.registry, closeAfterMs: deps.config.retention.closedAccounts, now: deps.now ?? Date.now, shaping: (deps.configNow?.() ?? deps.config).shaping, shards: deps.config.redis.scheduleShards, delivery: deps.config.delivery }, p.id, input);
      if (r.audit) {
        deps.closedAccounts?.forget();
        await audit(req, r.audit.action, r.audit.account, r.audit.target);
      }
      return { route: 'admin', answer: new Answer(r.status, r.body) };
    }
    const privacy = matchPrivacyRoute(method, path);
    if (privacy) {
      // An account's key: its own account. An operator's: ?account=ID, else every account.
      const p = await identify(req);
      const all = p.kind === 'operator' && namedAccount(req) === undefined;
      const accounts = all ? deps.registry.list().map((a) => a.id) : [(await authenticate(req)).id];
      const r = await privacy.run({ redis: deps.redis, keys: deps.keys, eventsMaxLen: deps.config.retention.eventsMaxLen, recordTtlMs: deps.config.retention.records, refsTtlMs: refsTtlMs(deps.config) }, { accounts, all });
      await audit(req, privacy.action, all ? '' : (accounts[0] as string), await addressRef(deps.redis, deps.keys, privacy.address));
      return { route: 'recipients', answer: new Answer(r.status, r.body) };
    }
    if (path === SUPPRESSION_IMPORT_PATH) {
      if (method !== 'POST') throw methodNotAllowed('POST');
      const account = await authenticate(req);
      const by = actorOf(await identify(req));
      const r = await importSuppressionsRoute(req, { redis: deps.redis, keys: deps.keys, eventsMaxLen: deps.config.retention.eventsMaxLen, now: deps.now, maxBytes: deps.config.lists.maxImportBytes, by, suppressed }, account.id);
      return routed(req, 'suppressions', account.id, r);
    }
    const own = matchSuppressionRoute(method, req.url ?? '/');
    if (own) {
      const account = await authenticate(req);
      const input = own.hasBody ? await smallJsonBody(req) : undefined;
      const who = await identify(req);
      const operator = who.kind === 'operator';
      const actor = actorOf(who);
      const r = await own.run({ redis: deps.redis, keys: deps.keys, eventsMaxLen: deps.config.retention.eventsMaxLen, now: deps.now, operator, actor, suppressed }, account.id, input);
      return routed(req, own.name, account.id, r);
    }
    const ctx = scoped(req);
    const domain = await domainRoutes.route(method, path, {
      authenticate: ctx.authenticate, readDkimKeys: (domains) => deps.registry.readDkimKeys(domains),
      dns: domainDns, bounceDomain: deps.config.delivery.bounceDomain, returnPathOf: (d) => deps.registry.returnPathOf(d),
      // The shaping rules' source addresses as reloaded (delivery.bindAddress(6) needs a restart).
      addresses: publicSourceAddresses(deps.config.delivery, (deps.configNow?.() ?? deps.config).shaping.rules), now: deps.now,
    });
    if (domain) return routed(req, 'domains', ctx.accountId(), domain);
    const webhook = await webhookRoute(method, path, req.headers, {
      redis: deps.redis, keys: deps.keys, authenticate: ctx.authenticate, readJson: ctx.readJson,
      ...(deps.webhookSecretKey ? { secretKey: deps.webhookSecretKey } : {}),
      allowPrivateTargets: deps.config.webhooks.allowPrivateTargets,
    });
    if (webhook) return routed(req, 'webhooks', ctx.accountId(), webhook);
    const campaign = await campaignRoute(method, req.url ?? '/', req.headers, {
      redis: deps.redis, keys: deps.keys, shards: deps.config.redis.scheduleShards, authenticate: ctx.authenticate, readJson: ctx.readJson,
      ownsDomain: (account, domain) => deps.registry.ownsDomain(account, domain),
      unsubscribeLinks: tokensConfigured,
      prepare: (input) => preparation.prepare(input),
      onDue: deps.onCampaignDue, now: deps.now,
    });
    if (campaign) return routed(req, 'campaigns', ctx.accountId(), campaign);
    const list = await listRoute(method, req.url ?? '/', req, res, {
      redis: deps.redis, keys: deps.keys, authenticate: ctx.authenticate, readJson: ctx.readJson,
      limits: { maxBytes: deps.config.lists.maxImportBytes, maxRows: deps.config.lists.maxImportRows },
      copiesTtlMs: refsTtlMs(deps.config),
      now: deps.now,
    });
    if (list === 'sent') return { route: 'lists', answer: null };
    if (list) return routed(req, 'lists', ctx.accountId(), list);
    throw new SluiceError('SLUICE_INGRESS_NOT_FOUND');
  }

  function send(req: IncomingMessage, res: ServerResponse, routeName: Route, answer: Answer, closeAfter: boolean): void {
    // 204 carries no body (RFC 9110 §15.3.5): a Content-Length there breaks strict clients.
    const text = answer.status === 204 ? '' : JSON.stringify(answer.body);
    res.statusCode = answer.status;
    res.setHeader('content-type', 'application/json; charset=utf-8');
    res.setHeader('cache-control', 'no-store');
    if (answer.status !== 204) res.setHeader('content-length', Buffer.byteLength(text));
    for (const [k, v] of Object.entries(answer.headers)) res.setHeader(k, v);
    if (closeAfter) {
      // The rest of the body is not read: close the connection once the answer is out, rather than
      // receive (possibly megabytes of) data only to throw it away.
      res.setHeader('connection', 'close');
      res.on('finish', () => setImmediate(() => req.socket.destroy()));
    }
    deps.metrics?.httpRequests.inc({ route: routeName, status: `${Math.floor(answer.status / 100)}xx` });
    res.end(text);
  }

  let isRefused: ((socket: Socket) => boolean) | null = null;
  // Node looks for requests past their timeouts every connectionsCheckingInterval (30 s by default):
  // a stalled request of a 3 s requestTimeout waited up to 30 s for its 408.
  const checkEvery = Math.max(250, Math.min(Math.floor(cfg.requestTimeout / 4), 30_000));
  const server = createServer({ maxHeaderSize: MAX_HEADER_BYTES, requestTimeout: cfg.requestTimeout, headersTimeout: Math.min(cfg.requestTimeout, 30_000), connectionsCheckingInterval: checkEvery }, (req, res) => {
    if (isRefused !== null && isRefused(req.socket)) return void res.destroy();
    let routeName: Route = 'other';
    route(req, res)
      .then(({ route: r, answer }) => {
        routeName = r;
        if (answer) send(req, res, r, answer, !req.complete);
        else deps.metrics?.httpRequests.inc({ route: r, status: `${Math.floor(res.statusCode / 100)}xx` });
      })
      .catch((err: unknown) => {
        const e = failure(err);
        routeName = routeOfPath(splitUrl(req.url ?? '/').path);
        // A submission refused before it was read as one (credentials, size, media type, Redis down,
        // busy): counted as SMTP counts its refusals. Those refused while accepted answer, and count, in accept().
        if ((routeName === 'send' || routeName === 'batch') && req.method === 'POST') countRejected(e);
        const answer = errorAnswer(e);
        const allow = (err as { allow?: string }).allow;
        if (allow) answer.headers['allow'] = allow;
        if (res.headersSent) {
          res.destroy();
          return;
        }
        send(req, res, routeName, answer, !req.complete);
      });
  });
  isRefused = limitHttpConnections(
    server,
    // Behind a proxy every connection has the proxy's address: only the total applies (as for tracking).
    cfg.trustProxy ? { maxConnections: cfg.maxClients } : { maxConnections: cfg.maxClients, maxConnectionsPerClient: cfg.maxClientsPerIp, clientLimitExempt: cfg.clientLimitExempt },
    serviceUnavailable(JSON.stringify(new SluiceError('SLUICE_TOO_MANY_CONNECTIONS').toJSON()), 'application/json; charset=utf-8'),
    (reason) => deps.metrics?.httpConnectionsRefused.inc({ reason }),
  );
  // Malformed requests, oversized headers and timeouts never reach the handler: Node's parser refuses
  // them. They are answered here in the API's own form ({ code, message, errors }) when the socket
  // can still take it, then the connection is closed; never an exception.
  server.on('clientError', (err: NodeJS.ErrnoException, socket: Duplex) => {
    if (err.code === 'ECONNRESET' || !socket.writable) {
      socket.destroy();
      return;
    }
    const status = err.code === 'HPE_HEADER_OVERFLOW' ? 431 : err.code === 'ERR_HTTP_REQUEST_TIMEOUT' ? 408 : 400;
    const body = JSON.stringify({ code: 'SLUICE_INGRESS_BAD_REQUEST', message: `${STATUS_CODES[status]}: the request could not be read`, errors: [] });
    deps.metrics?.httpRequests.inc({ route: 'other', status: '4xx' });
    socket.end(`HTTP/1.1 ${status} ${STATUS_CODES[status]}\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`);
  });

  const host = opts.host ?? cfg.host;
  const port = opts.port ?? cfg.port;
  const bound = await listenOn(server, port, host, 'ingress.http');
  log.info({ port: bound }, 'http api listening');

  let closing: Promise<void> | undefined;
  return {
    port: bound,
    close() {
      closing ??= new Promise<void>((resolve) => {
        const force = setTimeout(() => server.closeAllConnections(), opts.closeTimeoutMs ?? 10_000);
        force.unref();
        server.close(() => {
          clearTimeout(force);
          resolve();
        });
        server.closeIdleConnections();
        // The preparation thread after the connections: a request still running (even one whose
        // connection the timeout cut) finishes its preparation instead of failing on a closed pool.
      }).then(() => preparation.close());
      return closing;
    },
  };
}

/**
 * A string of its own. A regex capture or slice of a long string is a view into it in V8 (a sliced
 * string), which keeps the whole parent alive: a link kept while the message is persisted would
 * keep the message's html with it.
 */
function ownString(s: string): string {
  return Buffer.from(s, 'utf8').toString('utf8');
}
