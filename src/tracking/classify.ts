import { memoize } from '../core/memo.js';

/**
 * Human or machine: the rules that tell a person's open or click from a proxy's prefetch or a link
 * scanner's visit. Kept as data so a new scanner is one line, and pure so they are easy to test.
 * A machine event is still recorded (raw counts stay honest); stats count unique human events apart.
 */
export type MachineReason = 'apple-mpp' | 'head' | 'scanner' | 'no-user-agent' | 'too-fast' | 'burst';

export interface TrackingRequest {
  readonly method: string;
  readonly userAgent: string;
  /** The client address as seen before anonymisation. */
  readonly ip: string;
}

/**
 * Apple Mail Privacy Protection fetches every image of a mail through Apple's proxies when the mail
 * arrives, whether or not it is read. Its fetches present the bare user agent "Mozilla/5.0" and come
 * from Apple's own 17.0.0.0/8 block; either trait marks the open as a machine open.
 */
export const APPLE_MPP_USER_AGENTS: readonly string[] = ['Mozilla/5.0'];
export const APPLE_NETWORKS_V4: readonly (readonly [prefix: string, bits: number])[] = [['17.0.0.0', 8]];

/**
 * User agents of security gateways that fetch links (and images) to inspect them, and of HTTP
 * libraries a person never clicks with. Case-insensitive.
 */
export const SCANNER_USER_AGENTS: readonly RegExp[] = [
  /barracuda/i,
  /mimecast/i,
  /proofpoint|urldefense/i,
  /symantec|broadcom/i,
  /forcepoint|websense/i,
  /trend ?micro/i,
  /zscaler/i,
  /cisco|ironport/i,
  /sophos/i,
  /fortiguard|fortinet/i,
  /checkpoint|check point/i,
  /safelinks|microsoft office existence discovery|ms-office/i,
  // Crawlers name themselves …bot; a CUBOT phone's browser ("CUBOT X30 Build/…") is a person.
  /(?<!cu)bot\b|bot\/|crawler|spider|slurp/i,
  /headlesschrome|phantomjs|puppeteer|playwright/i,
  /^(curl|wget|python-requests|python-urllib|go-http-client|okhttp|java|libwww-perl|axios|node-fetch|undici|httpclient|apache-httpclient)\b/i,
];

/**
 * Gateways click a link within seconds of the mail's delivery; a person must first see the mail,
 * open it and read to the link. 10 s after rendering (the token's issuedAt, a little before delivery)
 * leaves the SMTP transaction and the gateway's scan inside the window and almost no human.
 */
export const CLICK_TOO_FAST_S = 10;
/**
 * A scanner follows every link of a mail at once: 3 distinct links within 2 s is not a reader, nor
 * both links of a two-link mail (recordTrackingEvent-4.lua lowers the limit to the link count).
 */
export const BURST_WINDOW_MS = 2000;
export const BURST_LINKS = 3;

/** Why an open is a machine's, or null for a (presumed) person. */
export function classifyOpen(req: TrackingRequest): MachineReason | null {
  return common(req) ?? (isApple(req) ? 'apple-mpp' : null);
}

/**
 * Why a click is a machine's, or null. `burst` is the recipient's distinct links in the burst window,
 * `burstLimit` the count that makes a burst for this message (BURST_LINKS by default).
 */
export function classifyClick(req: TrackingRequest, ctx: { nowS: number; issuedAt: number; burst: number; burstLimit?: number }): MachineReason | null {
  const c = common(req);
  if (c) return c;
  if (ctx.nowS - ctx.issuedAt < CLICK_TOO_FAST_S) return 'too-fast';
  if (ctx.burst >= (ctx.burstLimit ?? BURST_LINKS)) return 'burst';
  return null;
}

function common(req: TrackingRequest): MachineReason | null {
  if (req.method === 'HEAD') return 'head';
  return traitsOf(req.userAgent).reason;
}

/** What a user agent alone says: the scanner / no-user-agent reason, and whether it is Apple's proxy. */
interface AgentTraits {
  readonly reason: MachineReason | null;
  readonly apple: boolean;
}

/**
 * User agents repeat: a mail client's string is shared by millions of readers, and a busy pixel sees
 * a few hundred distinct ones. Their traits are remembered (for 1,024 of them) instead of running
 * every scanner pattern on every request.
 */
const traitsOf = memoize((userAgent: string): AgentTraits => {
  const trimmed = userAgent.trim();
  return {
    reason: trimmed === '' ? 'no-user-agent' : SCANNER_USER_AGENTS.some((re) => re.test(userAgent)) ? 'scanner' : null,
    apple: APPLE_MPP_USER_AGENTS.includes(trimmed),
  };
}, 1024);

/** APPLE_NETWORKS_V4 as (masked base, mask) pairs, computed once rather than per open. */
const APPLE_MASKS: readonly (readonly [base: number, mask: number])[] = APPLE_NETWORKS_V4.map(([prefix, bits]) => {
  const mask = bits === 0 ? 0 : (~0 << (32 - bits)) >>> 0;
  return [((ipv4ToInt(prefix, 0) as number) & mask) >>> 0, mask] as const;
});

function isApple(req: TrackingRequest): boolean {
  if (traitsOf(req.userAgent).apple) return true;
  const v4 = ipv4ToInt(req.ip, req.ip.startsWith('::ffff:') ? 7 : 0);
  return v4 !== null && APPLE_MASKS.some(([base, mask]) => ((v4 & mask) >>> 0) === base);
}

/** The dotted IPv4 address in `ip` from `start` as a number, or null (IPv6, or not 4 parts of 0–255). */
function ipv4ToInt(ip: string, start: number): number | null {
  let n = 0;
  let part = 0;
  let digits = 0;
  let dots = 0;
  for (let i = start; i <= ip.length; i++) {
    const c = i === ip.length ? 46 : ip.charCodeAt(i);
    if (c === 46) {
      if (digits === 0 || part > 255) return null;
      n = n * 256 + part;
      part = 0;
      digits = 0;
      if (++dots > 4) return null;
    } else if (c >= 48 && c <= 57 && digits < 3) {
      part = part * 10 + (c - 48);
      digits++;
    } else return null;
  }
  return dots === 4 ? n : null;
}
