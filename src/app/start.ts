import type { Logger } from 'pino';
import type { Config, Role } from '../config/schema.js';
import { configWarnings } from '../config/load.js';
import { createLogger } from '../observability/logger.js';
import { createMetrics, type Metrics } from '../observability/metrics.js';
import { startAdminServer, type AdminServer } from '../observability/admin-server.js';
import { createKeys, type Keys } from '../redis/keys.js';
import { embeddedExitReason, openRedis, type RedisHandle } from './redis.js';
import { AccountRegistry, bounceDomainsOf } from '../accounts/registry.js';
import { OperatorRegistry } from '../accounts/operators.js';
import { ClosedAccounts, holdClosed } from '../store/account-state.js';
import { RetentionJob } from '../housekeeping/retention.js';
import { RenderPool } from '../render/pool.js';
import { MxResolver } from '../delivery/mx.js';
import { Dispatcher } from '../delivery/dispatcher.js';
import { checkBindable, bindAddressesOf } from '../delivery/bind.js';
import { Reaper } from '../housekeeping/reaper.js';
import { WebhookDispatcher } from '../housekeeping/webhooks.js';
import { ReputationGuard, reputationOptionsOf } from '../feedback/reputation.js';
import { GLOBAL_LIST, suppressionCount } from '../store/suppression.js';
import { pausedCount } from '../store/reputation.js';
import { startSubmissionServer } from '../ingress/smtp-server.js';
import { startHttpApi } from '../ingress/http-api.js';
import { queueMaxAgeMs, refsTtlMs } from '../ingress/persist.js';
import { createNoticeSender, laterFailureNotices } from './notices.js';
import { loadOrCreateTls } from '../ingress/tls.js';
import { CampaignEnqueuer } from '../campaigns/enqueuer.js';
import { readContacts } from '../store/contacts.js';
import { startInboundMx } from '../feedback/inbound-mx.js';
import { startTrackingServer } from '../tracking/server.js';
import { createTokenCodec, type TokenCodec } from '../core/tokens.js';
import type { WorkerInit } from '../render/protocol.js';
import { SluiceError } from '../core/errors.js';
import { readFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import type { RedisClient } from '../redis/client.js';
import { createEventWriter, type EventType } from '../store/events.js';
import { createMessageSource } from '../store/message-source.js';
import { classifySmtpReply } from '../bounces/index.js';
import { queueTotals } from '../queue/stats.js';
import { ByteBudget } from '../core/read-bounded.js';
import { resolveRecordedShaping } from '../queue/shaping.js';
import { readTokenKeys, workerTracking, type TokenKeys } from './token-keys.js';
import { appendAudit } from '../store/audit.js';
import { trackingSettingsOf, type TrackingSettings } from '../tracking/deps.js';
import { ConfigReloader, type ReloadParts, type ReloadResult } from './reload.js';

/**
 * The composition root: builds Redis, logger, metrics and the render pool, starts the configured
 * roles, and owns the shutdown order (stop accepting → finish or release deliveries → housekeeping →
 * worker threads → admin port → Redis last), bounded in time (stopAll).
 */
export interface RunningSluice {
  /** The configuration in force: the start's, with what the reloads applied (accounts, operators, shaping, transport map, token keys). */
  readonly config: Config;
  readonly logger: Logger;
  readonly metrics: Metrics;
  readonly redis: RedisHandle;
  readonly keys: Keys;
  readonly roles: readonly Role[];
  readonly ports: { admin: number; smtp?: number; http?: number; feedback?: number; tracking?: number };
  readonly dispatcher: Dispatcher | null;
  /**
   * Resolves, with why, if something this process cannot work without fails while it runs: the
   * embedded redis-server exited. The process should then stop (stop()) and exit non-zero, for its
   * supervisor to start it again (a start brings up the server from its AOF); never resolves otherwise.
   */
  readonly failed: Promise<string>;
  /**
   * Applies a reloaded configuration's accounts, operators, shaping rules, transport map and token
   * keys (app/reload.ts; `sluice start` calls it on SIGHUP). Rejects, changing nothing, when the
   * configuration or a key file it names is wrong.
   */
  reload(next: Config | (() => Config), from?: string): Promise<ReloadResult>;
  /** Resolves when everything is stopped or given up on (see stopAll); never waits for Redis without bound. */
  stop(graceMs?: number): Promise<StopResult>;
}

export interface StopResult {
  /** False when the shutdown stopped waiting for some part (Redis unreachable, or the time limit). */
  readonly complete: boolean;
  /** The parts it stopped waiting for: what they had not written to Redis is retried after its lease. */
  readonly unfinished: readonly string[];
}

export interface StartOptions {
  logger?: Logger;
  /** Port of MX hosts, for tests whose MX peers listen on loopback addresses at an ephemeral port (default 25). */
  mxPort?: number;
  /**
   * Gives the start up (a signal to `sluice start` before it runs): an embedded server still loading
   * its data is stopped, and the start rejects with SLUICE_SHUTTING_DOWN after stopping what it started.
   */
  signal?: AbortSignal;
}

/** How often the reaper visits the destinations. */
const REAPER_INTERVAL_MS = 5_000;
/**
 * The shutdown's time limit is the grace period plus this: the servers' own close timeouts (10 s,
 * before the dispatcher's grace begins) and 5 s to write the outcomes of what the grace cut.
 */
const SHUTDOWN_SLACK_MS = 15_000;
/** Redis unreachable this long during a shutdown: nothing more can be written, stop waiting for it. */
const REDIS_LOST_MS = 5_000;
/**
 * The queue gauges' read (every destination) is reused for this many times its duration when it
 * took at least QUEUE_GAUGE_SLOW_MS: with many destinations the gauges then cost at most about a
 * tenth of a core however often they are scraped. A quicker read is made afresh at every scrape.
 */
const QUEUE_GAUGE_REUSE = 10;
const QUEUE_GAUGE_SLOW_MS = 100;
/** A read slowed by a Redis stall is reused no longer than this. */
const QUEUE_GAUGE_REUSE_MAX_MS = 30_000;

/**
 * A secret every process of the deployment must share and nobody needs to configure: made once
 * (SET NX, so concurrent first starts agree) and kept in Redis with the data it protects.
 */
async function sharedSecret(client: RedisClient, key: string): Promise<Buffer> {
  await client.set(key, randomBytes(32).toString('base64'), 'NX');
  const value = await client.get(key);
  if (!value) throw new SluiceError('SLUICE_REDIS_UNAVAILABLE', `cannot read the shared secret ${key}`);
  return Buffer.from(value, 'base64');
}

/** A key file of exactly `bytes` bytes, or undefined when none is configured. */
function readKeyFile(file: string | null, key: string, bytes: number): Buffer | undefined {
  if (file === null) return undefined;
  let data: Buffer;
  try {
    data = readFileSync(file);
  } catch (err) {
    throw new SluiceError('SLUICE_CONFIG_INVALID', `${key}: cannot read ${file}: ${(err as Error).message}`, { cause: err });
  }
  if (data.length !== bytes) throw new SluiceError('SLUICE_CONFIG_INVALID', `${key}: ${file} must hold exactly ${bytes} bytes (it has ${data.length})`);
  return data;
}

/**
 * The key files start-up reads and the settings it needs for its roles, checked without Redis and
 * before anything runs; `sluice config check` runs the same, so a configuration it passes is not
 * refused by `sluice start` for a missing key file or a tracking role without keys.
 */
export function readStartKeys(config: Config): { webhookKey: Buffer | undefined; tokenKeys: TokenKeys | null; codec: TokenCodec | null } {
  const webhookKey = readKeyFile(config.webhooks.secretKeyFile, 'webhooks.secretKeyFile', 32);
  const tokenKeys = readTokenKeys(config);
  if (config.roles.includes('tracking') && !tokenKeys) throw new SluiceError('SLUICE_CONFIG_INVALID', "role 'tracking' needs token keys: set tracking.keys and tracking.signWith");
  // Built here: a key too short or a signWith naming none fails with the others.
  return { webhookKey, tokenKeys, codec: tokenKeys ? createTokenCodec(tokenKeys) : null };
}

export async function startSluice(config: Config, opts: StartOptions = {}): Promise<RunningSluice> {
  const logger = opts.logger ?? createLogger(config.log.level);
  const log = logger.child({ role: 'app' });
  // A gauge read at scrape time that fails keeps its last value: said in the log, or a stale figure looks fresh.
  const metrics = createMetrics({ onSampleError: (gauges, err) => log.warn({ gauges, err }, 'metrics: a gauge read at scrape time failed; it keeps its last value') });
  const roles = config.roles;
  const has = (r: Role) => roles.includes(r);
  /** `listener`: a server taking connections from outside; consecutive ones are stopped together. */
  /** `final`: always waited for, even when the shutdown gave up on the others (it bounds itself). */
  const stoppers: { name: string; stop: (graceMs: number) => Promise<void>; listener?: boolean; final?: boolean }[] = [];
  let stopping = false;

  for (const w of configWarnings(config)) log.warn({ warning: w }, 'configuration: fit for one machine only');
  // Before Redis: a bad key file fails start-up at once, without starting the embedded server.
  const { webhookKey, tokenKeys, codec } = readStartKeys(config);
  // So is a source address this host does not have (delivery.bindAddress, bindAddress6).
  if (has('delivery')) await checkBindable(bindAddressesOf(config));
  const redis = await openRedis(config, log, opts.signal);
  stoppers.push({ name: 'redis', stop: () => redis.close(), final: true });
  let fail!: (reason: string) => void;
  const failed = new Promise<string>((resolve) => (fail = resolve));
  let started = false;
  /** Why the start cannot finish: the embedded server exited before Sluice was ready. */
  let startFailure: string | null = null;
  // Nothing else would notice: the connections retry for ever, every submission is refused 503 and
  // /healthz stays 200, so a supervisor never restarts the process that could bring the server back.
  // Before Sluice is ready the start itself would wait for ever on a Redis command: its connections
  // are closed (their commands fail at once) and the start fails with the reason.
  redis.embedded?.onExit((how) => {
    if (stopping || !redis.embedded) return;
    const reason = embeddedExitReason(redis.embedded, how, started ? 'while Sluice ran' : 'during start-up');
    log.error({ redisPid: redis.embedded.pid, exit: how }, `${reason}: stopping`);
    if (started) return fail(reason);
    startFailure = reason;
    redis.abandon();
  });
  const keys = createKeys(config.redis.prefix);
  log.info({ redis: redis.address, version: redis.version, roles }, 'redis connected');

  /**
   * Stops every part in reverse start order. Commands to Redis never give up by themselves (they wait
   * in the client's queue for a reconnection), so each wait is bounded: the shutdown gives up on the
   * parts still running once Redis has been unreachable for REDIS_LOST_MS, or at the time limit
   * (grace + SHUTDOWN_SLACK_MS). Redis is closed (and the embedded server stopped) in any case, last.
   */
  const stopAll = async (graceMs: number): Promise<StopResult> => {
    stopping = true;
    const limit = Date.now() + graceMs + SHUTDOWN_SLACK_MS;
    let reason: string | null = null;
    let resolveGiveUp!: () => void;
    const givenUp = new Promise<void>((r) => (resolveGiveUp = r));
    let lostSince: number | null = null;
    const watch = setInterval(() => {
      const now = Date.now();
      lostSince = redis.reachable() ? null : (lostSince ?? now);
      if (lostSince !== null && now - lostSince >= REDIS_LOST_MS) reason = `Redis unreachable for ${REDIS_LOST_MS / 1000} s`;
      else if (now >= limit) reason = `time limit reached (shutdownGrace + ${SHUTDOWN_SLACK_MS / 1000} s)`;
      if (reason === null) return;
      clearInterval(watch);
      log.warn({ reason, waitingFor: [...running] }, 'shutdown: not waiting any longer');
      resolveGiveUp();
    }, 100);
    const running = new Set<string>();
    const unfinished: string[] = [];
    // reverse start order: the last started stops first; Redis was pushed first and closes last
    const stopOne = async (s: (typeof stoppers)[number]): Promise<void> => {
      const t0 = Date.now();
      running.add(s.name);
      // A part whose stop failed did not finish what it held either (the tracking recorder's events).
      let failed = false;
      const done = (async () => {
        try {
          await s.stop(graceMs);
        } catch (err) {
          failed = true;
          log.error({ err, part: s.name }, 'error while stopping');
        }
        running.delete(s.name);
        log.debug({ part: s.name, ms: Date.now() - t0 }, 'stopped');
      })();
      if (s.final) return done;
      await Promise.race([done, givenUp]);
      if (running.has(s.name) || failed) unfinished.push(s.name);
    };
    const order = [...stoppers].reverse();
    for (let i = 0; i < order.length; ) {
      // The servers (started last, so stopped first) close together: each lets its sessions finish
      // for up to its own close timeout, and one after another they added up past a container's
      // stop grace period before the dispatcher's own grace had even begun.
      let j = i + 1;
      if (order[i]?.listener) while (j < order.length && order[j]?.listener) j++;
      await Promise.all(order.slice(i, j).map(stopOne));
      i = j;
    }
    clearInterval(watch);
    if (unfinished.length > 0) {
      log.error(
        { reason, unfinished },
        'shutdown incomplete: stopped waiting for these parts; what they had not written to Redis is not there, so mail in flight returns to the queue when its lease expires (a copy a peer already took may be sent again)',
      );
    }
    return { complete: unfinished.length === 0, unfinished };
  };

  try {
    const registry = new AccountRegistry(config.accounts);
    const operators = new OperatorRegistry(config.operators);
    // Closed accounts (`sluice account close`): read once a second per process, so a close stops
    // submissions and holds queued mail everywhere within a second.
    const closedAccounts = new ClosedAccounts(redis.client, keys);
    const verpKey = await sharedSecret(redis.client, keys.verpKey());
    const writer = createEventWriter(redis.client, keys, config.retention.eventsMaxLen, (err, lost) => log.warn({ err, lost }, 'events could not be appended'));
    stoppers.push({ name: 'events', stop: () => writer.flush() });
    const events = (type: EventType, fields: Record<string, string | number>) => {
      metrics.eventsAppended.inc({ type });
      writer.write(type, fields);
    };

    const reputation = new ReputationGuard({
      redis: redis.client, keys, eventsMaxLen: config.retention.eventsMaxLen, logger: logger.child({ role: 'feedback', part: 'reputation' }),
      onPaused: () => metrics.senderPauses.inc(),
      shards: config.redis.scheduleShards,
    }, reputationOptionsOf(config.reputation));
    stoppers.push({ name: 'reputation', stop: () => reputation.close() });
    // Notices to SMTP submitters: the dispatcher's and the feedback role's go through this one.
    const sendNotice = createNoticeSender({ redis: redis.client, keys, config, metrics, closedAccounts });
    let dispatcher: Dispatcher | null = null;
    let enqueuer: CampaignEnqueuer | null = null;
    let pool: RenderPool | null = null;
    let render: ReloadParts['render'] = null;
    let deliveryReload: ReloadParts['delivery'] = null;
    let feedbackReload: ReloadParts['feedback'] = null;
    /** The configuration in force (app/reload.ts), for the parts that read it as they go. */
    let reloader: ConfigReloader | null = null;
    const inForce = (): Config => reloader?.config ?? config;
    if (has('delivery')) {
      const threads = config.delivery.pool.threads;
      const init: WorkerInit = { keys: registry.readDkimKeys(), hostname: config.instance.hostname, tracking: workerTracking(config, tokenKeys, verpKey), nice: config.delivery.pool.nice };
      pool = new RenderPool({
        threads,
        queuePerThread: config.delivery.pool.queuePerThread,
        init,
        onSigned: (algorithm, seconds) => metrics.dkimSignDuration.observe({ algorithm }, seconds),
      });
      const p = pool;
      render = { init, replaceInit: (next) => p.replaceInit(next) };
      stoppers.push({ name: 'render-pool', stop: () => p.close() });
      const d = config.delivery;
      const resolver = new MxResolver({ servers: d.dns.servers, timeoutMs: d.dns.timeout, maxCacheTtlMs: d.dns.maxCacheTtl, negativeCacheTtlMs: d.dns.negativeCacheTtl, transport: d.transport, loopbackMx: d.dns.loopbackMx, privateMx: d.dns.privateMx, maxAddresses: d.maxAddresses, ...(opts.mxPort !== undefined ? { port: opts.mxPort } : {}) });
      // Delivery's own connection: on the shared one its claims, loads and acks queued behind the
      // ingress's message writes (a 100-message batch of 10 KB each is ~1 MB of commands ahead of
      // them), so during a submission burst the render workers sat idle waiting for work.
      const deliveryRedis = redis.duplicate('sluice-delivery');
      dispatcher = new Dispatcher({
        redis: deliveryRedis, keys, config, logger: logger.child({ role: 'delivery' }), metrics, pool, resolver,
        messages: createMessageSource(deliveryRedis, keys, config.retention.records, refsTtlMs(config)),
        events,
        eventStream: { key: keys.events(), maxLen: config.retention.eventsMaxLen, appended: (type) => metrics.eventsAppended.inc({ type }) },
        classify: (code, enhanced, text) => classifySmtpReply(code, enhanced, text),
        reputation: holdClosed(reputation, closedAccounts),
        verpKey,
        contacts: { read: (listId, nos) => readContacts(deliveryRedis, keys, listId, nos) },
        sendNotice,
      });
      const disp = dispatcher;
      deliveryReload = { setAccounts: (a) => disp.setAccounts(a), setShaping: (sh) => disp.setShaping(sh), setTransport: (t) => resolver.setTransport(t) };
      disp.start();
      stoppers.push({ name: 'dispatcher', stop: (graceMs) => disp.stop(graceMs) });
      metrics.sampleOn('poolUtilization', () => metrics.poolUtilization.set(p.utilization()));
      metrics.sampleOn('poolQueue', () => metrics.poolQueue.set(p.queueSize()));
    }

    // Queue depth by provider, read on scrape from every destination (queue/stats.ts queueTotals:
    // the labels are bounded, the reads grow with the destinations). Each destination counts under the
    // rule the dispatcher resolved for it with its MX hosts (recorded in Redis), as its deliveries do.
    // Both gauges are filled by one read per scrape (metrics.ts runs a sampler once for the gauges
    // collected while it runs).
    // A slow read is reused for a while (QUEUE_GAUGE_REUSE).
    let queueReadAt = 0;
    let queueReadMs = 0;
    metrics.sampleOn('queueRecipients', async () => {
      if (stopping) return;
      if (queueReadMs >= QUEUE_GAUGE_SLOW_MS && Date.now() - queueReadAt < Math.min(QUEUE_GAUGE_REUSE * queueReadMs, QUEUE_GAUGE_REUSE_MAX_MS)) return;
      const started = Date.now();
      const shaping = inForce().shaping;
      // A failed read leaves the gauges as they were (metrics.ts); one that outlived the scrape still sets them.
      const totals = await queueTotals(redis.client, keys, config.redis.scheduleShards, (domain, recorded) => resolveRecordedShaping(shaping, domain, recorded).provider);
      metrics.queueRecipients.reset();
      metrics.queueLeases.reset();
      // Every provider a rule names, at 0 when it has nothing queued: a drained queue reads 0, not "no data".
      for (const p of new Set(['default', ...shaping.rules.map((r) => r.name)])) {
        metrics.queueRecipients.set({ provider: p }, 0);
        metrics.queueLeases.set({ provider: p }, 0);
      }
      for (const [p, t] of totals) {
        metrics.queueRecipients.set({ provider: p }, t.recipients);
        metrics.queueLeases.set({ provider: p }, t.leased);
      }
      queueReadAt = Date.now();
      queueReadMs = queueReadAt - started;
    });

    metrics.sampleOn('suppressionListSize', async () => {
      if (stopping) return;
      const [global, ...own] = await Promise.all([GLOBAL_LIST, ...registry.list().map((a) => a.id)].map((a) => suppressionCount(redis.client, keys, a)));
      metrics.suppressionListSize.set({ list: 'global' }, global ?? 0);
      metrics.suppressionListSize.set({ list: 'accounts' }, own.reduce((x, y) => x + y, 0));
    });
    metrics.sampleOn('sendersPaused', async () => {
      if (!stopping) metrics.sendersPaused.set(await pausedCount(redis.client, keys));
    });
    metrics.sampleOn('feedbackPending', async () => {
      if (!stopping) metrics.feedbackPending.set(await redis.client.zcard(keys.feedbackPending()));
    });

    if (has('housekeeping')) {
      const reaper = new Reaper({
        redis: redis.client, keys, shards: config.redis.scheduleShards, intervalMs: REAPER_INTERVAL_MS, logger: logger.child({ role: 'housekeeping' }), metrics,
        counts: { recordsMs: config.retention.records, refsMs: refsTtlMs(config), graceMs: config.delivery.lease },
      });
      reaper.start();
      stoppers.push({ name: 'reaper', stop: () => reaper.stop() });
      const w = config.webhooks;
      const webhooks = new WebhookDispatcher({
        redis: redis.client, keys, logger: logger.child({ role: 'housekeeping', part: 'webhooks' }),
        metrics: { deliveries: metrics.webhookDeliveries, lagSeconds: metrics.webhookLag, eventsLost: metrics.webhookEventsLost, deadLettersDropped: metrics.webhookDeadLettersDropped, outboxFull: metrics.webhookOutboxFull },
        ...(webhookKey ? { secretKey: webhookKey } : {}),
        maxAttemptsWindowMs: w.retryWindow, retryBaseMs: w.retryBase, retryMaxDelayMs: w.retryMaxDelay, requestTimeoutMs: w.timeout,
        maxBatchEvents: w.batchSize, perEndpointInFlight: w.perEndpointInFlight, maxOutbox: w.maxOutbox, maxInFlight: w.maxInFlight, pollIntervalMs: w.pollInterval,
        allowPrivateTargets: w.allowPrivateTargets, dnsServers: config.delivery.dns.servers,
      });
      webhooks.start();
      stoppers.push({ name: 'webhooks', stop: () => webhooks.stop() });
      const r = config.retention;
      const retention = new RetentionJob({
        redis: redis.client, keys, logger: logger.child({ role: 'housekeeping', part: 'retention' }),
        periods: { recordsMs: r.records, eventsMs: r.events, rawBouncesMs: r.rawBounces, auditMs: r.audit },
        intervalMs: r.interval, scanCount: r.scanCount, queueMaxAgeMs: queueMaxAgeMs(config), refsMs: refsTtlMs(config),
        onPurged: (kind, n) => metrics.retentionPurged.inc({ kind }, n),
      });
      retention.start();
      stoppers.push({ name: 'retention', stop: () => retention.stop() });
      const enq = new CampaignEnqueuer({
        redis: redis.client, keys, shards: config.redis.scheduleShards, logger: logger.child({ role: 'housekeeping', part: 'campaigns' }), metrics,
        onQueued: () => dispatcher?.wake(),
      });
      enq.start();
      enqueuer = enq;
      stoppers.push({ name: 'campaign-enqueuer', stop: () => enq.stop() });
    }

    const ports: { admin: number; smtp?: number; http?: number; feedback?: number; tracking?: number } = { admin: 0 };
    /** The STARTTLS servers started below, for a reload that renews their certificates. */
    const tlsServers: ReloadParts['tlsServers'][number][] = [];
    // sluice_buffered_bytes{server}: what each inbound server holds in memory now.
    const bufferedNow: [server: 'ingress' | 'feedback', read: () => number][] = [];
    metrics.sampleOn('bufferedBytes', () => {
      for (const [server, read] of bufferedNow) metrics.bufferedBytes.set({ server }, read());
    });
    if (has('ingress')) {
      const buffered = new ByteBudget(config.ingress.maxBuffered);
      bufferedNow.push(['ingress', () => buffered.used]);
      const deps = {
        redis: redis.client, keys, config, registry, metrics,
        onAccepted: () => dispatcher?.wake(),
        onCampaignDue: () => enqueuer?.wake(),
        confirmDurable: redis.confirmDurable,
        webhookSecretKey: webhookKey,
        closedAccounts,
        operators,
        configNow: inForce,
        // One bound on submitted mail in memory, over both servers.
        buffered,
      };
      if (config.ingress.smtp.enabled) {
        const smtp = await startSubmissionServer({ ...deps, logger: logger.child({ role: 'ingress', interface: 'smtp' }) }, { host: config.ingress.smtp.host, port: config.ingress.smtp.port });
        ports.smtp = smtp.port;
        stoppers.push({ name: 'smtp-submission', stop: () => smtp.close(), listener: true });
        tlsServers.push({ name: 'submission', tls: smtp.tls, updateTls: (t) => smtp.updateTls(t) });
      }
      if (config.ingress.http.enabled) {
        const http = await startHttpApi({ ...deps, logger: logger.child({ role: 'ingress', interface: 'http' }) }, { host: config.ingress.http.host, port: config.ingress.http.port });
        ports.http = http.port;
        // Its close() ends the campaign preparation thread too, once its requests are answered.
        stoppers.push({ name: 'http-api', stop: () => http.close(), listener: true });
      }
    }

    let trackingServer: { updateSettings(settings: TrackingSettings): void; updateCodec(codec: TokenCodec): void } | null = null;
    /** The token codec in force: a reload with new tracking keys replaces it (app/reload.ts). */
    let liveCodec = codec;
    if (has('tracking')) {
      if (!codec) throw new SluiceError('SLUICE_CONFIG_INVALID', "role 'tracking' needs token keys"); // refused by readStartKeys already
      const t = config.tracking;
      const server = await startTrackingServer(
        {
          redis: redis.client, keys, codec, logger: logger.child({ role: 'tracking' }),
          metrics: {
            requests: metrics.trackingRequests,
            // Opens, clicks and unsubscribes are events of the stream too (sluice_events_total counts every event written).
            events: { inc: (l, n = 1) => (metrics.trackingEvents.inc(l, n), metrics.eventsAppended.inc({ type: l.type }, n)) },
            duration: metrics.trackingDuration, connectionsRefused: metrics.trackingConnectionsRefused, pixelsHeld: metrics.trackingPixelsHeld,
            suppressed: metrics.suppressionsAdded,
          },
          settings: trackingSettingsOf(config.accounts),
          connect: redis.connectOptions,
          eventsMaxLen: config.retention.eventsMaxLen,
          retentionMs: config.retention.records,
        },
        {
          host: t.host, port: t.port, publicBaseUrl: t.publicBaseUrl, trustProxy: t.trustProxy,
          maxConnections: t.maxClients, maxConnectionsPerClient: t.maxClientsPerIp, clientLimitExempt: t.clientLimitExempt,
          recorderNice: t.recorderNice,
        },
      );
      ports.tracking = server.port;
      trackingServer = server;
      // The results that mean an answered request's event was not written, at 0 from the start: a
      // series that first appears when it counts hides its first count from increase() (the
      // SluiceTrackingEventsDropped alert).
      for (const [endpoint, results] of [['open', ['shed', 'lost', 'unrecorded']], ['click', ['shed', 'unrecorded']], ['unsubscribe', ['unrecorded']]] as const) {
        for (const result of results) metrics.trackingRequests.inc({ endpoint, result }, 0);
      }
      stoppers.push({ name: 'tracking', stop: () => server.close(), listener: true });
    }

    if (has('feedback')) {
      const f = config.feedback;
      const feedbackTls = await loadOrCreateTls(config, 'feedback');
      const mx = await startInboundMx(
        {
          redis: redis.client, keys, logger: logger.child({ role: 'feedback' }), reputation,
          reportFailure: laterFailureNotices({ redis: redis.client, keys, config, send: sendNotice }),
          metrics: {
            received: (kind) => metrics.feedbackReceived.inc({ kind }),
            rejected: (code) => metrics.feedbackRejected.inc({ code }),
            clientLimited: () => metrics.smtpSessionsRefused.inc({ interface: 'feedback', reason: 'client_limit' }),
            outcome: (o) => metrics.feedbackOutcomes.inc({ outcome: o }),
            bounce: (reason, verdict) => metrics.bounces.inc({ reason, hard: verdict === 'hard' ? 'true' : 'false' }),
            complaint: (type) => metrics.complaints.inc({ type }),
            suppressed: (list, reason) => metrics.suppressionsAdded.inc({ list, reason }),
            event: (type) => metrics.eventsAppended.inc({ type }),
          },
        },
        {
          host: f.host, port: f.port, tls: feedbackTls, bounceDomains: bounceDomainsOf(config), fblAddresses: f.fblAddresses,
          maxMessageSize: f.maxMessageSize, maxBufferedBytes: f.maxBuffered, maxStoredBytes: f.maxStored, rawRetentionMs: config.retention.rawBounces, recordsRetentionMs: config.retention.records, softBounceLimit: f.softBounceLimit, softBounceWindowMs: f.softBounceWindow,
          eventsMaxLen: config.retention.eventsMaxLen, hostname: config.instance.hostname, socketTimeoutMs: f.socketTimeout, sessionTimeoutMs: f.sessionTimeout,
          maxClients: f.maxClients, maxClientsPerIp: f.maxClientsPerIp, clientLimitExempt: f.clientLimitExempt, maxRecipients: f.maxRecipients, verpKey,
          // Mail to the List-Unsubscribe mailto address carries a tracking token ('u').
          verifyUnsubscribeToken: liveCodec
            ? (token: string) => {
                const p = liveCodec?.verify(token, Date.now(), 'u');
                return p ? { msgId: p.msgId, idx: p.idx } : undefined;
              }
            : undefined,
        },
      );
      ports.feedback = mx.port;
      bufferedNow.push(['feedback', () => mx.bufferedBytes()]);
      stoppers.push({ name: 'feedback-mx', stop: () => mx.close(), listener: true });
      tlsServers.push({ name: 'feedback', tls: feedbackTls, updateTls: (t) => mx.updateTls(t) });
      feedbackReload = { setBounceDomains: (domains) => mx.setBounceDomains(domains) };
    }

    const admin: AdminServer = await startAdminServer({
      host: config.admin.host,
      port: config.admin.port,
      registry: metrics.registry,
      readiness: async () => {
        const problems: string[] = [];
        if (stopping) problems.push('shutting down');
        const pong = await Promise.race([redis.client.ping().catch((e: Error) => e.message), new Promise<string>((r) => setTimeout(() => r('timeout'), 1000).unref())]);
        if (pong !== 'PONG') problems.push(`redis: ${pong}`);
        return problems;
      },
    });
    ports.admin = admin.port;
    // The admin port closes just before Redis, so /readyz answers "shutting down" meanwhile.
    stoppers.splice(1, 0, { name: 'admin', stop: () => admin.close() });

    if (startFailure !== null) throw new SluiceError('SLUICE_REDIS_UNAVAILABLE', startFailure);
    if (opts.signal?.aborted) throw new SluiceError('SLUICE_SHUTTING_DOWN', 'start-up given up: stopped what had started');
    const tracking = trackingServer;
    const tokens: ReloadParts['tokens'] = tokenKeys
      ? {
          keys: tokenKeys,
          apply: (_keys, next) => {
            liveCodec = next;
            tracking?.updateCodec(next);
          },
        }
      : null;
    const live = new ConfigReloader({
      config, registry, operators, render, delivery: deliveryReload, feedback: feedbackReload, tracking, tokens, tlsServers, metrics, logger: log,
      setLogLevel: (level) => {
        logger.level = level;
      },
      audit: async (entries) => {
        for (const e of entries) await appendAudit(redis.client, keys, e, config.retention.auditMaxLen);
      },
    });
    reloader = live;
    started = true;
    log.info({ ports, roles }, 'sluice started');
    return {
      get config() {
        return live.config;
      },
      logger, metrics, redis, keys, roles, ports, dispatcher, failed,
      reload: (next, from) => live.reload(next, from),
      stop: async (graceMs = 30_000) => {
        const result = await stopAll(graceMs);
        log.info({ complete: result.complete }, 'sluice stopped');
        return result;
      },
    };
  } catch (err) {
    await stopAll(1000);
    // A Redis command failed because the embedded server died (its connections were closed): the death is why.
    if (startFailure !== null && !(err instanceof SluiceError && err.message === startFailure)) throw new SluiceError('SLUICE_REDIS_UNAVAILABLE', startFailure, { cause: err });
    throw err;
  }
}
