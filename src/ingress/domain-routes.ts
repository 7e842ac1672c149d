import type { Account } from '../accounts/registry.js';
import { checkBounceDomain, checkSendingDomain, tally, type DnsLookup, type DomainCheck } from '../accounts/domain-check.js';
import { dnsRecord } from '../core/dkim-record.js';
import { normaliseDomain } from '../core/address.js';
import { SluiceError } from '../core/errors.js';
import type { DkimKeyMaterial } from '../accounts/registry.js';
import { decodeSegment, methodNotAllowed, type RouteAnswer } from './http-route.js';

/**
 * The account's sending domains, and what receivers find about them in DNS (accounts/domain-check.ts,
 * as `sluice domain check` does), so a customer can publish its records and see them take effect:
 *
 *   GET /v1/domains          → 200 { domains: [{ domain, dkim: [{ selector, algorithm, name, record }],
 *                              returnPath }], bounceDomain }: the TXT record to publish at `name` for
 *                              each key, and the domain's own envelope sender domain (null: bounceDomain)
 *   GET /v1/domains/:domain  → 200 { domain, checks, bounceDomain: { domain, checks }, failed, warnings,
 *                              checkedAt }: the checks as of checkedAt, bounceDomain being the domain's
 *                              return path or delivery's; 404 for a domain the account does not send
 *                              for (another account's is answered the same)
 *
 * A domain's result is kept CACHE_MS, and so is the bounce domain's (shared by every account): a
 * client polling for its records to appear does not turn into DNS traffic, and concurrent asks share
 * one lookup. A key rotated by a reload is checked when its domain's result is next renewed.
 */
export interface DomainRouteDeps {
  /** The caller's account (throws SLUICE_AUTH_* when there is none). */
  authenticate(): Promise<Account>;
  /** The accounts' keys of those domains, read from their files (AccountRegistry.readDkimKeys). */
  readDkimKeys(domains: ReadonlySet<string>): DkimKeyMaterial[];
  readonly dns: DnsLookup;
  /** delivery.bounceDomain. */
  readonly bounceDomain: string;
  /** A sending domain's own return-path domain (accounts' returnPath), else undefined: it uses bounceDomain. */
  returnPathOf(domain: string): string | undefined;
  /** Addresses SPF is evaluated for (publicSourceAddresses). */
  readonly addresses: readonly string[];
  readonly now?: (() => number) | undefined;
}

/** How long a check's result is answered again before DNS is asked anew. */
export const CACHE_MS = 60_000;
/** At most this many results are kept (each is a few KB); the oldest go first. */
const CACHE_MAX = 10_000;

const COLLECTION = '/v1/domains';
const ITEM = /^\/v1\/domains\/([^/]+)$/;

export interface DomainRoutes {
  /** Answers a /v1/domains route; undefined when the path is not one of them. */
  route(method: string, path: string, deps: DomainRouteDeps): Promise<RouteAnswer | undefined>;
}

/**
 * The keys of those domains; a key file that cannot be read is the operator's to fix (`sluice config
 * check` names it): the API says so without the server's paths.
 */
function keysOf(deps: DomainRouteDeps, domains: ReadonlySet<string>): DkimKeyMaterial[] {
  try {
    return deps.readDkimKeys(domains);
  } catch (err) {
    throw new SluiceError('SLUICE_DKIM_KEY_INVALID', 'A DKIM key of this account cannot be loaded on the server; the operator can find it with sluice config check', { cause: err });
  }
}

export function createDomainRoutes(): DomainRoutes {
  /** "d:<domain>" and "b:<bounce domain>" → the checks being made or made at `at`. */
  const cache = new Map<string, { at: number; checks: Promise<DomainCheck[]> }>();

  const cached = (key: string, now: number, run: () => Promise<DomainCheck[]>): { at: number; checks: Promise<DomainCheck[]> } => {
    const hit = cache.get(key);
    if (hit && now - hit.at < CACHE_MS) return hit;
    const entry = { at: now, checks: run() };
    // A failure is not kept: the next ask tries again.
    entry.checks.catch(() => {
      if (cache.get(key) === entry) cache.delete(key);
    });
    cache.delete(key);
    cache.set(key, entry);
    if (cache.size > CACHE_MAX) cache.delete(cache.keys().next().value as string);
    return entry;
  };

  return {
    async route(method, path, deps) {
      if (path !== COLLECTION && !ITEM.test(path)) return undefined;
      if (method !== 'GET') throw methodNotAllowed('GET');
      const account = await deps.authenticate();
      if (path === COLLECTION) {
        const keys = keysOf(deps, account.domains);
        const domains = [...account.domains].map((domain) => ({
          domain,
          dkim: keys.filter((k) => k.domain === domain).map((k) => ({ selector: k.selector, algorithm: k.algorithm, name: `${k.selector}._domainkey.${domain}`, record: dnsRecord(k.privateKeyPem, k.algorithm) })),
          returnPath: deps.returnPathOf(domain) ?? null,
        }));
        return { status: 200, body: { domains, bounceDomain: deps.bounceDomain } };
      }
      const domain = normaliseDomain(decodeSegment((ITEM.exec(path) as RegExpExecArray)[1] as string));
      if (!domain || !account.domains.has(domain)) throw new SluiceError('SLUICE_INGRESS_NOT_FOUND', 'No such domain: the account does not send for it');
      const now = (deps.now ?? Date.now)();
      const own = cached(`d:${domain}`, now, async () => checkSendingDomain(deps.dns, domain, keysOf(deps, new Set([domain])), deps.returnPathOf(domain)));
      const envelope = deps.returnPathOf(domain) ?? deps.bounceDomain;
      const bounce = cached(`b:${envelope}`, now, () => checkBounceDomain(deps.dns, envelope, deps.addresses));
      const [checks, bounceChecks] = await Promise.all([own.checks, bounce.checks]);
      const { failed, warnings } = tally([...checks, ...bounceChecks]);
      return {
        status: 200,
        body: { domain, checks, bounceDomain: { domain: envelope, checks: bounceChecks }, failed, warnings, checkedAt: new Date(Math.min(own.at, bounce.at)).toISOString() },
      };
    },
  };
}
