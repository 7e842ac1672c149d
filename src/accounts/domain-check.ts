import { createResolver } from '../core/dns-resolver.js';
import { dnsRecord } from '../core/dkim-record.js';
import type { DkimKeyMaterial } from './registry.js';
import { isIP } from 'node:net';
import { isPublicAddress } from '../core/public-address.js';
import { evaluateSpf, MAX_SPF_LOOKUPS, onceEach, spfRecords, type Answer, type SpfDns } from './spf.js';

/**
 * What receivers will find in DNS about the domains Sluice sends for (`sluice domain check`): the
 * records a new sending domain needs before its mail is trusted, read as a receiver reads them.
 *
 *   sending domain   DKIM   each configured key at <selector>._domainkey.<domain>: published, and
 *                           this key (p= is the private key's public half), of its type (k=),
 *                           usable for mail (s=) with SHA-256 (h=), not revoked (empty p=); t=y
 *                           and extra key records are warned about
 *                    DMARC  _dmarc.<domain>, else the nearest parent's (two labels at least, no
 *                           public-suffix list): one record, a valid p= (sp= for a parent's). None
 *                           is a warning: Gmail and Yahoo require one of bulk senders. Sluice
 *                           signs with d=<domain>, so DKIM aligns strictly and relaxed.
 *   bounce domain    MX     the VERP envelope sender's domain: receivers refuse MAIL FROM of a
 *                           domain that does not resolve, and bounces and complaints come back
 *                           through its MX. Missing or null MX is a failure; A/AAAA only, a warning
 *                    SPF    the envelope sender's SPF: one v=spf1 record (two are a permerror for
 *                           every message), within receivers' limits (spf.ts); none is a warning.
 *                           Each known sending address evaluated: fail fails, softfail/neutral warn.
 *
 * Failures make mail fail authentication or be refused; warnings cost deliverability. Nothing here
 * writes anything: it only asks DNS (delivery.dns.servers, else the system's resolvers).
 */
export type CheckStatus = 'ok' | 'warn' | 'fail';

export interface DomainCheck {
  readonly check: 'dkim' | 'dmarc' | 'mx' | 'spf';
  /** The DNS name asked. */
  readonly name: string;
  readonly status: CheckStatus;
  readonly detail: string;
  /** DKIM: the key checked. */
  readonly selector?: string;
  readonly algorithm?: string;
  /** SPF: the sending address evaluated. */
  readonly address?: string;
  /** The records found there, as published (TXT strings joined). */
  readonly found?: readonly string[];
  /** DKIM: the record to publish for this key. */
  readonly expected?: string;
}

export interface DomainReport {
  readonly domain: string;
  /** `sending`: an account's domain (account set); `bounce`: the VERP envelope sender's domain. */
  readonly kind: 'sending' | 'bounce';
  readonly account?: string;
  readonly checks: readonly DomainCheck[];
}

export type { Answer };

export interface DnsLookup extends SpfDns {
  /** TXT records, each one's strings joined (RFC 6376 §3.6.2.2, RFC 7208 §3.3). */
  txt(name: string): Promise<Answer<string>>;
  mx(name: string): Promise<Answer<{ exchange: string; priority: number }>>;
  /** A and AAAA addresses together. */
  addresses(name: string): Promise<Answer<string>>;
}

/** The resolvers of delivery.dns (servers by address; empty = the system's), with its timeout. */
export function createDnsLookup(servers: readonly string[], timeoutMs: number): DnsLookup {
  const resolver = createResolver(servers, timeoutMs);
  const ask = async <T>(q: () => Promise<T[]>): Promise<Answer<T>> => {
    try {
      const records = await q();
      return records.length === 0 ? { ok: false, why: 'nodata', message: 'no records' } : { ok: true, records };
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOTFOUND') return { ok: false, why: 'nxdomain', message: 'the name does not exist (NXDOMAIN)' };
      if (code === 'ENODATA') return { ok: false, why: 'nodata', message: 'no records of that type' };
      return { ok: false, why: 'error', message: `${code ?? 'error'}: ${(err as Error).message}` };
    }
  };
  return {
    txt: (name) => ask(async () => (await resolver.resolveTxt(name)).map((chunks) => chunks.join(''))),
    mx: (name) => ask(() => resolver.resolveMx(name)),
    ips: (name, family) => ask(() => (family === 4 ? resolver.resolve4(name) : resolver.resolve6(name))),
    addresses: async (name) => {
      const [a, aaaa] = await Promise.all([ask(() => resolver.resolve4(name)), ask(() => resolver.resolve6(name))]);
      if (a.ok || aaaa.ok) return { ok: true, records: [...(a.ok ? a.records : []), ...(aaaa.ok ? aaaa.records : [])] };
      // An error on either is an error (not "no address"); else the name's own answer.
      return a.why === 'error' ? a : aaaa.why === 'error' ? aaaa : a;
    },
  };
}

/**
 * A tag-list (RFC 6376 §3.2, the syntax DMARC shares): `tag=value` pairs separated by ';', white
 * space around them ignored, names case-sensitive. Null when malformed or a tag repeats (the record
 * is then invalid, as a verifier sees it).
 */
export function parseTagList(record: string): Map<string, string> | null {
  const tags = new Map<string, string>();
  for (const part of record.split(';')) {
    if (part.trim() === '') continue;
    const eq = part.indexOf('=');
    if (eq === -1) return null;
    const name = part.slice(0, eq).trim();
    if (!/^[A-Za-z][A-Za-z0-9_]*$/.test(name) || tags.has(name)) return null;
    tags.set(name, part.slice(eq + 1).trim());
  }
  return tags;
}

/** Whether v= is absent or first and equal to `version` (a record whose v= is elsewhere is invalid). */
function versionOk(tags: Map<string, string>, version: string, required: boolean): boolean {
  const first = tags.keys().next().value;
  if (!tags.has('v')) return !required;
  return first === 'v' && tags.get('v') === version;
}

/** Base64 with the white space DNS zone files and providers' consoles leave in it removed. */
const compact = (b64: string): string => b64.replace(/\s+/g, '');

/** What is wrong with a DKIM key record for `key`, or null when it is this key and usable. */
function keyRecordProblem(tags: Map<string, string>, key: DkimKeyMaterial, expectedP: string): string | null {
  const p = compact(tags.get('p') ?? '');
  if (p === '') return 'the key is revoked (p= is empty)';
  const k = tags.get('k') ?? 'rsa';
  if (k !== key.algorithm) return `k=${k}, but this key is ${key.algorithm} (k=${key.algorithm})`;
  const h = tags.get('h');
  if (h !== undefined && !h.split(':').map((x) => x.trim()).includes('sha256')) return `h=${h} does not allow sha256`;
  const s = tags.get('s');
  if (s !== undefined && !s.split(':').map((x) => x.trim()).some((x) => x === 'email' || x === '*')) return `s=${s} does not allow email`;
  if (p !== expectedP) return "p= is another key: not this private key's public half (an old key, or another selector's)";
  return null;
}

export async function checkDkimKey(dns: DnsLookup, key: DkimKeyMaterial): Promise<DomainCheck> {
  const name = `${key.selector}._domainkey.${key.domain}`;
  const expected = dnsRecord(key.privateKeyPem, key.algorithm);
  const expectedP = parseTagList(expected)?.get('p') as string;
  const base = { check: 'dkim' as const, name, selector: key.selector, algorithm: key.algorithm, expected };
  const answer = await dns.txt(name);
  if (!answer.ok) {
    if (answer.why === 'error') return { ...base, status: 'fail', detail: `the lookup failed (${answer.message}); receivers that meet the same cannot verify the signature` };
    return { ...base, status: 'fail', detail: `nothing is published at ${name}: publish the expected record` };
  }
  const found = answer.records;
  const keyRecords = found.map(parseTagList).filter((t): t is Map<string, string> => t !== null && t.has('p') && versionOk(t, 'DKIM1', false));
  if (keyRecords.length === 0) return { ...base, found, status: 'fail', detail: `no DKIM key record among the TXT records at ${name} (one with p=, and v=DKIM1 first if v= is there)` };
  const problems = keyRecords.map((t) => keyRecordProblem(t, key, expectedP));
  const good = keyRecords.filter((_, i) => problems[i] === null);
  if (good.length === 0) return { ...base, found, status: 'fail', detail: [...new Set(problems)].join('; ') };
  if (keyRecords.length > 1) {
    return { ...base, found, status: 'warn', detail: `${keyRecords.length} key records at ${name}: a verifier may use any one of them, so some mail fails; keep only this key's` };
  }
  if ((good[0]?.get('t') ?? '').split(':').map((x) => x.trim()).includes('y')) {
    return { ...base, found, status: 'warn', detail: 't=y: the domain says it is testing DKIM, and receivers may treat a failing signature as no signature; remove t=y once mail verifies' };
  }
  return { ...base, found, status: 'ok', detail: 'publishes this key' };
}

/** The names whose _dmarc record governs `domain`: itself, then its parents down to two labels. */
function dmarcCandidates(domain: string): string[] {
  const labels = domain.split('.');
  const out: string[] = [];
  for (let i = 0; i <= labels.length - 2; i++) out.push(labels.slice(i).join('.'));
  return out.length > 0 ? out : [domain];
}

const DMARC_POLICIES = new Set(['none', 'quarantine', 'reject']);

/** `returnPath`: the domain's own envelope sender domain, when it has one (SPF then aligns too). */
export async function checkDmarc(dns: DnsLookup, domain: string, returnPath?: string): Promise<DomainCheck> {
  for (const at of dmarcCandidates(domain)) {
    const name = `_dmarc.${at}`;
    const answer = await dns.txt(name);
    if (!answer.ok) {
      if (answer.why === 'error') return { check: 'dmarc', name, status: 'warn', detail: `the lookup failed (${answer.message})` };
      continue;
    }
    // RFC 7489 §6.6.3: records that do not start with v=DMARC1 are discarded.
    const records = answer.records.filter((r) => /^v\s*=\s*DMARC1\s*(;|$)/.test(r));
    if (records.length === 0) continue;
    const found = answer.records;
    if (records.length > 1) return { check: 'dmarc', name, found, status: 'warn', detail: `${records.length} DMARC records at ${name}: receivers apply none of them; keep one` };
    const tags = parseTagList(records[0] as string);
    const inherited = at !== domain;
    const policy = tags === null ? undefined : inherited ? (tags.get('sp') ?? tags.get('p')) : tags.get('p');
    if (tags === null || policy === undefined || !DMARC_POLICIES.has(policy)) {
      return { check: 'dmarc', name, found, status: 'warn', detail: `the record at ${name} is invalid (${tags === null ? 'malformed tag list' : 'p= must be none, quarantine or reject'}): receivers apply no policy` };
    }
    const from = inherited ? ` (the policy of ${at}${tags.has('sp') ? ' for its subdomains, sp=' : ', p='}${policy})` : '';
    const spf = returnPath ? `, and its envelope sender's domain ${returnPath} aligns SPF` : '; SPF does not align (the envelope sender is the bounce domain; a returnPath under the domain would)';
    const detail = `p=${policy}${from}${policy === 'none' ? ': monitoring only, nothing is refused' : ''}; Sluice signs with d=${domain}, so its DKIM signatures align${spf}`;
    return { check: 'dmarc', name, found, status: 'ok', detail };
  }
  return {
    check: 'dmarc', name: `_dmarc.${domain}`, status: 'warn',
    detail: `no DMARC record at _dmarc.${domain} or a parent's: Gmail and Yahoo require one of bulk senders; publish at least "v=DMARC1; p=none"`,
  };
}

export async function checkBounceMx(dns: DnsLookup, domain: string): Promise<DomainCheck> {
  const answer = await dns.mx(domain);
  if (answer.ok) {
    // RFC 7505: a single MX of preference 0 and exchange "." (node gives '') accepts no mail.
    if (answer.records.some((r) => r.exchange === '' || r.exchange === '.')) {
      return { check: 'mx', name: domain, status: 'fail', detail: 'null MX (RFC 7505): bounces and complaints to the VERP address cannot come back' };
    }
    const found = [...answer.records].sort((a, b) => a.priority - b.priority).map((r) => `${r.priority} ${r.exchange}`);
    return { check: 'mx', name: domain, found, status: 'ok', detail: `bounces and complaints come back through ${found.join(', ')}: point it at the feedback role's MX (feedback.port 25)` };
  }
  if (answer.why === 'error') return { check: 'mx', name: domain, status: 'fail', detail: `the lookup failed (${answer.message})` };
  if (answer.why === 'nxdomain') {
    return { check: 'mx', name: domain, status: 'fail', detail: 'the domain does not exist: receivers refuse MAIL FROM of a domain that does not resolve, and bounces cannot come back' };
  }
  const addresses = await dns.addresses(domain);
  if (addresses.ok) {
    return { check: 'mx', name: domain, found: addresses.records, status: 'warn', detail: `no MX; mail for it goes to its address (${addresses.records.join(', ')}, RFC 5321 §5.1): publish an MX for the feedback role` };
  }
  return { check: 'mx', name: domain, status: 'fail', detail: 'no MX and no address: receivers refuse MAIL FROM of a domain that does not resolve, and bounces cannot come back' };
}

/** An address no host sends from (TEST-NET-1, RFC 5737): evaluated for it, the whole record is walked, so its errors and lookups show. */
const PROBE_IP = '192.0.2.1';

/**
 * The envelope sender domain's SPF: its record (one; a permerror for any address, such as more than
 * 10 DNS-querying terms, fails), then, for each address Sluice sends from that is known, whether
 * receivers would find it allowed (evaluateSpf, as for MAIL FROM <b-…@domain>).
 */
export async function checkSpf(lookup: DnsLookup, domain: string, addresses: readonly string[]): Promise<DomainCheck[]> {
  // The record is read here to be shown, then evaluated once per address: each name asked once.
  const dns = onceEach(lookup);
  const answer = await dns.txt(domain);
  if (!answer.ok && answer.why === 'error') return [{ check: 'spf', name: domain, status: 'warn', detail: `the lookup failed (${answer.message})` }];
  const found = answer.ok ? answer.records : [];
  const spf = spfRecords(found);
  const sample = addresses.length > 0 ? addresses.join(', ') : '<sending addresses>';
  if (spf.length === 0) {
    return [{ check: 'spf', name: domain, ...(found.length > 0 ? { found } : {}), status: 'warn', detail: `no SPF record: receivers find SPF "none" for MAIL FROM <…@${domain}>; publish "v=spf1 ip4:${sample} -all"` }];
  }
  if (spf.length > 1) return [{ check: 'spf', name: domain, found, status: 'fail', detail: `${spf.length} SPF records: every message's SPF is a permerror (RFC 7208 §4.5); merge them into one` }];
  const sender = `postmaster@${domain}`;
  const probe = await evaluateSpf(dns, PROBE_IP, sender);
  if (probe.result === 'permerror') return [{ check: 'spf', name: domain, found, status: 'fail', detail: `the record is a permerror for every message: ${probe.reason}` }];
  const record: DomainCheck = probe.result === 'temperror'
    ? { check: 'spf', name: domain, found, status: 'warn', detail: `a lookup it needs failed: ${probe.reason}` }
    : probe.ptr
      ? { check: 'spf', name: domain, found, status: 'warn', detail: `one SPF record, ${probe.lookups} of ${MAX_SPF_LOOKUPS} DNS-querying terms; it uses ptr, which is deprecated and slow (RFC 7208 §5.5; not evaluated here)` }
      : { check: 'spf', name: domain, found, status: 'ok', detail: `one SPF record, ${probe.lookups} of ${MAX_SPF_LOOKUPS} DNS-querying terms${addresses.length === 0 ? ' (not evaluated for the sending addresses: none is configured; give --ip ADDRESS, the address receivers see)' : ''}` };
  const perAddress = await Promise.all(addresses.map(async (ip): Promise<DomainCheck> => {
    const r = await evaluateSpf(dns, ip, sender);
    const status: CheckStatus = r.result === 'pass' ? 'ok' : r.result === 'fail' || r.result === 'permerror' ? 'fail' : 'warn';
    const fix = r.result === 'pass' ? '' : `; add ${isIP(ip) === 6 ? 'ip6' : 'ip4'}:${ip} to the record`;
    return { check: 'spf', name: domain, address: ip, status, detail: `${ip}: ${r.result} (${r.reason})${fix}` };
  }));
  return [record, ...perAddress];
}

/**
 * The configured source addresses receivers see, for SPF: delivery.bindAddress(6) and the shaping
 * rules' that are public (a private one is translated on its way out; its SPF verdict says nothing).
 */
export function publicSourceAddresses(delivery: { readonly bindAddress: string | null; readonly bindAddress6: string | null }, rules: readonly { readonly bindAddress?: string | undefined; readonly bindAddress6?: string | undefined }[]): string[] {
  const all = [delivery.bindAddress, delivery.bindAddress6, ...rules.flatMap((r) => [r.bindAddress, r.bindAddress6])];
  return [...new Set(all.filter((a): a is string => typeof a === 'string' && isPublicAddress(a)))];
}

/** A sending domain's own checks: each key's DKIM record (a domain without a key fails), and DMARC. */
export async function checkSendingDomain(dns: DnsLookup, domain: string, keys: readonly DkimKeyMaterial[], returnPath?: string): Promise<DomainCheck[]> {
  const dkim: DomainCheck[] = keys.length > 0
    ? await Promise.all(keys.map((k) => checkDkimKey(dns, k)))
    : [{ check: 'dkim', name: `_domainkey.${domain}`, status: 'fail', detail: 'no DKIM key configured: its mail goes unsigned and fails DMARC (the envelope sender is the bounce domain); `sluice dkim keygen`' }];
  return [...dkim, await checkDmarc(dns, domain, returnPath)];
}

/** The bounce domain's checks: MX, SPF (and SPF for each sending address). */
export async function checkBounceDomain(dns: DnsLookup, domain: string, addresses: readonly string[]): Promise<DomainCheck[]> {
  return [await checkBounceMx(dns, domain), ...(await checkSpf(dns, domain, addresses))];
}

export interface DomainCheckInput {
  /** Account domains with their keys (accounts/registry.ts readDkimKeys), and which account owns each. */
  readonly domains: readonly { readonly account: string; readonly domain: string; readonly keys: readonly DkimKeyMaterial[]; readonly returnPath?: string | undefined }[];
  /** delivery.bounceDomain: the envelope sender's domain. */
  readonly bounceDomains: readonly string[];
  /** Addresses Sluice sends from (public source addresses of the configuration, --ip): SPF is evaluated for each. */
  readonly addresses: readonly string[];
}

/** Every check, sending domains first, in the configuration's order. */
export async function checkDomains(dns: DnsLookup, input: DomainCheckInput): Promise<DomainReport[]> {
  const sending = input.domains.map(async (d): Promise<DomainReport> => ({ domain: d.domain, kind: 'sending', account: d.account, checks: await checkSendingDomain(dns, d.domain, d.keys, d.returnPath) }));
  const bounce = input.bounceDomains.map(async (domain): Promise<DomainReport> => ({ domain, kind: 'bounce', checks: await checkBounceDomain(dns, domain, input.addresses) }));
  return Promise.all([...sending, ...bounce]);
}

/** Counts of failed and warned checks. */
export function tally(checks: readonly DomainCheck[]): { failed: number; warnings: number } {
  return { failed: checks.filter((c) => c.status === 'fail').length, warnings: checks.filter((c) => c.status === 'warn').length };
}
