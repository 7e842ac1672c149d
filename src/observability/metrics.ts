import { Registry, Counter, Gauge, collectDefaultMetrics } from 'prom-client';
import { FastHistogram } from './histogram.js';

/**
 * Every Sluice metric, defined on a registry that app/ owns. Names follow Prometheus practice:
 * sluice_<thing>_<unit>, counters end in _total, base units. Labels are bounded: source, result,
 * provider (a shaping rule name, or 'default'), reason, algorithm — never a recipient, id or raw domain.
 */
/** How long a scrape waits for a sampled gauge's read (see `sampled`). */
export const SAMPLE_WAIT_MS = 3000;

/** Gauges read on scrape: app/ registers what fills them (see `sampleOn`). */
type SampledGauge = 'queueRecipients' | 'poolUtilization' | 'poolQueue' | 'suppressionListSize' | 'sendersPaused' | 'bufferedBytes' | 'feedbackPending' | 'backoff';
/** The `gauge` label of sluice_metric_sample_errors_total: the gauges a sampler fills, as the operator reads them. */
const SAMPLED_METRICS: Record<SampledGauge, string> = {
  queueRecipients: 'sluice_queue_recipients,sluice_queue_leases',
  poolUtilization: 'sluice_render_pool_utilization_ratio',
  poolQueue: 'sluice_render_pool_queue_size',
  suppressionListSize: 'sluice_suppression_list_size',
  sendersPaused: 'sluice_senders_paused',
  bufferedBytes: 'sluice_buffered_bytes',
  feedbackPending: 'sluice_feedback_pending',
  backoff: 'sluice_backoff_active,sluice_backoff_level',
};

/** How often a gauge whose reads keep failing is logged again (each failure is counted). */
export const SAMPLE_ERROR_LOG_EVERY_MS = 60_000;

export interface MetricsOptions {
  /** Told of a sampled gauge's failed read: the gauge keeps its last value, so without this a stale figure looks fresh. */
  onSampleError?: (gauges: string, err: unknown) => void;
}

export function createMetrics(opts: MetricsOptions = {}) {
  const registry = new Registry();
  const samplers = new Map<SampledGauge, () => void | Promise<void>>();
  const sampleErrorLoggedAt = new Map<SampledGauge, number>();
  // A sampler that fills several gauges (queueRecipients fills sluice_queue_leases too) runs once per
  // scrape: the gauges collected while it runs share its run. A scrape waits for a run at most
  // SAMPLE_WAIT_MS: the samplers read Redis, whose commands wait out an outage, and a scrape that
  // waits too answers nothing at all (`up` 0, every counter missing) just when it matters. The gauge
  // keeps its last value then, and so it does when a sampler fails; a run still going is not started twice.
  const running = new Map<SampledGauge, Promise<void>>();
  /** Waits for `p` (which never rejects), SAMPLE_WAIT_MS at most. */
  const waitAtMost = async (p: Promise<unknown>): Promise<void> => {
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([p, new Promise<void>((resolve) => (timer = setTimeout(resolve, SAMPLE_WAIT_MS)))]);
    clearTimeout(timer);
  };
  const sampled = (name: SampledGauge) => ({
    async collect() {
      const fn = samplers.get(name);
      if (!fn) return;
      let run = running.get(name);
      if (!run) {
        run = Promise.resolve()
          .then(fn)
          .then(
            () => void sampleErrorLoggedAt.delete(name),
            (err: unknown) => {
              m.sampleErrors.inc({ gauge: SAMPLED_METRICS[name] });
              // Logged on the first failure of a run of them, then once a minute while they go on.
              const at = sampleErrorLoggedAt.get(name);
              if (at === undefined || Date.now() - at >= SAMPLE_ERROR_LOG_EVERY_MS) {
                sampleErrorLoggedAt.set(name, Date.now());
                opts.onSampleError?.(SAMPLED_METRICS[name], err);
              }
            },
          )
          .finally(() => running.delete(name));
        running.set(name, run);
      }
      await waitAtMost(run);
    },
  });
  // prom-client's process and Node.js metrics, named sluice_process_* and sluice_nodejs_*.
  collectDefaultMetrics({ register: registry, prefix: 'sluice_' });

  const m = {
    registry,
    /** Sets the function that fills a sampled gauge at scrape time. */
    sampleOn(name: SampledGauge, fn: () => void | Promise<void>): void {
      samplers.set(name, fn);
    },
    messagesAccepted: new Counter({
      name: 'sluice_messages_accepted_total', help: 'Messages accepted (persisted) by source', labelNames: ['source'] as const, registers: [registry],
    }),
    recipientsAccepted: new Counter({
      name: 'sluice_recipients_accepted_total', help: 'Recipients accepted (persisted) by source', labelNames: ['source'] as const, registers: [registry],
    }),
    messagesRejected: new Counter({
      name: 'sluice_messages_rejected_total', help: 'Submissions refused, by source and error code', labelNames: ['source', 'code'] as const, registers: [registry],
    }),
    deliveryAttempts: new Counter({
      name: 'sluice_delivery_attempts_total', help: 'Delivery attempts by result (delivered, deferred, bounced, expired) and provider', labelNames: ['result', 'provider'] as const, registers: [registry],
    }),
    deliveryMovedOn: new Counter({
      name: 'sluice_delivery_moved_on_total', help: 'Copies a host answered with a 4xx (not a slow-down) that went on to the next MX host of the same attempt', labelNames: ['provider'] as const, registers: [registry],
    }),
    messagesDelivered: new Counter({
      name: 'sluice_messages_delivered_total', help: 'Recipients delivered (remote 2xx)', labelNames: ['provider'] as const, registers: [registry],
    }),
    bounces: new Counter({
      name: 'sluice_bounces_total', help: 'Recipients bounced or expired by reason and verdict (hard: true/false)', labelNames: ['reason', 'hard'] as const, registers: [registry],
    }),
    queueRecipients: new Gauge({
      name: 'sluice_queue_recipients', help: 'Recipients waiting in the queue by provider (sampled)', labelNames: ['provider'] as const, registers: [registry], ...sampled('queueRecipients'),
    }),
    queueLeases: new Gauge({
      // Filled by the same sampler as sluice_queue_recipients: the registry collects the gauges
      // concurrently, so without its own collect this one showed the previous scrape's figures.
      name: 'sluice_queue_leases', help: 'Recipients claimed (leased) by provider (sampled)', labelNames: ['provider'] as const, registers: [registry], ...sampled('queueRecipients'),
    }),
    campaignCopiesHeld: new Counter({
      name: 'sluice_campaign_copies_held_total', help: "Campaign copies held back at claim time by a limit: the campaign's throttle.perHour, or its account's dailyQuota or rateLimit.perSecond/perMinute/perHour", labelNames: ['by'] as const, registers: [registry],
    }),
    campaignRecipientsQueued: new Counter({
      name: 'sluice_campaign_recipients_queued_total', help: 'Campaign recipients queued by the campaign enqueuer', registers: [registry],
    }),
    leasesReaped: new Counter({
      name: 'sluice_queue_leases_reaped_total', help: 'Expired leases returned to the queue', registers: [registry],
    }),
    dkimSignDuration: new FastHistogram({
      name: 'sluice_dkim_sign_duration_seconds', help: 'Time of one DKIM signature in a worker: its signing and an equal share of the body hash', labelNames: ['algorithm'] as const,
      buckets: [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1], registers: [registry],
    }),
    renderDuration: new FastHistogram({
      name: 'sluice_render_duration_seconds', help: 'Time from submitting a render task to the pool to its result (queueing included)',
      buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1], registers: [registry],
    }),
    smtpTransactionDuration: new FastHistogram({
      name: 'sluice_smtp_transaction_duration_seconds', help: 'MAIL FROM to the answer after DATA, per message', labelNames: ['result'] as const,
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30], registers: [registry],
    }),
    smtpConnections: new Gauge({
      name: 'sluice_smtp_connections', help: 'Open outbound SMTP connections by provider', labelNames: ['provider'] as const, registers: [registry],
    }),
    smtpConnectionsOpened: new Counter({
      name: 'sluice_smtp_connections_opened_total', help: 'Outbound SMTP connections opened by provider group, result (ok, failed, tls_failed, tls_required) and TLS', labelNames: ['provider', 'result', 'tls'] as const, registers: [registry],
    }),
    poolUtilization: new Gauge({
      name: 'sluice_render_pool_utilization_ratio', help: 'Share of time the render worker threads were busy (0–1)', registers: [registry], ...sampled('poolUtilization'),
    }),
    poolQueue: new Gauge({
      name: 'sluice_render_pool_queue_size', help: 'Render tasks waiting for a worker thread', registers: [registry], ...sampled('poolQueue'),
    }),
    backoffActive: new Gauge({
      name: 'sluice_backoff_active', help: '1 while any throttle scope of the provider is suspended after 421/4.7.x answers', labelNames: ['provider'] as const, registers: [registry], ...sampled('backoff'),
    }),
    backoffLevel: new Gauge({
      name: 'sluice_backoff_level', help: 'Highest slowdown level among the provider\'s throttle scopes (0 = full speed; each level halves connections and rate)', labelNames: ['provider'] as const, registers: [registry], ...sampled('backoff'),
    }),
    held: new Counter({
      name: 'sluice_delivery_held_total', help: 'Destination visits an operator hold postponed (sluice queue hold), by the kind of hold (domain, rule)', labelNames: ['kind'] as const, registers: [registry],
    }),
    holds: new Gauge({
      name: 'sluice_delivery_holds', help: 'Operator holds in force (sluice queue hold), by kind (domain, rule), as this delivery process last read them', labelNames: ['kind'] as const, registers: [registry],
    }),
    eventsAppended: new Counter({
      name: 'sluice_events_total', help: 'Events appended to the event stream by type', labelNames: ['type'] as const, registers: [registry],
    }),
    httpRequests: new Counter({
      name: 'sluice_http_requests_total', help: 'HTTP API requests by route and status class', labelNames: ['route', 'status'] as const, registers: [registry],
    }),
    trackingRequests: new Counter({
      name: 'sluice_tracking_requests_total', help: 'Tracking server requests by endpoint (open, click, unsubscribe, …) and result', labelNames: ['endpoint', 'result'] as const, registers: [registry],
    }),
    trackingEvents: new Counter({
      name: 'sluice_tracking_events_total', help: 'Opens, clicks and unsubscribes recorded, by type and class (human_first, human, machine)', labelNames: ['type', 'class'] as const, registers: [registry],
    }),
    trackingDuration: new FastHistogram({
      name: 'sluice_tracking_request_duration_seconds', help: 'Tracking request latency by endpoint', labelNames: ['endpoint'] as const,
      buckets: [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1], registers: [registry],
    }),
    trackingPixelsHeld: new Counter({
      name: 'sluice_tracking_pixels_held_total',
      help: 'Open pixels whose answer was held back (up to 250 ms) because the opens waiting to be written passed half their bound: the clients slow down instead of their opens being dropped',
      registers: [registry],
    }),
    httpConnectionsRefused: new Counter({
      name: 'sluice_http_connections_refused_total',
      help: 'HTTP API connections refused by reason: client_limit (answered 503: too many from one client), server_limit (closed: ingress.http.maxClients open)',
      labelNames: ['reason'] as const, registers: [registry],
    }),
    trackingConnectionsRefused: new Counter({
      name: 'sluice_tracking_connections_refused_total',
      help: 'Tracking server connections refused by reason: client_limit (answered 503: too many from one client), server_limit (closed: tracking.maxClients open)',
      labelNames: ['reason'] as const, registers: [registry],
    }),
    webhookDeliveries: new Counter({
      name: 'sluice_webhook_deliveries_total', help: 'Webhook batch deliveries by result (success, http_error, timeout, network_error, secret_error, dead_letter; unreadable: a batch in an outbox that could not be read, dropped unsent)', labelNames: ['result'] as const, registers: [registry],
    }),
    webhookLag: new Gauge({
      name: 'sluice_webhook_lag_seconds', help: 'Age of the oldest event waiting for webhook delivery at the last pass', registers: [registry],
    }),
    webhookEventsLost: new Counter({
      name: 'sluice_webhook_events_lost_total', help: 'Events trimmed from the event stream (retention.eventsMaxLen, retention.events) before the webhook dispatcher routed them: no endpoint gets them', registers: [registry],
    }),
    webhookDeadLettersDropped: new Counter({
      name: 'sluice_webhook_dead_letters_dropped_total', help: 'Dead-lettered webhook batches dropped, oldest first, to keep an endpoint\'s dead-letter list at 10,000 batches: no replay sends them', registers: [registry],
    }),
    webhookOutboxFull: new Counter({
      name: 'sluice_webhook_outbox_full_total', help: 'New webhook batches put straight into their endpoint\'s dead-letter list because its outbox held webhooks.maxOutbox events', registers: [registry],
    }),
    suppressionListSize: new Gauge({
      name: 'sluice_suppression_list_size', help: 'Addresses on suppression lists: list="global" (addresses that do not exist) or "accounts" (all accounts\' lists together)', labelNames: ['list'] as const, registers: [registry], ...sampled('suppressionListSize'),
    }),
    bufferedBytes: new Gauge({
      name: 'sluice_buffered_bytes', help: 'Inbound mail held in memory until it is persisted (or, for feedback, processed), by server: ingress (SMTP submission and HTTP API together; bounded by ingress.maxBuffered) or feedback (feedback.maxBuffered)', labelNames: ['server'] as const, registers: [registry], ...sampled('bufferedBytes'),
    }),
    feedbackPending: new Gauge({
      name: 'sluice_feedback_pending', help: 'Stored feedback mail not processed for good yet: received in the last moments, or failed and waiting for its retry', registers: [registry], ...sampled('feedbackPending'),
    }),
    sendersPaused: new Gauge({
      name: 'sluice_senders_paused', help: 'Senders (accounts or From domains) paused by the reputation guard now', registers: [registry], ...sampled('sendersPaused'),
    }),
    senderPauses: new Counter({
      name: 'sluice_sender_pauses_total', help: 'Senders (account or From domain) paused by the reputation guard', registers: [registry],
    }),
    feedbackReceived: new Counter({
      name: 'sluice_feedback_received_total', help: 'Feedback mail accepted and stored by the inbound MX, once per envelope recipient, by kind (verp, fbl, unsubscribe, postmaster)', labelNames: ['kind'] as const, registers: [registry],
    }),
    feedbackRejected: new Counter({
      name: 'sluice_feedback_rejected_total', help: 'Inbound MX refusals by error code', labelNames: ['code'] as const, registers: [registry],
    }),
    feedbackOutcomes: new Counter({
      name: 'sluice_feedback_outcomes_total', help: 'Stored feedback mail by what processing made of it (processed, unparsed, unmatched, ambiguous, account-deleted, failed)', labelNames: ['outcome'] as const, registers: [registry],
    }),
    complaints: new Counter({
      name: 'sluice_complaints_total', help: 'ARF reports by feedback type (not-spam, auth-failure and virus suppress nobody)', labelNames: ['type'] as const, registers: [registry],
    }),
    suppressionsAdded: new Counter({
      name: 'sluice_suppressions_added_total', help: 'Addresses added to a suppression list (global or account) by reason', labelNames: ['list', 'reason'] as const, registers: [registry],
    }),
    retentionPurged: new Counter({
      name: 'sluice_retention_purged_total',
      help: 'Data deleted by retention and account deletion, by kind (events, audit, messages, records, raw_bounces, account_keys, account_events, accounts)',
      labelNames: ['kind'] as const, registers: [registry],
    }),
    smtpSessionsRefused: new Counter({
      name: 'sluice_smtp_sessions_refused_total',
      help: 'Inbound SMTP connections refused or closed by a listener (submission, feedback) for a reason: client_limit (too many from one client), auth_timeout (not authenticated in time)',
      labelNames: ['interface', 'reason'] as const, registers: [registry],
    }),
    authFailures: new Counter({
      name: 'sluice_auth_failures_total', help: 'Failed authentications by interface (smtp, http)', labelNames: ['interface'] as const, registers: [registry],
    }),
    configReloads: new Counter({
      name: 'sluice_config_reloads_total', help: 'Configuration reloads (SIGHUP) by result: applied, or refused (the file or a key file was wrong; the configuration in force is kept)', labelNames: ['result'] as const, registers: [registry],
    }),
    configReloadSuccessful: new Gauge({
      name: 'sluice_config_last_reload_successful', help: '1 when the last configuration reload was applied (or none was asked for since the start), 0 when it was refused', registers: [registry],
    }),
    configLoadedAt: new Gauge({
      name: 'sluice_config_last_reload_success_timestamp_seconds', help: 'When the configuration in force was loaded: the start, or the last reload applied (Unix seconds)', registers: [registry],
    }),
    // Registered last: the registry starts every metric's collect in order, so by the time this one's
    // runs every sampled gauge's read of this scrape has started, and it waits for them (as they do,
    // SAMPLE_WAIT_MS at most) to count this scrape's failures in this scrape.
    sampleErrors: new Counter({
      name: 'sluice_metric_sample_errors_total', help: 'Failed reads of a gauge sampled at scrape time (the gauge kept its last value)', labelNames: ['gauge'] as const, registers: [registry],
      async collect() {
        if (running.size > 0) await waitAtMost(Promise.all(running.values()));
      },
    }),
  };
  return m;
}

export type Metrics = ReturnType<typeof createMetrics>;
