import type { Config, TlsPolicy } from '../config/schema.js';
import { MINUTE, type Ms } from '../core/time.js';
import type { Rate } from './throttle.js';

/** The limits that apply to one destination, after rule matching (DESIGN §4). */
export interface EffectiveShaping {
  /** the matching rule's name, or 'default' */
  rule: string;
  /** metric label: the rule name or 'default' (bounded: never a raw domain) */
  provider: string;
  /** throttle scope key: the rule name when its scope is 'provider', `${rule}:${domain}` when 'domain' */
  scope: string;
  connections: number;
  messagesPerConnection: number;
  rate: Rate;
  retry: Ms[];
  maxAge: Ms;
  /** The rule's STARTTLS policy; null when it sets none (or for the default): delivery.tls decides. */
  tls: TlsPolicy | null;
  /** The rule's source addresses (IPv4, IPv6); null when it sets none: delivery.bindAddress / bindAddress6 decide. */
  bind: { v4: string | null; v6: string | null } | null;
  /** The rule's EHLO name; null when it sets none: delivery.ehloName decides. */
  ehloName: string | null;
}

type Shaping = Config['shaping'];

/** Case-insensitive glob: '*' matches any run of characters (dots included), nothing else is special. */
function globToRegExp(glob: string): RegExp {
  const body = glob.trim().toLowerCase().replace(/\.$/, '').split('*').map((part) => part.replace(/[.+?^${}()|[\]\\]/g, '\\$&')).join('.*');
  return new RegExp(`^${body}$`);
}

/** Compiled patterns per rules array: config is frozen and resolved once per destination visit. */
const compiled = new WeakMap<Shaping['rules'], { domains: RegExp[]; mx: RegExp[] }[]>();

function patterns(rules: Shaping['rules']): { domains: RegExp[]; mx: RegExp[] }[] {
  let list = compiled.get(rules);
  if (!list) {
    list = rules.map((r) => ({ domains: r.match.domains.map(globToRegExp), mx: r.match.mx.map(globToRegExp) }));
    compiled.set(rules, list);
  }
  return list;
}

/** DNS names compare without case and without the root's trailing dot. */
const normalize = (name: string): string => name.trim().toLowerCase().replace(/\.$/, '');

/**
 * Resolves the shaping of a destination: the first rule (in order) whose domain patterns match the
 * domain or whose MX patterns match one of its MX hosts; each key the rule leaves out comes from
 * shaping.default. Pure: no Redis, no DNS (the caller passes the MX hosts it resolved).
 */
export function resolveShaping(shaping: Shaping, domain: string, mxHosts: readonly string[]): EffectiveShaping {
  const d = normalize(domain);
  return effective(shaping, firstMatch(shaping, d, mxHosts.map(normalize)), d);
}

/**
 * The shaping of a destination for a reader that has no MX hosts (`sluice queue`, the queue
 * gauges): `recordedRule` is the rule the dispatcher last resolved for it with its MX hosts
 * (queue/destination-rule.ts), null when none is recorded. With the same config this gives what
 * resolveShaping gave the dispatcher: the recorded rule, unless a rule before it matches by domain
 * (then the config changed since, and that rule wins as it will at the next visit). A recorded
 * name the config no longer has is ignored: the domain alone decides, as with nothing recorded.
 */
export function resolveRecordedShaping(shaping: Shaping, domain: string, recordedRule: string | null): EffectiveShaping {
  const d = normalize(domain);
  const byDomain = firstMatch(shaping, d, []);
  const recorded = recordedRule === null ? -1 : shaping.rules.findIndex((r) => r.name === recordedRule);
  return effective(shaping, recorded < 0 ? byDomain : byDomain < 0 ? recorded : Math.min(recorded, byDomain), d);
}

/** Index of the first rule matching the (normalized) domain or one of the (normalized) MX hosts; -1 for none. */
function firstMatch(shaping: Shaping, d: string, hosts: readonly string[]): number {
  const compiledRules = patterns(shaping.rules);
  for (let i = 0; i < compiledRules.length; i++) {
    const p = compiledRules[i] as { domains: RegExp[]; mx: RegExp[] };
    if (p.domains.some((re) => re.test(d)) || hosts.some((h) => p.mx.some((re) => re.test(h)))) return i;
  }
  return -1;
}

/** The limits of rule `index` (-1: the default) for the normalized domain `d`. */
function effective(shaping: Shaping, index: number, d: string): EffectiveShaping {
  const def = shaping.default;
  const rule = index < 0 ? undefined : shaping.rules[index];
  if (rule) {
    const scope = rule.scope ?? def.scope;
    return {
      rule: rule.name,
      provider: rule.name,
      scope: scope === 'provider' ? rule.name : `${rule.name}:${d}`,
      connections: rule.connections ?? def.connections,
      messagesPerConnection: rule.messagesPerConnection ?? def.messagesPerConnection,
      rate: { ...(rule.rate ?? def.rate) },
      retry: [...(rule.retry ?? def.retry)],
      maxAge: rule.maxAge ?? def.maxAge,
      tls: rule.tls ?? null,
      bind: rule.bindAddress === undefined && rule.bindAddress6 === undefined ? null : { v4: rule.bindAddress ?? null, v6: rule.bindAddress6 ?? null },
      ehloName: rule.ehloName ?? null,
    };
  }
  return {
    rule: 'default',
    provider: 'default',
    scope: def.scope === 'provider' ? 'default' : `default:${d}`,
    connections: def.connections,
    messagesPerConnection: def.messagesPerConnection,
    rate: { ...def.rate },
    retry: [...def.retry],
    maxAge: def.maxAge,
    tls: null,
    bind: null,
    ehloName: null,
  };
}

/**
 * Delay before the next attempt after `attemptsMade` failed ones: attemptsMade = 1 → retry[0];
 * beyond the list the last delay repeats (the schema guarantees at least one).
 */
export function retryDelay(s: EffectiveShaping, attemptsMade: number): Ms {
  const i = Math.min(Math.max(Math.floor(attemptsMade) - 1, 0), s.retry.length - 1);
  return s.retry[i] ?? MINUTE;
}

/**
 * The STARTTLS policy delivery uses for a destination: its shaping rule's, else delivery.tls's —
 * verify is mandatory, verified TLS; else opportunistic ('may'), or none at all without
 * delivery.tls.opportunistic (the schema refuses verify without opportunistic).
 */
export function tlsPolicyOf(shaping: Pick<EffectiveShaping, 'tls'>, tls: Config['delivery']['tls']): TlsPolicy {
  if (shaping.tls !== null) return shaping.tls;
  if (tls.verify) return 'verify';
  if (tls.encrypt) return 'encrypt';
  return tls.opportunistic ? 'may' : 'none';
}
