import { isIP } from 'node:net';
import { domainToASCII } from 'node:url';
import { z } from 'zod';
import { parseDuration, parseSize, type Ms } from '../core/time.js';
import { parseCidr } from '../core/client-limit.js';
import { DKIM_SELECTOR } from '../core/dkim-record.js';
import { listenerClashes, listenersOf } from './listeners.js';

/**
 * The one schema of Sluice's configuration. It gives both the validator and the TypeScript type.
 * Every object is strict: an unknown key is refused with its path. config/default.yaml holds every
 * key with its documented default; the operator's file and the environment are merged over it.
 */

const duration = z
  .string()
  .transform((text, ctx): Ms => {
    const v = parseDuration(text);
    if (v === undefined) {
      ctx.addIssue({ code: 'custom', message: `not a duration: ${JSON.stringify(text)} (use e.g. '250ms', '30s', '5m', '72h', '90d')` });
      return z.NEVER;
    }
    return v;
  });

/**
 * A duration that runs as a Node timer (a timeout, an interval, a grace period). Node's timers hold
 * at most 2^31-1 ms (24.8 days) and fire a longer one after 1 ms, so '30d' as an idle timeout or a
 * poll interval would end at once or spin: it is refused instead.
 */
export const MAX_TIMER_MS = 24 * 86_400_000;
const timer = duration.refine((v) => v <= MAX_TIMER_MS, { message: `must be at most 24d: it runs as a timer, and Node's timers hold at most 24.8 days (a longer one fires at once)` });

/** A timeout of an outbound step: 0 would end every such step at once, and every attempt would fail. */
const stepTimeout = timer.refine((v) => v > 0, { message: 'must be more than 0: a timeout of 0 ends the step at once, so every delivery attempt would fail (there is no "no timeout")' });

const size = z.union([z.number().int().nonnegative(), z.string()]).transform((v, ctx): number => {
  if (typeof v === 'number') return v;
  const n = parseSize(v);
  if (n === undefined) {
    ctx.addIssue({ code: 'custom', message: `not a size: ${JSON.stringify(v)} (use bytes or e.g. '512KB', '25MB')` });
    return z.NEVER;
  }
  return n;
});

const port = z.number().int().min(0).max(65535);
const host = z.string().min(1);
const positiveInt = z.number().int().positive();
/** delivery.lease at least: twice the shortest renewal period, so a renewal late by up to one period still lands. */
const MIN_LEASE_MS = 2_000;
/** Addresses or CIDR networks whose clients a listener's per-client connection limit does not count. */
const exemptNetworks = z.array(z.string().refine((v) => parseCidr(v) !== null, { message: 'must be an IP address or a CIDR network such as 127.0.0.0/8' }));

/** The port of 'host:port' text, or why it is not one: digits, 1–65535. */
function checkPort(text: string): string | null {
  if (!/^\d{1,5}$/.test(text) || Number(text) < 1 || Number(text) > 65535) return `port must be 1–65535, not ${JSON.stringify(text)}`;
  return null;
}

// A host name as a resolver takes it: dot-separated labels of letters, digits, - and _ (container
// service names), none empty, at most 253 characters.
const HOST_NAME = /^(?=.{1,253}$)[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?(?:\.[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?)*\.?$/;

/** Why a transport target is not 'host:port' (a name or an IPv4 address) or '[ipv6]:port'; null if it is. */
function checkTransportTarget(v: string, examples = "'smtp.example.com:587', '192.0.2.1:25', '[2001:db8::1]:25'"): string | null {
  const m = /^\[([^\]]*)\]:(.*)$/.exec(v) ?? /^([^:[\]]*):(.*)$/.exec(v);
  const bracketed = v.startsWith('[');
  const host = m?.[1] ?? '';
  let why: string | null;
  if (!m) why = "must be 'host:port' or '[ipv6]:port'";
  else if (!bracketed && v.indexOf(':') !== v.lastIndexOf(':')) why = 'an IPv6 address is written in brackets';
  else if (bracketed && isIP(host) !== 6) why = 'must hold an IPv6 address between [ and ]';
  else if (!bracketed && isIP(host) === 0 && !HOST_NAME.test(host)) why = `${JSON.stringify(host)} is not a host name or IPv4 address`;
  // All digits and dots is an address, or nothing: 999.1.1.1 is no name a resolver finds.
  else if (!bracketed && isIP(host) === 0 && /^[\d.]+$/.test(host)) why = `${JSON.stringify(host)} is not a valid IPv4 address`;
  else why = checkPort(m[2] as string);
  return why && `${JSON.stringify(v)}: ${why} (e.g. ${examples})`;
}

/**
 * A DNS server: 'ip', 'ip:port', '[ipv6]:port' or an IPv6 address alone (the forms of
 * Resolver.setServers and delivery/dns-query.ts). An address, not a name: nothing resolves it.
 */
const dnsServer = z.string().superRefine((v, ctx) => {
  const m = /^\[([^\]]*)\](?::(.*))?$/.exec(v) ?? /^([^:[\]]*)(?::(.*))?$/.exec(v);
  let why: string | null = null;
  if (isIP(v) === 6) why = null;
  else if (!m) why = 'not an IP address';
  else if (v.startsWith('[') ? isIP(m[1] as string) !== 6 : isIP(m[1] as string) !== 4) why = v.startsWith('[') ? 'must hold an IPv6 address between [ and ]' : 'not an IP address (a resolver is given by address, not by name)';
  else if (m[2] !== undefined) why = checkPort(m[2]);
  if (why) ctx.addIssue({ code: 'custom', message: `${JSON.stringify(v)}: ${why} (e.g. '192.0.2.53', '192.0.2.53:5353', '2001:db8::53', '[2001:db8::53]:5353')` });
});

/** A Redis Cluster seed node: 'host:port' or '[ipv6]:port', as a transport target is written. */
const clusterSeed = z.string().superRefine((v, ctx) => {
  const why = checkTransportTarget(v, "'redis-1:6379', '192.0.2.7:6379', '[2001:db8::7]:6379'");
  if (why) ctx.addIssue({ code: 'custom', message: why });
});

/**
 * redis.url (REDIS_URL): what redis/client.ts connects to. It takes any other text for a socket
 * path, so 'localhost:6379' would be waited for forever as a file in the working directory.
 */
const redisUrl = z.string().superRefine((v, ctx) => {
  if (/^rediss?:\/\//.test(v) || /^(?:unix:\/\/)?\//.test(v)) return;
  const guess = /^[^/:\s]+:\d+$/.test(v) ? ` (redis://${v}?)` : '';
  ctx.addIssue({
    code: 'custom',
    message: `${JSON.stringify(v)} is not a Redis address (REDIS_URL or redis.url): use redis://host:port${guess}, rediss://host:port (TLS), unix:///path/to/redis.sock or an absolute socket path`,
  });
});

/**
 * The transport map. Keys: '*' (every domain), '*.domain' (every subdomain of domain, not domain
 * itself) or a domain; compared like the destination, without case or a trailing dot and with an
 * internationalised domain in its A-label (xn--) form, so keys are stored that way. Two keys that are the same domain are refused. Every bad key and target is
 * reported, each under its key.
 */
const transportMap = z.record(z.string(), z.unknown()).transform((map, ctx) => {
  const out: Record<string, string> = {};
  const seen = new Set<string>();
  for (const [key, target] of Object.entries(map)) {
    const lower = key.trim().toLowerCase().replace(/\.$/, '');
    // An internationalised domain is compared in its A-label form, as destinations are (core/address.ts).
    const wild = lower.startsWith('*.');
    const domain = /[^\x00-\x7f]/.test(lower) ? domainToASCII(wild ? lower.slice(2) : lower) : wild ? lower.slice(2) : lower;
    const name = wild ? `*.${domain}` : domain;
    if (name !== '*' && (domain.includes('*') || !HOST_NAME.test(domain) || isIP(domain) !== 0)) {
      const message = key.includes('*')
        ? "the only wildcards in a key are '*' (every domain) and '*.domain' (every subdomain of domain)"
        : "a key must be a domain, '*.domain' or '*'";
      ctx.addIssue({ code: 'custom', path: [key], message });
    } else if (seen.has(name)) {
      ctx.addIssue({ code: 'custom', path: [key], message: `the same destination as another key (${name}): keys are compared without case or a trailing dot` });
    }
    seen.add(name);
    const why = typeof target === 'string' ? checkTransportTarget(target) : `must be a 'host:port' string, not ${JSON.stringify(target)}`;
    if (why) ctx.addIssue({ code: 'custom', path: [key], message: why });
    else out[name] = target as string;
  }
  return out;
});

/** Messages per second/minute/hour; null means no limit in that window. */
/** Limits per window; a window left out or null has none. */
const rate = z
  .object({
    perSecond: positiveInt.nullable().default(null),
    perMinute: positiveInt.nullable().default(null),
    perHour: positiveInt.nullable().default(null),
  })
  .strict();

/**
 * How an outbound session uses STARTTLS, as Postfix's smtp_tls_security_level:
 *   none     never (plain text even where STARTTLS is offered)
 *   may      when offered; plain text where it is not, or is refused (RFC 3207 §4.1: opportunistic)
 *   encrypt  mandatory: no STARTTLS offered, STARTTLS refused or a failed handshake ends the session
 *            (deferred, 4.7.x) before any mail is sent; the certificate is not checked
 *   verify   mandatory as encrypt, and the certificate must verify (a trusted CA, the MX host name)
 */
export const TLS_POLICIES = ['none', 'may', 'encrypt', 'verify'] as const;
export type TlsPolicy = (typeof TLS_POLICIES)[number];

const tlsPolicy = z.enum(TLS_POLICIES, {
  error: (issue) => `must be one of none, may, encrypt or verify (the STARTTLS policy of the rule's destinations), not ${JSON.stringify(issue.input)}`,
});

/** A source address of outbound connections (delivery.bindAddress, a shaping rule's). */
const ipv4 = z.string().refine((v) => isIP(v) === 4, { message: 'must be an IPv4 address of this host' });
const ipv6 = z.string().refine((v) => isIP(v) === 6, { message: 'must be an IPv6 address of this host' });

const shapingFields = {
  /** 'domain': each matching destination domain has its own limits; 'provider': all matching domains share them. */
  scope: z.enum(['domain', 'provider']),
  connections: positiveInt,
  messagesPerConnection: positiveInt,
  rate,
  retry: z.array(duration).min(1),
  maxAge: duration,
};

const shapingRule = z
  .object({
    name: z.string().regex(/^[a-z0-9][a-z0-9_-]*$/, 'lower-case letters, digits, _ and - only'),
    match: z
      .object({
        /** Destination domains; '*' wildcards allowed ('*.example.com'). */
        domains: z.array(z.string().min(1)),
        /** MX host name patterns ('*.google.com'): the rule applies to every domain whose MX matches. */
        mx: z.array(z.string().min(1)),
      })
      .strict(),
    scope: shapingFields.scope.optional(),
    connections: shapingFields.connections.optional(),
    messagesPerConnection: shapingFields.messagesPerConnection.optional(),
    rate: shapingFields.rate.optional(),
    retry: shapingFields.retry.optional(),
    maxAge: shapingFields.maxAge.optional(),
    /**
     * STARTTLS policy for the destinations this rule matches (by domain or MX host name); left out,
     * delivery.tls decides. Resolved after the MX lookup, as the rule itself, and needed only when
     * connecting, so a rule by MX provider can require TLS of every domain hosted there.
     */
    tls: tlsPolicy.optional(),
    /**
     * Source addresses of connections to this rule's destinations, over delivery.bindAddress /
     * bindAddress6 (a partner that accepts mail only from one address, a new address warmed up with
     * one provider). Checked at start, as those are.
     */
    bindAddress: ipv4.optional(),
    bindAddress6: ipv6.optional(),
    /** The EHLO name of connections to this rule's destinations (the name its bindAddress's PTR gives); left out, delivery.ehloName. */
    ehloName: z.string().min(1).optional(),
  })
  .strict();

const dkimKey = z
  .object({
    selector: z.string().regex(DKIM_SELECTOR, 'not a DKIM selector: labels of letters, digits, "_" or "-" separated by single dots'),
    algorithm: z.enum(['rsa', 'ed25519']),
    /** PEM file with the private key (PKCS#8 or PKCS#1). Relative paths are from the config file. */
    keyFile: z.string().min(1),
  })
  .strict();

/**
 * An account or operator id: it stands inside Redis key names, API keys (sk_<id>_…) and URLs, so it
 * is lower-case ASCII without separators those use; 63 characters, the length of a DNS label.
 */
export const ACCOUNT_ID = /^[a-z0-9][a-z0-9_-]{0,62}$/;

const account = z
  .object({
    id: z.string().regex(ACCOUNT_ID, 'lower-case letters, digits, _ and -, at most 63'),
    domains: z.array(
      z
        .object({
          domain: z.string().min(1),
          dkim: z.array(dkimKey),
          /**
           * The domain of this domain's mail's envelope sender (its VERP Return-Path) instead of
           * delivery.bounceDomain: a subdomain of `domain`, so SPF aligns for DMARC too. Its MX must
           * point at the feedback role, and its SPF name the sending addresses.
           */
          returnPath: z.string().min(1).optional(),
        })
        .strict(),
    ),
    /** scrypt hashes made by `sluice secret hash` (never plain keys). */
    apiKeys: z.array(z.string().startsWith('scrypt$', 'must be a hash from `sluice secret hash`')),
    smtpUsers: z.array(
      z
        .object({
          username: z.string().min(1),
          passwordHash: z.string().startsWith('scrypt$', 'must be a hash from `sluice secret hash`'),
        })
        .strict(),
    )
      // Optional: an account may submit over the HTTP API only.
      .default([]),
    /** Recipients per UTC day; null (or left out) = no quota. */
    dailyQuota: positiveInt.nullable().default(null),
    /** Accepted recipients per window; null entries (or left out) = no limit. */
    rateLimit: rate.default({ perSecond: null, perMinute: null, perHour: null }),
    /**
     * Tracking of this account's mail: 'full' (per-recipient events), 'anonymous' (aggregate counts
     * only), 'off' (no pixel, no link rewriting); and what is kept of a reader's IP address.
     */
    tracking: z
      .object({ mode: z.enum(['full', 'anonymous', 'off']), anonymizeIp: z.enum(['none', 'truncate', 'drop']) })
      .strict()
      .default({ mode: 'full', anonymizeIp: 'none' }),
  })
  .strict();

/**
 * A memory budget (maxBuffered) below the largest message it must hold refuses such a message "for
 * now" (452 4.3.1 / 503) on every try: the client retries until it gives up, days later, instead of
 * getting the size limit's permanent answer at once.
 */
function atLeastLargest(ctx: z.RefinementCtx, budget: number, largest: number, largestKey: string, budgetKey = 'maxBuffered'): void {
  if (budget < largest) {
    ctx.addIssue({ code: 'custom', path: [budgetKey], message: `must be at least ${largestKey} (${budget} < ${largest} bytes): a message of that size would be refused for now on every try` });
  }
}

/** The roles a process can run (`roles`, `sluice start --roles`). */
export const ROLES = ['ingress', 'delivery', 'tracking', 'feedback', 'housekeeping'] as const;

export const configSchema = z
  .object({
    roles: z.array(z.enum(ROLES)).min(1),
    instance: z
      .object({
        /** Name used in SMTP greetings/EHLO and Message-IDs. */
        hostname: z.string().min(1),
        /** Folder for the embedded Redis, generated TLS certificate and other local state. */
        dataDir: z.string().min(1),
        /** On SIGTERM, how long transactions in flight may take before connections are cut. */
        shutdownGrace: timer,
      })
      .strict(),
    log: z
      .object({
        level: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']),
      })
      .strict(),
    redis: z
      .object({
        /** redis://, rediss://, unix:///path or an absolute socket path; null = start an embedded redis-server. Env: REDIS_URL. */
        url: redisUrl.nullable(),
        /** Seed nodes ('host:port' or '[ipv6]:port') of a Redis Cluster; when non-empty, url is ignored. */
        cluster: z.array(clusterSeed),
        /** Prefix of every key Sluice writes. */
        prefix: z.string().regex(/^[A-Za-z0-9:_-]*$/),
        /** Number of shards of the due-destination schedule (fixed once data exists). */
        scheduleShards: positiveInt.max(1024),
        /** 'everysec': AOF fsync every second. 'strict': WAIT for a replica / fsync before acknowledging. */
        durability: z.enum(['everysec', 'strict']),
        embedded: z
          .object({
            binary: z.string().min(1),
            /** Folder of the embedded server's data, relative to instance.dataDir. */
            dir: z.string().min(1),
            maxmemory: size,
            /** The AOF is not rewritten while smaller than this (auto-aof-rewrite-min-size). */
            aofRewriteMinSize: size,
            /** An RDB snapshot at most this often (when anything changed); null = none (the AOF is the data). */
            snapshotInterval: duration.nullable(),
          })
          .strict(),
      })
      .strict(),
    admin: z.object({ host, port }).strict(),
    ingress: z
      .object({
        smtp: z
          .object({
            enabled: z.boolean(),
            host,
            port,
            /** PEM files; null = a self-signed certificate is generated under instance.dataDir on first start. */
            tlsKey: z.string().nullable(),
            tlsCert: z.string().nullable(),
            maxMessageSize: size,
            maxRecipients: positiveInt,
            maxClients: positiveInt,
            /** Concurrent connections from one client (an IPv4 address, an IPv6 /64); 421 beyond. */
            maxClientsPerIp: positiveInt,
            clientLimitExempt: exemptNetworks,
            socketTimeout: timer,
            /** A client not authenticated this long after connecting is disconnected (421). */
            authTimeout: timer,
            /** Failed AUTH attempts per client IP before replies are delayed. */
            authFailuresBeforeDelay: positiveInt,
          })
          .strict(),
        http: z
          .object({
            enabled: z.boolean(),
            host,
            port,
            maxBodySize: size,
            /** Messages in one POST /v1/messages/batch. */
            maxBatch: positiveInt,
            requestTimeout: timer,
            /** Connections open at once; beyond, new ones are closed. */
            maxClients: positiveInt,
            /** Connections open at once from one client (an IPv4 address, an IPv6 /64); 503 and closed beyond. */
            maxClientsPerIp: positiveInt,
            clientLimitExempt: exemptNetworks,
            /** Behind a proxy: the client is the last X-Forwarded-For hop, and only maxClients applies. */
            trustProxy: z.boolean(),
          })
          .strict(),
        maxRecipients: positiveInt,
        idempotencyTtl: duration,
        /** Bytes of submitted mail held in memory at once over SMTP and HTTP; 452 4.3.1 / 503 beyond. */
        maxBuffered: size,
      })
      .strict()
      .superRefine((v, ctx) => {
        if (v.smtp.enabled) atLeastLargest(ctx, v.maxBuffered, v.smtp.maxMessageSize, 'smtp.maxMessageSize');
        if (v.http.enabled) atLeastLargest(ctx, v.maxBuffered, v.http.maxBodySize, 'http.maxBodySize');
      }),
    delivery: z
      .object({
        /** Domain of the VERP envelope sender: b-<msgId>-<n>-<tag>@bounceDomain (core/verp.ts). */
        bounceDomain: z.string().min(1),
        /** Name sent in EHLO; null = instance.hostname. */
        ehloName: z.string().nullable(),
        /**
         * Source address of outbound SMTP connections to IPv4 hosts (Postfix smtp_bind_address): on a
         * host with several addresses, the one whose PTR names ehloName and that SPF allows. null = the
         * system's choice. Checked at start: an address this host does not have is refused.
         */
        bindAddress: ipv4.nullable(),
        /** The same for IPv6 hosts (Postfix smtp_bind_address6). */
        bindAddress6: ipv6.nullable(),
        /** An SMTP submission's recipient that fails for good (during delivery, or by a later DSN) is reported to its envelope sender (delivery/failure-notice.ts). */
        failureNotices: z.boolean(),
        /**
         * A recipient of an SMTP submission still deferred this long after acceptance gets its sender
         * one warning (a DSN with Action: delayed), when its NOTIFY asks for delays or it gave none
         * (sendmail's Timeout.queuewarn, Postfix's delay_warning_time). null = never.
         */
        delayWarning: duration.nullable(),
        /** Outbound SMTP connections this process keeps open at most, over all destinations. */
        maxConnections: positiveInt,
        /** Recipients claimed per Redis round trip for one connection. */
        claimBatch: positiveInt,
        /**
         * Recipients this process holds claimed at once, over all connections. At ~1,000 copies/s and a
         * few ms per transaction, a few hundred keep the render pool and the connections busy;
         * bench/e2e.ts showed 10,000 claimed at once adding ~0.5 GB of RSS and GC time for nothing.
         */
        maxClaimed: positiveInt,
        /**
         * A connection claims no more than it sends in this time: a claim still on the wire this long
         * after its first transaction began gives back the copies it has not started (delivery/dispatcher.ts).
         */
        claimWindow: timer.refine((v) => v >= 100, { message: 'must be at least 100ms: a shorter window gives back the rest of every claim as soon as its first transaction begins, so each connection sends one recipient per claim' }),
        /** A claim (and a connection slot) lives this long unless its holder renews it (delivery/dispatcher.ts). */
        lease: timer.refine((v) => v >= MIN_LEASE_MS, { message: 'must be at least 2s: leases are renewed every third of the lease but at most once a second, so a shorter one could run out before its renewal and its copies be sent twice' }),
        pollInterval: timer,
        /**
         * Addresses of a destination's MX hosts one attempt tries at most (Postfix's
         * smtp_mx_address_limit). At most 50 (Exim's hosts_max_try_hardlimit): a route looks up
         * twice as many exchanges at once and keeps twice as many addresses.
         */
        maxAddresses: positiveInt.max(50),
        /**
         * Sessions one attempt opens at most that come up (past EHLO and STARTTLS) and are over before
         * their first transaction (Postfix's smtp_mx_session_limit): each next one is sought from the
         * next address. At most 50, as maxAddresses: sessions come from the attempt's addresses.
         */
        maxSessions: positiveInt.max(50),
        /** Domain, '*.domain' or '*' to 'host:port' – used instead of MX (smarthosts, tests). */
        transport: transportMap,
        dns: z
          .object({
            /** DNS servers ('ip', 'ip:port', '[ipv6]:port'); empty = the system's. */
            servers: z.array(dnsServer),
            timeout: timer,
            /** Longest time an MX answer is cached, whatever its TTL. */
            maxCacheTtl: duration,
            negativeCacheTtl: duration,
            /** Follow MX hosts whose addresses are loopback or unspecified (this host); off by default. */
            loopbackMx: z.boolean(),
            /** Follow MX hosts whose addresses are private or reserved (RFC 1918, link-local, ULA, multicast…); off by default. */
            privateMx: z.boolean(),
          })
          .strict(),
        /** Send with BDAT (RFC 3030) when the server offers CHUNKING: one round trip a message instead of two. */
        chunking: z.boolean(),
        /** The TLS policy of destinations whose shaping rule sets none (TlsPolicy): verify → 'verify', else encrypt → 'encrypt', else opportunistic → 'may', else 'none'. */
        tls: z
          .object({
            /** Use STARTTLS when the server offers it. */
            opportunistic: z.boolean(),
            /**
             * Mandatory TLS with a certificate that verifies for the MX host name (Postfix 'verify'):
             * a host without STARTTLS, or whose STARTTLS or certificate fails, gets no mail (deferred
             * 4.7.x). Most MX certificates don't verify: off by default like Postfix 'may'.
             */
            verify: z.boolean(),
            /**
             * Mandatory TLS without checking the certificate (Postfix 'encrypt'): a host without
             * STARTTLS, or whose STARTTLS fails, gets no mail (deferred 4.7.x). Off by default;
             * verify, when on, is stricter and wins.
             */
            encrypt: z.boolean(),
          })
          .strict()
          .superRefine((v, ctx) => {
            if (v.verify && !v.opportunistic) {
              ctx.addIssue({ code: 'custom', path: ['verify'], message: 'verify (mandatory, verified TLS) contradicts opportunistic: false (no STARTTLS at all): set opportunistic: true, or verify: false' });
            }
            if (v.encrypt && !v.opportunistic) {
              ctx.addIssue({ code: 'custom', path: ['encrypt'], message: 'encrypt (mandatory TLS) contradicts opportunistic: false (no STARTTLS at all): set opportunistic: true, or encrypt: false' });
            }
          }),
        timeouts: z
          .object({
            connect: stepTimeout,
            greeting: stepTimeout,
            command: stepTimeout,
            /** RFC 5321 §4.5.3.2.5: writing the message fails only after this long without progress. */
            dataBlock: stepTimeout,
            /** RFC 5321 §4.5.3.2.6: from the end of the message (the "." or the last BDAT chunk) to the final reply. */
            data: stepTimeout,
            idle: timer,
          })
          .strict(),
        pool: z
          .object({
            /** Worker threads that render and sign; 0 = number of CPUs. */
            threads: z.number().int().nonnegative(),
            /** Tasks waiting per thread before callers wait for 'drain'. */
            queuePerThread: positiveInt,
            /** Nice values below the process that the threads run at (Linux); 0 = the process's priority. */
            nice: z.number().int().min(0).max(19),
          })
          .strict(),
        backoff: z
          .object({
            /** 421 / 4.7.x answers from one throttle scope within `window` that trigger backoff. */
            threshold: positiveInt,
            window: duration,
            /** First suspension; doubled with each slowdown level up to maxSuspend. */
            suspend: duration,
            maxSuspend: duration,
            /** Highest slowdown level: each trigger adds one, each level halves connections and rate. */
            maxLevel: positiveInt,
            /** Quiet time (good answers, no 421 / 4.7.x) that removes one slowdown level. */
            recoverAfter: duration,
            /** Rate given to a rule without one when it is slowed: msg/s per connection, before halving. */
            ratePerConnection: z.number().positive(),
          })
          .strict(),
      })
      .strict(),
    shaping: z
      .object({
        default: z.object(shapingFields).strict(),
        rules: z.array(shapingRule),
      })
      .strict(),
    tracking: z
      .object({
        /** The public server for open pixels, click redirects and one-click unsubscribe (role 'tracking'). */
        host,
        port,
        /** Base of every tracking URL put in mail, e.g. https://t.example.com (no trailing slash). */
        publicBaseUrl: z.string().regex(/^https?:\/\/[^\s/]+(\/[^\s]*)?[^/\s]$/, 'an http(s) URL without a trailing slash'),
        /** Take the client address from X-Forwarded-For (only behind a proxy you run). */
        trustProxy: z.boolean(),
        /** Connections open at once; beyond, new ones are closed. */
        maxClients: positiveInt,
        /** Connections open at once from one client (an IPv4 address, an IPv6 /64); 503 and closed beyond. */
        maxClientsPerIp: positiveInt,
        clientLimitExempt: exemptNetworks,
        /**
         * Nice value (0–19) of the thread that writes opens and clicks after their answer: above the
         * answering thread's 0, so on a busy machine the answers come first and the writes catch up
         * in larger batches. 0 = the same priority.
         */
        recorderNice: z.number().int().min(0).max(19),
        /**
         * HMAC keys of the tokens. New tokens are signed with `signWith`; a key with notAfter still
         * verifies until then (rotation). Secrets are read from files (at least 16 bytes).
         */
        keys: z.array(
          z
            .object({
              id: z.string().regex(/^[A-Za-z0-9_-]{1,16}$/, '1–16 letters, digits, _ or -'),
              secretFile: z.string().min(1),
              /** ISO date after which the key no longer verifies; null = no end. */
              notAfter: z.string().datetime({ offset: true }).nullable(),
            })
            .strict(),
        ),
        signWith: z.string().nullable(),
      })
      .strict(),
    webhooks: z
      .object({
        /** 32 random bytes sealing endpoint secrets at rest (AES-256-GCM); null = stored plain. */
        secretKeyFile: z.string().nullable(),
        /** A batch still failing this long after it was queued goes to the dead-letter list. */
        retryWindow: duration,
        retryBase: duration,
        retryMaxDelay: duration,
        timeout: timer,
        batchSize: positiveInt,
        perEndpointInFlight: positiveInt,
        /** Events an endpoint's outbox may hold; new batches beyond go straight to its dead-letter list. */
        maxOutbox: positiveInt,
        /** POSTs in flight per process, all endpoints together (each hanging one holds a slot up to `timeout`). */
        maxInFlight: positiveInt,
        pollInterval: timer,
        /** Let endpoints be on loopback, private or link-local addresses (off: refused at registration and at connect). */
        allowPrivateTargets: z.boolean(),
      })
      .strict(),
    lists: z
      .object({
        /** Largest contact import (HTTP body or file), in bytes: 413 / SLUICE_LIST_IMPORT_TOO_LARGE beyond. */
        maxImportBytes: size,
        /** Most data rows in one import (bad rows included): bounds the Redis memory one import can take. */
        maxImportRows: positiveInt,
      })
      .strict(),
    feedback: z
      .object({
        /** The inbound MX for the bounce domain(s): DSNs, ARF complaints, mailto unsubscribes. */
        host,
        port,
        /** PEM files for the opportunistic STARTTLS; both null = ingress.smtp's pair (its files, or the generated one). */
        tlsKey: z.string().nullable(),
        tlsCert: z.string().nullable(),
        /** Further bounce domains accepted besides delivery.bounceDomain (e.g. the previous one after a change). */
        extraBounceDomains: z.array(z.string().min(1)),
        /** Feedback-loop addresses that providers send ARF complaints to. */
        fblAddresses: z.array(z.string().min(3)),
        maxMessageSize: size,
        /** Bytes of feedback mail held in memory at once (received or awaiting processing); 452 4.3.1 beyond. */
        maxBuffered: size,
        /** Bytes of feedback mail kept in Redis at most (each for retention.rawBounces); 452 4.3.1 beyond. */
        maxStored: size,
        maxClients: positiveInt,
        maxClientsPerIp: positiveInt,
        clientLimitExempt: exemptNetworks,
        maxRecipients: positiveInt,
        socketTimeout: timer,
        /** A connection open this long is closed (421 4.4.2), mid-DATA or not: a trickling client never reaches socketTimeout. */
        sessionTimeout: timer,
        /** Soft bounces of one address within softBounceWindow that suppress it globally. */
        softBounceLimit: positiveInt,
        softBounceWindow: duration,
      })
      .strict()
      .superRefine((v, ctx) => {
        atLeastLargest(ctx, v.maxBuffered, v.maxMessageSize, 'maxMessageSize');
        atLeastLargest(ctx, v.maxStored, v.maxMessageSize, 'maxMessageSize', 'maxStored');
      }),
    reputation: z
      .object({
        /** Complaints / delivered above this ratio pause the sender (account or From domain). */
        complaintRate: z.number().min(0).max(1),
        /** Hard bounces / sent above this ratio pause the sender. */
        hardBounceRate: z.number().min(0).max(1),
        /** Senders with fewer sent in the window are never paused (a rate of few is noise). */
        minVolume: positiveInt,
        /** The rolling window (whole hours, 1h–168h). */
        window: duration,
        /** Deliveries are counted in memory and written this often. */
        countFlush: timer,
      })
      .strict(),
    retention: z
      .object({
        /** Delivery records and message metadata of finished messages. */
        records: duration,
        /** Events kept in the stream (approximate, trimmed by count). */
        eventsMaxLen: positiveInt,
        /** Events older than this are trimmed from the stream (by time, whatever the count). */
        events: duration,
        /** Raw feedback mail (bounces, complaints) is kept this long as evidence, then deleted. */
        rawBounces: duration,
        /** A closed account's data is deleted this long after `sluice account close`. */
        closedAccounts: duration,
        /** Audit log entries are kept this long… */
        audit: duration,
        /** …and at most about this many (XADD MAXLEN ~). */
        auditMaxLen: positiveInt,
        /** How often the housekeeping role runs one bounded retention step. */
        interval: timer,
        /** Keys examined per step (SCAN COUNT): bounds the work of one step. */
        scanCount: positiveInt.max(100_000),
      })
      .strict(),
    /**
     * Operators: keys with admin rights on the HTTP API (any account, named with ?account=ID).
     * A separate kind from accounts' keys (op_<id>_… vs sk_<account>_…).
     */
    operators: z.array(
      z
        .object({
          id: z.string().regex(ACCOUNT_ID, 'lower-case letters, digits, _ and -, at most 63'),
          /** scrypt hashes made by `sluice secret hash --operator-key ID`. */
          apiKeys: z.array(z.string().startsWith('scrypt$', 'must be a hash from `sluice secret hash`')),
        })
        .strict(),
    ),
    accounts: z.array(account),
  })
  .strict()
  // Two listeners of the roles that run on one port and overlapping addresses: refused here, with both
  // paths, instead of the second listen() failing with EADDRINUSE after other roles started.
  // `when`: checked even when other keys are wrong, so it is reported with them (listenersOf skips a
  // listener whose own host or port is wrong).
  .superRefine(
    (cfg, ctx) => {
      for (const clash of listenerClashes(listenersOf(cfg))) ctx.addIssue({ code: 'custom', path: clash.path, message: clash.message });
    },
    { when: () => true },
  );

export type ConfigInput = z.input<typeof configSchema>;
export type Config = z.output<typeof configSchema>;
export type AccountConfig = Config['accounts'][number];
export type ShapingDefaults = Config['shaping']['default'];
export type ShapingRule = Config['shaping']['rules'][number];
export type Role = Config['roles'][number];
