import { BlockList, isIP } from 'node:net';
import { expandIpv6 } from '../core/ip.js';

/**
 * SPF as a receiver evaluates it (RFC 7208 §4, check_host()), for `sluice domain check`: would mail
 * with MAIL FROM <sender> from `ip` pass? Mechanisms all, include, a, mx, ptr, ip4, ip6, exists;
 * modifiers redirect (exp is not needed for a result); macros in domain-specs (§7: s l o d i v h,
 * digit and r transformers, delimiters). Limits as receivers apply them: 10 mechanisms and modifiers
 * that query DNS in the whole evaluation (§4.6.4; more is a permerror, a common fault of records that
 * include several providers), 10 MX hosts per mx, 2 void lookups (no answer, or NXDOMAIN).
 *
 * ptr is deprecated (§5.5) and needs reverse DNS: it counts as a lookup and never matches here, and
 * the result says so.
 */
/** A DNS answer: the records, or why there are none. */
export type Answer<T> = { readonly ok: true; readonly records: readonly T[] } | { readonly ok: false; readonly why: 'nxdomain' | 'nodata' | 'error'; readonly message: string };

export type SpfResult = 'pass' | 'fail' | 'softfail' | 'neutral' | 'none' | 'permerror' | 'temperror';

export interface SpfDns {
  txt(name: string): Promise<Answer<string>>;
  mx(name: string): Promise<Answer<{ exchange: string; priority: number }>>;
  /** A (4) or AAAA (6) records. */
  ips(name: string, family: 4 | 6): Promise<Answer<string>>;
}

export interface SpfEvaluation {
  readonly result: SpfResult;
  /** What decided it: the mechanism that matched, or why it erred. */
  readonly reason: string;
  /** DNS-querying terms counted against the limit of 10. */
  readonly lookups: number;
  /** ptr terms met (never matched here). */
  readonly ptr: boolean;
}

/** RFC 7208 §4.6.4. */
export const MAX_SPF_LOOKUPS = 10;
const MAX_VOID = 2;
const MAX_MX_HOSTS = 10;

class SpfError extends Error {
  constructor(readonly result: 'permerror' | 'temperror', message: string) {
    super(message);
  }
}

interface State {
  readonly ip: string;
  readonly family: 4 | 6;
  readonly sender: string;
  readonly helo: string;
  lookups: number;
  voids: number;
  ptr: boolean;
}

const QUALIFIERS: Record<string, SpfResult> = { '+': 'pass', '-': 'fail', '~': 'softfail', '?': 'neutral' };

/** The SPF records among a name's TXT records: "v=spf1" then a space or the end, in any case (RFC 7208 §4.5). */
export function spfRecords(txt: readonly string[]): string[] {
  return txt.filter((r) => /^v=spf1(\s|$)/i.test(r));
}

/**
 * `dns` answering each question once: a check that evaluates one record for several addresses (and
 * read it first to show it) asks DNS once per name and type, not once per evaluation.
 */
export function onceEach(dns: SpfDns): SpfDns {
  const seen = new Map<string, Promise<unknown>>();
  const once = <T>(key: string, ask: () => Promise<T>): Promise<T> => {
    let p = seen.get(key) as Promise<T> | undefined;
    if (!p) seen.set(key, (p = ask()));
    return p;
  };
  return {
    txt: (name) => once(`txt ${name}`, () => dns.txt(name)),
    mx: (name) => once(`mx ${name}`, () => dns.mx(name)),
    ips: (name, family) => once(`${family} ${name}`, () => dns.ips(name, family)),
  };
}

/** Evaluates SPF for mail from `ip` with MAIL FROM `sender` (its domain is where the check starts). */
export async function evaluateSpf(dns: SpfDns, ip: string, sender: string, helo = 'localhost'): Promise<SpfEvaluation> {
  const family = isIP(ip);
  if (family !== 4 && family !== 6) throw new Error(`not an IP address: ${ip}`);
  const state: State = { ip, family, sender, helo, lookups: 0, voids: 0, ptr: false };
  const domain = sender.slice(sender.lastIndexOf('@') + 1).toLowerCase();
  try {
    const { result, reason } = await checkHost(dns, state, domain, 0);
    return { result, reason, lookups: state.lookups, ptr: state.ptr };
  } catch (err) {
    if (err instanceof SpfError) return { result: err.result, reason: err.message, lookups: state.lookups, ptr: state.ptr };
    throw err;
  }
}

/** Counts a DNS-querying term against the limit. */
function count(state: State, term: string): void {
  state.lookups++;
  if (state.lookups > MAX_SPF_LOOKUPS) throw new SpfError('permerror', `more than ${MAX_SPF_LOOKUPS} DNS-querying terms (at ${term}): receivers stop with permerror (RFC 7208 §4.6.4)`);
}

/** An answer's records; a void answer counts (more than two are a permerror), an error is a temperror. */
function records<T>(state: State, a: Answer<T>, what: string): readonly T[] {
  if (a.ok) return a.records;
  if (a.why === 'error') throw new SpfError('temperror', `DNS lookup of ${what} failed (${a.message})`);
  state.voids++;
  if (state.voids > MAX_VOID) throw new SpfError('permerror', `more than ${MAX_VOID} lookups found nothing (the last: ${what}; RFC 7208 §4.6.4)`);
  return [];
}

async function checkHost(dns: SpfDns, state: State, domain: string, depth: number): Promise<{ result: SpfResult; reason: string }> {
  const answer = await dns.txt(domain);
  if (!answer.ok && answer.why === 'error') throw new SpfError('temperror', `DNS lookup of ${domain} TXT failed (${answer.message})`);
  const spf = spfRecords(answer.ok ? answer.records : []);
  if (spf.length === 0) return { result: 'none', reason: `no SPF record at ${domain}` };
  if (spf.length > 1) throw new SpfError('permerror', `${spf.length} SPF records at ${domain}`);
  const terms = (spf[0] as string).split(/\s+/).slice(1).filter((t) => t !== '');
  let redirect: string | null = null;
  let seenRedirect = false;
  let seenExp = false;
  for (const term of terms) {
    const modifier = /^([A-Za-z][A-Za-z0-9_.-]*)=(.*)$/.exec(term);
    if (modifier) {
      const name = (modifier[1] as string).toLowerCase();
      if (name === 'redirect') {
        if (seenRedirect) throw new SpfError('permerror', `redirect= twice at ${domain}`);
        seenRedirect = true;
        redirect = modifier[2] as string;
      } else if (name === 'exp') {
        if (seenExp) throw new SpfError('permerror', `exp= twice at ${domain}`);
        seenExp = true;
      }
      continue; // unknown modifiers are ignored (§6)
    }
    const m = /^([+\-~?]?)([A-Za-z0-9]+)(.*)$/.exec(term);
    if (!m) throw new SpfError('permerror', `'${term}' at ${domain} is not a mechanism`);
    const qualifier = QUALIFIERS[m[1] || '+'] as SpfResult;
    const mechanism = (m[2] as string).toLowerCase();
    const rest = m[3] as string;
    const matched = await matches(dns, state, domain, mechanism, rest, term, depth);
    if (matched !== null) return { result: qualifier, reason: matched === '' ? `${term} at ${domain}` : `${matched}, through ${term} at ${domain}` };
  }
  if (redirect !== null) {
    count(state, `redirect=${redirect}`);
    const target = expand(redirect, state, domain, `redirect=${redirect}`);
    const r = await checkHost(dns, state, target, depth + 1);
    if (r.result === 'none') throw new SpfError('permerror', `redirect=${redirect} at ${domain} leads to no SPF record`);
    return r;
  }
  return { result: 'neutral', reason: `nothing matched at ${domain} and it has no all` };
}

/** Null when the mechanism does not match; else '' or, for an include, what matched inside it. */
async function matches(dns: SpfDns, state: State, domain: string, mechanism: string, rest: string, term: string, depth: number): Promise<string | null> {
  switch (mechanism) {
    case 'all':
      if (rest !== '') throw new SpfError('permerror', `'${term}' at ${domain}`);
      return '';
    case 'include': {
      if (!rest.startsWith(':')) throw new SpfError('permerror', `'${term}' at ${domain}: include needs a domain`);
      count(state, term);
      const target = expand(rest.slice(1), state, domain, term);
      const r = await checkHost(dns, state, target, depth + 1);
      if (r.result === 'pass') return r.reason;
      if (r.result === 'temperror') throw new SpfError('temperror', r.reason);
      if (r.result === 'permerror' || r.result === 'none') throw new SpfError('permerror', `${term} at ${domain}: ${r.reason}`);
      return null;
    }
    case 'a':
    case 'mx': {
      count(state, term);
      const { target, cidr4, cidr6 } = targetAndCidr(rest, state, domain, term);
      const prefix = state.family === 4 ? cidr4 : cidr6;
      const hosts = mechanism === 'a' ? [target] : await mxHosts(dns, state, target, term);
      for (const host of hosts) {
        for (const addr of records(state, await dns.ips(host, state.family), `${host} ${state.family === 4 ? 'A' : 'AAAA'}`)) {
          if (inNetwork(state.ip, state.family, addr, prefix)) return '';
        }
      }
      return null;
    }
    case 'ptr':
      count(state, term);
      state.ptr = true;
      return null;
    case 'ip4':
    case 'ip6': {
      const want = mechanism === 'ip4' ? 4 : 6;
      const spec = /^:([^/]+)(?:\/(\d{1,3}))?$/.exec(rest);
      if (!spec || isIP(spec[1] as string) !== want) throw new SpfError('permerror', `'${term}' at ${domain} is not a valid ${mechanism}`);
      const prefix = spec[2] === undefined ? (want === 4 ? 32 : 128) : Number(spec[2]);
      if (prefix > (want === 4 ? 32 : 128)) throw new SpfError('permerror', `'${term}' at ${domain}: prefix too long`);
      return state.family === want && inNetwork(state.ip, want, spec[1] as string, prefix) ? '' : null;
    }
    case 'exists': {
      if (!rest.startsWith(':')) throw new SpfError('permerror', `'${term}' at ${domain}: exists needs a domain`);
      count(state, term);
      const target = expand(rest.slice(1), state, domain, term);
      // §5.7: an A query whatever the client's family.
      return records(state, await dns.ips(target, 4), `${target} A`).length > 0 ? '' : null;
    }
    default:
      throw new SpfError('permerror', `unknown mechanism '${term}' at ${domain}`);
  }
}

async function mxHosts(dns: SpfDns, state: State, target: string, term: string): Promise<string[]> {
  const mx = records(state, await dns.mx(target), `${target} MX`);
  if (mx.length > MAX_MX_HOSTS) throw new SpfError('permerror', `${term}: ${target} has more than ${MAX_MX_HOSTS} MX hosts (RFC 7208 §4.6.4)`);
  return [...mx].sort((a, b) => a.priority - b.priority).map((r) => r.exchange).filter((h) => h !== '' && h !== '.');
}

/** a and mx: [":" domain-spec] ["/" ip4-cidr] ["//" ip6-cidr]. */
function targetAndCidr(rest: string, state: State, domain: string, term: string): { target: string; cidr4: number; cidr6: number } {
  const m = /^(?::([^/]+))?(?:\/(\d{1,2}))?(?:\/\/(\d{1,3}))?$/.exec(rest);
  if (!m) throw new SpfError('permerror', `'${term}' at ${domain} is not valid`);
  const cidr4 = m[2] === undefined ? 32 : Number(m[2]);
  const cidr6 = m[3] === undefined ? 128 : Number(m[3]);
  if (cidr4 > 32 || cidr6 > 128) throw new SpfError('permerror', `'${term}' at ${domain}: prefix too long`);
  return { target: m[1] === undefined ? domain : expand(m[1], state, domain, term), cidr4, cidr6 };
}

function inNetwork(ip: string, family: 4 | 6, network: string, prefix: number): boolean {
  const list = new BlockList();
  const type = family === 4 ? 'ipv4' : 'ipv6';
  try {
    list.addSubnet(network, prefix, type);
  } catch {
    return false;
  }
  return list.check(ip, type);
}

/** The dotted nibbles of an IPv6 address (RFC 7208 §7.3: %{i} of an IPv6 client). */
function nibbles(ip: string): string {
  return (expandIpv6(ip) ?? []).map((g) => g.toString(16).padStart(4, '0')).join('').split('').join('.');
}

/** Expands the macros of a domain-spec (RFC 7208 §7); a malformed one is a permerror. */
function expand(spec: string, state: State, domain: string, term: string): string {
  const at = state.sender.lastIndexOf('@');
  const local = at > 0 ? state.sender.slice(0, at) : 'postmaster';
  const senderDomain = state.sender.slice(at + 1);
  const value = (letter: string): string => {
    switch (letter) {
      case 's': return `${local}@${senderDomain}`;
      case 'l': return local;
      case 'o': return senderDomain;
      case 'd': return domain;
      case 'i': return state.family === 4 ? state.ip : nibbles(state.ip);
      case 'v': return state.family === 4 ? 'in-addr' : 'ip6';
      case 'h': return state.helo;
      case 'p': return 'unknown';
      default: throw new SpfError('permerror', `'${term}': unknown macro letter '${letter}'`);
    }
  };
  let out = '';
  for (let i = 0; i < spec.length; i++) {
    const c = spec[i];
    if (c !== '%') {
      out += c;
      continue;
    }
    const n = spec[i + 1];
    if (n === '%') out += '%';
    else if (n === '_') out += ' ';
    else if (n === '-') out += '%20';
    else if (n === '{') {
      const close = spec.indexOf('}', i);
      const m = close === -1 ? null : /^([a-zA-Z])(\d*)(r?)([.\-+,/_=]*)$/i.exec(spec.slice(i + 2, close));
      if (!m) throw new SpfError('permerror', `'${term}': malformed macro`);
      const delims = m[4] || '.';
      let parts = value((m[1] as string).toLowerCase()).split(new RegExp(`[${delims.replace(/[-\\\]^]/g, '\\$&')}]`));
      if (m[3]) parts = parts.reverse();
      if (m[2]) {
        const keep = Number(m[2]);
        if (keep === 0) throw new SpfError('permerror', `'${term}': a macro keeps at least one part`);
        parts = parts.slice(-keep);
      }
      out += parts.join('.');
      i = close;
      continue;
    } else throw new SpfError('permerror', `'${term}': malformed macro`);
    i++;
  }
  // §7.3: a result over 253 characters loses labels from the left.
  while (out.length > 253 && out.includes('.')) out = out.slice(out.indexOf('.') + 1);
  return out.replace(/\.$/, '').toLowerCase();
}
