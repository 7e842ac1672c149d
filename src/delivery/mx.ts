import type { Resolver } from 'node:dns/promises';
import { createResolver } from '../core/dns-resolver.js';
import { isIP } from 'node:net';
import { ExpiringLru } from '../core/lru.js';
import { parseHostPort } from '../core/host-port.js';
import { addressScope } from '../core/public-address.js';
import { unmapIpv4 } from '../core/ip.js';
import { DnsClient, type MxAnswer } from './dns-query.js';

/**
 * Where mail for a domain goes (RFC 5321 §5.1), cached.
 *
 *   transport map hit (exact domain, else the longest '*.suffix', else '*') ─► that host:port
 *   MX records ─► one null MX "0 ." (RFC 7505)          ─► nullmx
 *              ─► sorted by preference, equal ones shuffled ─► A/AAAA of the first 2 × maxAddresses
 *                 exchanges ─► their first 2 × maxAddresses addresses ─► hosts
 *   no MX (NODATA) ─► A/AAAA of the domain itself (implicit MX) ─► hosts
 *   NXDOMAIN ─► nxdomain        SERVFAIL / timeout / refused ─► tempfail
 *   addresses of MX hosts (and of an implicit MX) that are this host, or private or reserved, are
 *   skipped (loopbackMx, privateMx): with no other ─► loopback (all were this host's) or private
 *
 *   each attempt: attemptHosts(hosts) ─► by preference, reshuffled within one, IPv4 first ─► the
 *                 first maxAddresses (Postfix's smtp_mx_address_limit); a transport route as it is
 *
 * The MX question goes through dns-query.ts (dns-packet over UDP, TCP for truncated answers),
 * because node's resolveMx() (c-ares) drops the records' TTL. Addresses come from node's Resolver,
 * whose resolve4/resolve6 give TTLs. Both ask the configured servers, else the system's, with the
 * same timeout and tries.
 *
 * A route lives for the shortest TTL among the MX records, the CNAMEs followed to them and the
 * addresses it contains (for an implicit MX: the domain's addresses), at least MIN_CACHE_TTL_MS and
 * at most maxCacheTtlMs. So a changed MX is seen once its old TTL has run out, even when the
 * exchanges' addresses have longer ones. NXDOMAIN and null MX are cached for negativeCacheTtlMs;
 * temporary failures are not cached.
 */

export interface RouteHost {
  /** IP (or name) to connect to. */
  host: string;
  port: number;
  /** MX name, for logs and shaping. */
  mx: string;
  /** The MX record's preference (0 for an implicit MX and the transport map). */
  pref: number;
}

export type Route =
  | {
      kind: 'hosts';
      /**
       * By MX preference (shuffled within a preference at lookup), each exchange's addresses IPv4
       * before IPv6: up to 2 × maxAddresses, of which attemptHosts() draws the ones an attempt tries.
       */
      hosts: RouteHost[];
      /** MX names, for shaping rules by provider. */
      mxHosts: string[];
      viaTransport: boolean;
    }
  | { kind: 'nullmx' }
  /** Every address of the MX hosts is this host's own (loopback, unspecified): see MxResolverOptions.loopbackMx. */
  | { kind: 'loopback'; hosts: string[] }
  /**
   * Every address of the MX hosts was skipped, and some are private or reserved (the rest this
   * host's): see MxResolverOptions.privateMx. `hosts` are the skipped exchanges, by preference.
   */
  | { kind: 'private'; hosts: string[] }
  | { kind: 'nxdomain' }
  | { kind: 'tempfail'; error: string };

export interface MxResolverOptions {
  /** DNS servers, 'ip' or 'ip:port' ('[v6]:port'); empty = the system's. */
  servers: readonly string[];
  timeoutMs: number;
  maxCacheTtlMs: number;
  negativeCacheTtlMs: number;
  /**
   * Lower-case domain, '*.domain' (its subdomains, not itself) or '*' → 'host:port'. An exact domain
   * wins, then the longest matching '*.domain', then '*'.
   */
  transport: Readonly<Record<string, string>>;
  /**
   * Addresses of MX hosts (or of an implicit MX) one delivery attempt tries at most, Postfix's
   * smtp_mx_address_limit (see attemptHosts). A transport map entry is the operator's own host: its
   * addresses are tried as resolved, up to TRANSPORT_MAX_ADDRESSES.
   */
  maxAddresses: number;
  /** Port of MX hosts (default 25). */
  port?: number;
  /**
   * Follow MX hosts (and implicit-MX domains) whose addresses are loopback or unspecified (127.0.0.0/8,
   * ::1, 0.0.0.0, ::). Default false, as Exim's ignore_target_hosts: a domain whose DNS points at
   * 127.0.0.1 would make Sluice hand its mail to whatever listens on this host's port 25. Such
   * addresses are skipped; a destination with no other is a 'loopback' route. The transport map is
   * not filtered: a smarthost on loopback is the operator's own choice.
   */
  loopbackMx?: boolean;
  /**
   * Follow MX hosts (and implicit-MX domains) whose addresses are private or reserved: RFC 1918,
   * link-local (169.254.169.254 is a cloud's instance metadata), shared CGNAT space, unique local and
   * link-local IPv6, multicast and reserved space, and IPv6 forms that carry such an IPv4 address (core/public-address.ts,
   * scope 'private'). Default false, as Exim's ignore_target_hosts: a domain an attacker controls
   * would otherwise make Sluice open SMTP sessions into the operator's network, and multicast or
   * reserved addresses never take mail. Such addresses are skipped; a destination with no other is a
   * 'private' route. Documentation ranges (192.0.2.0/24…) are followed: routed nowhere, nobody's
   * network. The transport map is not filtered. On for a Sluice inside a private network that relays
   * to internal MX hosts.
   */
  privateMx?: boolean;
  /** Clock in ms, for tests that step over a TTL (default Date.now). */
  now?: () => number;
}

const DEFAULT_PORT = 25;
// Addresses of a smarthost by name (transport map) tried per attempt: the operator's own host, so
// not bounded by maxAddresses, only so that a name with hundreds of addresses is no list to walk.
const TRANSPORT_MAX_ADDRESSES = 10;
// A TTL of 0 would mean one query per message; one second keeps a busy domain to one query a second.
const MIN_CACHE_TTL_MS = 1000;
// Bounds memory with millions of recipient domains (~200 bytes an entry → ~20 MB). Oldest go first.
const MAX_CACHE_ENTRIES = 100_000;

// Answers that prove a name has no records of the asked type (or does not exist at all).
const NO_DATA = new Set(['ENODATA', 'ENOTFOUND']);

type Addresses = { kind: 'ok'; ips: string[]; ttlMs: number } | { kind: 'none' } | { kind: 'tempfail'; error: string };

export class MxResolver {
  private readonly resolver: Resolver;
  private readonly dns: DnsClient;
  private readonly port: number;
  /**
   * Exchanges looked up, in preference order: two per address kept leaves room for names without
   * one. An MX answer may hold thousands (a 64 KB TCP answer): all of them were two queries each, at
   * once, and all were kept in the cached route.
   */
  private readonly maxExchanges: number;
  private readonly now: () => number;
  private readonly cache = new ExpiringLru<Route>(MAX_CACHE_ENTRIES);
  private readonly inflight = new Map<string, Promise<Route>>();
  /** delivery.transport as in force (setTransport replaces it). */
  private transport: Readonly<Record<string, string>>;
  /** Bumped by setTransport(): a lookup started under an older map is not cached. */
  private generation = 0;

  constructor(private readonly opts: MxResolverOptions) {
    this.resolver = createResolver(opts.servers, opts.timeoutMs);
    this.dns = new DnsClient({ servers: opts.servers, timeoutMs: opts.timeoutMs });
    this.port = opts.port ?? DEFAULT_PORT;
    this.maxExchanges = 2 * opts.maxAddresses;
    this.now = opts.now ?? Date.now;
    this.transport = opts.transport;
  }

  /**
   * A reloaded transport map: every cached route is dropped (a route of the old map, or an MX route
   * of a domain the new map sends elsewhere, must not outlive it). A lookup running now finishes
   * for its own callers with the map it started with, but is neither cached nor given to a caller
   * after the reload (the generation tells).
   */
  setTransport(transport: Readonly<Record<string, string>>): void {
    this.transport = transport;
    this.generation++;
    this.inflight.clear();
    this.cache.clear();
  }

  /** Never rejects: a failure is a `tempfail` route. */
  async resolve(domain: string): Promise<Route> {
    const name = domain.trim().toLowerCase().replace(/\.$/, '');
    if (name === '') return { kind: 'nxdomain' };

    const cached = this.cache.get(name, this.now());
    if (cached) return cached;
    const running = this.inflight.get(name);
    if (running) return running;

    const generation = this.generation;
    const lookup: Promise<Route> = this.lookup(name)
      .catch((err: unknown): { route: Route; ttlMs: number } => ({ route: { kind: 'tempfail', error: describe(err) }, ttlMs: 0 }))
      .then(({ route, ttlMs }) => {
        if (this.inflight.get(name) === lookup) this.inflight.delete(name);
        // Started under a transport map since replaced: its route is not the new map's to keep.
        if (generation !== this.generation) return route;
        if (ttlMs > 0) this.cache.set(name, route, this.now() + ttlMs);
        else this.cache.delete(name);
        return route;
      });
    this.inflight.set(name, lookup);
    return lookup;
  }

  /** A route and how long it may be cached (0 = not at all: temporary failures are retried). */
  private async lookup(domain: string): Promise<{ route: Route; ttlMs: number }> {
    const target = this.transportTarget(domain);
    if (target !== undefined) return this.viaTransport(target);

    let answer: MxAnswer;
    try {
      answer = await this.dns.resolveMx(domain);
    } catch (err) {
      return { route: { kind: 'tempfail', error: `MX ${domain}: ${describe(err)}` }, ttlMs: 0 };
    }
    if (answer.rcode === 'NXDOMAIN') return this.negative({ kind: 'nxdomain' });
    // The MX answer's TTL (and its CNAMEs'); a NODATA answer without a CNAME carries none.
    const mxTtlMs = answer.ttlMs ?? this.opts.maxCacheTtlMs;

    if (answer.records.length === 0) {
      // RFC 5321 §5.1: no MX, so the domain itself is the host (implicit MX, preference 0).
      const addrs = await this.addresses(domain);
      if (addrs.kind === 'tempfail') return { route: { kind: 'tempfail', error: addrs.error }, ttlMs: 0 };
      if (addrs.kind === 'none') return this.negative({ kind: 'nxdomain' });
      const { ips, anyPrivate } = this.followed(addrs.ips);
      if (ips.length === 0) return this.negative({ kind: anyPrivate ? 'private' : 'loopback', hosts: [domain] });
      return this.hosts([{ mx: domain, pref: 0, ips }], [domain], false, Math.min(mxTtlMs, addrs.ttlMs));
    }

    // RFC 7505 §3: a null MX is the single record "0 ." (dns-packet gives the root as '.'). A domain
    // that mixes it with real MX records is misconfigured; the real ones are still worth trying.
    const real = answer.records.filter((r) => r.exchange !== '.');
    if (real.length === 0) return this.negative({ kind: 'nullmx' });

    const ordered = shuffle(real).sort((a, b) => a.priority - b.priority); // sort is stable: ties stay shuffled
    // An exchange listed twice keeps its first (best) preference.
    const prefs = new Map<string, number>();
    for (const r of ordered) {
      const name = r.exchange.toLowerCase().replace(/\.$/, '');
      if (!prefs.has(name)) prefs.set(name, r.priority);
    }
    const all = [...prefs.keys()];
    const names = all.slice(0, this.maxExchanges);
    const resolved = await Promise.all(names.map((mx) => this.addresses(mx)));

    const found: { mx: string; pref: number; ips: string[] }[] = [];
    // Exchanges whose addresses were all skipped, and whether any of those was private or reserved.
    const skipped: string[] = [];
    let anyPrivate = false;
    let ttlMs = mxTtlMs;
    let failure: string | null = null;
    resolved.forEach((addrs, i) => {
      if (addrs.kind === 'ok') {
        const kept = this.followed(addrs.ips);
        if (kept.ips.length > 0) found.push({ mx: names[i] as string, pref: prefs.get(names[i] as string) ?? 0, ips: kept.ips });
        else {
          skipped.push(names[i] as string);
          anyPrivate ||= kept.anyPrivate;
        }
        ttlMs = Math.min(ttlMs, addrs.ttlMs);
      } else if (addrs.kind === 'tempfail') failure ??= addrs.error;
    });
    // Exchanges that are all this host: nothing to deliver to (Postfix: "mail loops back to myself").
    // With a private or reserved address among them, that is what the route is about.
    if (found.length === 0 && failure === null && skipped.length > 0 && all.length === names.length) return this.negative({ kind: anyPrivate ? 'private' : 'loopback', hosts: skipped });
    if (found.length === 0) {
      // Every exchange failed. A lookup that might work later defers; exchanges that do not exist at
      // all leave no host to try, which is final (Postfix: "Host or domain name not found").
      if (failure !== null) return { route: { kind: 'tempfail', error: failure }, ttlMs: 0 };
      // Exchanges left unasked might have addresses: not proof that there is no host.
      if (all.length > names.length) return { route: { kind: 'tempfail', error: `MX ${domain}: none of the first ${names.length} of ${all.length} exchanges has an address` }, ttlMs: 0 };
      return this.negative({ kind: 'nxdomain' });
    }
    return this.hosts(found, names, false, ttlMs);
  }

  /**
   * `ips` without this host's own addresses (loopback, unspecified) unless options.loopbackMx, and
   * without private or reserved ones unless options.privateMx; `anyPrivate` when one of those was
   * skipped (a skipped exchange that is not all this host's is a private route, not a loop).
   */
  private followed(ips: readonly string[]): { ips: string[]; anyPrivate: boolean } {
    const kept: string[] = [];
    let anyPrivate = false;
    for (const ip of ips) {
      const scope = addressScope(ip);
      if (scope === 'loopback' && this.opts.loopbackMx !== true) continue;
      if (scope === 'private' && this.opts.privateMx !== true) {
        anyPrivate = true;
        continue;
      }
      kept.push(ip);
    }
    return { ips: kept, anyPrivate };
  }

  /** The transport map's entry for a domain: exact, then '*.parent' from the nearest parent up, then '*'. */
  private transportTarget(domain: string): string | undefined {
    // Own keys only: a domain named 'constructor' must not find Object.prototype's.
    const map = this.transport;
    if (Object.hasOwn(map, domain)) return map[domain];
    for (let dot = domain.indexOf('.'); dot !== -1; dot = domain.indexOf('.', dot + 1)) {
      const key = `*${domain.slice(dot)}`;
      if (Object.hasOwn(map, key)) return map[key];
    }
    return Object.hasOwn(map, '*') ? map['*'] : undefined;
  }

  private async viaTransport(target: string): Promise<{ route: Route; ttlMs: number }> {
    const { host, port } = parseHostPort(target, this.port);
    if (isIP(host) !== 0) {
      return { route: { kind: 'hosts', hosts: [{ host, port, mx: host, pref: 0 }], mxHosts: [host], viaTransport: true }, ttlMs: this.opts.maxCacheTtlMs };
    }
    // A smarthost by name: its addresses, never its MX (Postfix's [host] form).
    const addrs = await this.addresses(host);
    if (addrs.kind === 'tempfail') return { route: { kind: 'tempfail', error: addrs.error }, ttlMs: 0 };
    if (addrs.kind === 'none') return { route: { kind: 'tempfail', error: `transport host ${host} has no address` }, ttlMs: 0 };
    return this.hosts([{ mx: host, pref: 0, ips: addrs.ips }], [host], true, addrs.ttlMs, port);
  }

  /**
   * The addresses one delivery attempt tries, in order: by preference, those of one preference in a
   * fresh random order each attempt (IPv4 before IPv6), at most maxAddresses; a transport map route
   * as it is. The route is cached for its TTL (up to an hour), so the order drawn at lookup alone
   * would send every attempt of that time to the same first addresses, dead ones included, and never
   * to the rest of their preference (Postfix shuffles at each delivery: smtp_randomize_addresses).
   */
  attemptHosts(route: Extract<Route, { kind: 'hosts' }>): RouteHost[] {
    if (route.viaTransport) return route.hosts;
    const family = (h: RouteHost): number => (isIP(h.host) === 6 ? 1 : 0);
    // sort is stable: the shuffle decides the order within a preference and address family.
    return shuffle(route.hosts)
      .sort((a, b) => a.pref - b.pref || family(a) - family(b))
      .slice(0, this.opts.maxAddresses);
  }

  /** The route of `found`'s addresses in order, at most 2 × maxAddresses (TRANSPORT_MAX_ADDRESSES via the transport map). */
  private hosts(found: { mx: string; pref: number; ips: string[] }[], mxHosts: string[], viaTransport: boolean, ttlMs: number, port = this.port): { route: Route; ttlMs: number } {
    // Twice what one attempt tries: the attempts' draws within a preference have more to choose from.
    const limit = viaTransport ? TRANSPORT_MAX_ADDRESSES : 2 * this.opts.maxAddresses;
    const hosts = found.flatMap(({ mx, pref, ips }) => ips.map((ip) => ({ host: ip, port, mx, pref }))).slice(0, limit);
    const capped = Math.max(MIN_CACHE_TTL_MS, Math.min(ttlMs, this.opts.maxCacheTtlMs));
    return { route: { kind: 'hosts', hosts, mxHosts, viaTransport }, ttlMs: capped };
  }

  private negative(route: Route): { route: Route; ttlMs: number } {
    return { route, ttlMs: this.opts.negativeCacheTtlMs };
  }

  /** A and AAAA of one name, IPv4 first (IPv6 reputation and routes are the rarer of the two). */
  private async addresses(name: string): Promise<Addresses> {
    // An IPv4-mapped IPv6 address is the IPv4 address it holds: a connection to it is IPv4, and
    // takes delivery.bindAddress, not bindAddress6 (bind.ts sourceFor goes by the address's family).
    // The resolver writes one as ::ffff:a.b.c.d whatever the answer's bytes (inet_ntop).
    if (isIP(name) !== 0) return { kind: 'ok', ips: [unmapIpv4(name)], ttlMs: this.opts.maxCacheTtlMs }; // an IP literal as MX: wrong, but common
    const [v4, v6] = await Promise.allSettled([this.resolver.resolve4(name, { ttl: true }), this.resolver.resolve6(name, { ttl: true })]);
    const records = [...(v4.status === 'fulfilled' ? v4.value : []), ...(v6.status === 'fulfilled' ? v6.value : [])];
    if (records.length > 0) {
      return { kind: 'ok', ips: records.map((r) => unmapIpv4(r.address)), ttlMs: Math.min(...records.map((r) => r.ttl * 1000)) };
    }
    for (const r of [v4, v6]) {
      if (r.status === 'rejected' && !NO_DATA.has((r.reason as { code?: string }).code ?? '')) {
        return { kind: 'tempfail', error: `A/AAAA ${name}: ${describe(r.reason)}` };
      }
    }
    return { kind: 'none' };
  }
}

function shuffle<T>(items: readonly T[]): T[] {
  const out = [...items];
  for (let i = out.length - 1; i > 0; i--) {
    const j = Math.floor(Math.random() * (i + 1));
    [out[i], out[j]] = [out[j] as T, out[i] as T];
  }
  return out;
}

function describe(err: unknown): string {
  const e = err as { code?: string; message?: string };
  return e?.code ?? e?.message ?? String(err);
}
