import type { BounceRecord } from './index.js';
import { ADDRESS_HARD } from './reasons.js';

/**
 * What a classified record means for the recipient, as data: the inbound MX (feedback/process.ts)
 * and the dispatcher (a synchronous refusal, delivery/dispatcher.ts) decide by the same rule. The rule of DESIGN.md §6: only the
 * address's own failures suppress it; a refusal because of the sender (reputation, policy,
 * authentication) or of this one message (content, size) says nothing about the address and must
 * never cost the sender a good recipient — it is reported as the sender's or message's problem.
 *
 *   complaint    ARF / provider complaint           → account list, reason 'complaint'
 *   optout       ARF opt-out (unsubscribe request)  → account list, reason 'unsubscribe'
 *   notspam      ARF not-spam                       → event only
 *   report       ARF auth-failure or virus: the       → event only
 *                receiver's report on the message,
 *                not the recipient's complaint
 *   hard         address does not exist             → global list, reason 'hardbounce'
 *   soft         the address failed for now         → counted; N in the window → global, 'softbounce'
 *   sender       the sender's problem               → event only (fault 'sender')
 *   message      this message's problem             → event only (fault 'message')
 *   delayed      a delay warning, not a failure     → event only
 *   autoreply    vacation / auto-reply              → event only
 *   ignore       a success notice (delivered)       → nothing
 */
export type Verdict = 'complaint' | 'optout' | 'notspam' | 'report' | 'hard' | 'soft' | 'sender' | 'message' | 'delayed' | 'autoreply' | 'ignore';


/** Reputation, policy and authentication refusals: the sender has a problem, not the address. */
const SENDER_PROBLEM = new Set([
  'blocked', 'spamdetected', 'policyviolation', 'rejected', 'securityerror', 'norelaying', 'toomanyconn',
  'authfailure', 'badreputation', 'speeding', 'requireptr', 'notcompliantrfc', 'failedstarttls', 'syntaxerror',
]);

/** ARF feedback types that are the receiving system's report on a message, not its recipient's complaint. */
const NOT_COMPLAINTS = new Set(['auth-failure', 'virus']);

/** Refusals of this message's content or size: another message to the same address may well pass. */
const MESSAGE_PROBLEM = new Set(['contenterror', 'mesgtoobig', 'exceedlimit', 'virusdetected']);

/**
 * The fields a verdict reads: a classified DSN or ARF record, or a synchronous SMTP answer the
 * dispatcher classified (reason and hardbounce, action 'failed', no feedback type).
 */
export type VerdictInput = Pick<BounceRecord, 'reason' | 'hardbounce' | 'feedbacktype' | 'action'>;

export function verdictOf(r: VerdictInput): Verdict {
  if (r.feedbacktype !== null || r.reason === 'feedback') {
    const type = (r.feedbacktype ?? '').toLowerCase();
    if (type === 'not-spam') return 'notspam';
    if (type === 'opt-out') return 'optout';
    // RFC 6591 auth-failure: the receiver found the message failing SPF, DKIM or DMARC (often mail
    // forged in the sender's name); virus: it carried malware. Neither is the recipient asking not
    // to be mailed, nor a complaint against the sender's rate: the report is for the sender to read.
    if (NOT_COMPLAINTS.has(type)) return 'report';
    return 'complaint';
  }
  if (r.reason === 'vacation') return 'autoreply';
  if (r.reason === 'delivered') return 'ignore';
  if (r.action === 'delayed') return 'delayed';
  if (SENDER_PROBLEM.has(r.reason)) return 'sender';
  if (MESSAGE_PROBLEM.has(r.reason)) return 'message';
  if (r.hardbounce && ADDRESS_HARD.has(r.reason)) return 'hard';
  return 'soft';
}

/** Who the failure is about, for the event's `fault` field. */
export function faultOf(v: Verdict): 'recipient' | 'sender' | 'message' | '' {
  if (v === 'hard' || v === 'soft' || v === 'delayed') return 'recipient';
  if (v === 'sender') return 'sender';
  if (v === 'message') return 'message';
  return '';
}

/** ARF feedback types registered with IANA (RFC 5965 §7.3, RFC 6591, RFC 6650): metric labels stay bounded. */
const FEEDBACK_TYPES = new Set(['abuse', 'fraud', 'virus', 'other', 'not-spam', 'auth-failure', 'opt-out']);

export function feedbackTypeLabel(type: string | null): string {
  const t = (type ?? '').toLowerCase();
  return FEEDBACK_TYPES.has(t) ? t : 'other';
}
