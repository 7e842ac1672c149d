/**
 * Decides the reason of one failed recipient from what the message said about it, in the order
 * that resolves overlaps correctly: first the reasons that a status code or a phrase identifies
 * precisely (mailbox full before "user unknown", because "mailbox full" texts often also say
 * "mailbox"), then the fallbacks (status class, reply code, action). The order and the guards follow
 * Sisimai's published algorithm so that labels agree with that reference.
 */
import { includes } from './patterns.js';
import { reasonOfStatus, type Reason } from './reasons.js';

export interface Fact {
  /** Reason already known from the MTA-specific wording (e.g. a qmail or Exim sentence), or ''. */
  reason: Reason | '';
  /** Enhanced status code as found, e.g. '5.1.1', or ''. */
  status: string;
  /** SMTP reply code as found, e.g. '550', or ''. */
  replyCode: string;
  /** Text the remote or local MTA gave for this recipient. */
  diagnostic: string;
  /** Diagnostic-Code type: 'SMTP', 'X-UNIX', 'X-POSTFIX', … ('' when unknown). */
  diagnosticType: string;
  /** DSN Action: failed, delayed, delivered, expanded, relayed ('' when unknown). */
  action: string;
  /** SMTP command that was answered with the error: CONN, EHLO, MAIL, RCPT, DATA, … ('' when unknown). */
  command: string;
}

/** Commands sent before DATA: the receiver has not seen the message, so content reasons cannot apply. */
const BEFORE_DATA = new Set(['CONN', 'EHLO', 'HELO', 'STARTTLS', 'AUTH', 'MAIL', 'RCPT']);
/** Reasons that a later, more specific test may still replace. */
const RETRY = new Set(['undefined', 'onhold', 'systemerror', 'securityerror', 'expired', 'networkerror', 'hostunknown', 'userunknown']);

const explicit = (r: string): boolean => r !== '' && r !== 'undefined' && r !== 'onhold';

type Probe = (f: Fact, low: string) => boolean;

const byStatus = (f: Fact, r: Reason): boolean => reasonOfStatus(f.status) === r;

/** First pass: precise reasons, tried in this order. */
const FIRST_PASS: readonly [Reason, Probe][] = [
  ['mailboxfull', (f, low) => byStatus(f, 'mailboxfull') || includes('mailboxfull', low)],
  ['mesgtoobig', (f, low) => {
    if (byStatus(f, 'mesgtoobig')) return true;
    if (byStatus(f, 'exceedlimit') || f.status === '5.2.3') return false;
    return includes('mesgtoobig', low);
  }],
  ['exceedlimit', (f, low) => byStatus(f, 'exceedlimit') || includes('exceedlimit', low)],
  ['suspend', (f, low) => f.replyCode === '525' || includes('suspend', low)],
  ['hasmoved', (_f, low) => includes('hasmoved', low)],
  ['norelaying', (f, low) => !['CONN', 'EHLO', 'HELO'].includes(f.command) && includes('norelaying', low)],
  ['authfailure', (f, low) => byStatus(f, 'authfailure') || includes('authfailure', low)],
  ['userunknown', (f, low) => {
    const temp = reasonOfStatus(f.status);
    if (temp === 'suspend') return false;
    if (temp === 'userunknown') {
      const others: Reason[] = ['norelaying', 'blocked', 'mailboxfull', 'hasmoved', 'rejected', 'notaccept'];
      return !others.some((r) => includes(r, low));
    }
    return f.command === 'RCPT' && includes('userunknown', low);
  }],
  ['filtered', (f, low) => {
    const temp = reasonOfStatus(f.status);
    if (temp === 'suspend') return false;
    if (temp === 'filtered') return includes('userunknown', low) || includes('filtered', low);
    if (BEFORE_DATA.has(f.command)) return false;
    return includes('filtered', low) || includes('userunknown', low);
  }],
  ['requireptr', (f, low) => byStatus(f, 'requireptr') || includes('requireptr', low)],
  ['notcompliantrfc', (_f, low) => includes('notcompliantrfc', low)],
  ['badreputation', (_f, low) => includes('badreputation', low)],
  ['contenterror', (f, low) => {
    if (spamProbe(f, low)) return false;
    return byStatus(f, 'contenterror') || includes('contenterror', low);
  }],
  ['rejected', (f, low) => {
    const temp = reasonOfStatus(f.status) || 'undefined';
    if (temp === 'rejected') return true;
    if (f.command === 'MAIL') return includes('rejected', low);
    if (f.command === 'DATA' && temp !== 'userunknown') return includes('rejected', low);
    if (!explicit(temp) || temp === 'securityerror' || temp === 'systemerror') return includes('rejected', low);
    return false;
  }],
  ['hostunknown', (f, low) => {
    if (byStatus(f, 'hostunknown')) return !includes('networkerror', low);
    return includes('hostunknown', low);
  }],
  ['spamdetected', (f, low) => spamProbe(f, low)],
  ['speeding', (_f, low) => includes('speeding', low)],
  ['toomanyconn', (f, low) => byStatus(f, 'toomanyconn') || includes('toomanyconn', low)],
  ['blocked', (f, low) => byStatus(f, 'blocked') || includes('blocked', low)],
];

function spamProbe(f: Fact, low: string): boolean {
  if (f.status === '') return false;
  if (byStatus(f, 'spamdetected')) return true;
  if (BEFORE_DATA.has(f.command)) return false;
  return includes('spamdetected', low);
}

/** Second pass: phrases alone, for when the status code decided nothing useful. */
const SECOND_PASS: readonly Reason[] = [
  'mailboxfull', 'authfailure', 'badreputation', 'speeding', 'spamdetected', 'virusdetected', 'policyviolation', 'norelaying',
  'systemerror', 'networkerror', 'suspend', 'contenterror', 'systemfull', 'notaccept', 'expired', 'failedstarttls',
  'securityerror', 'mailererror',
];

function anotherOne(f: Fact, low: string): Reason | '' {
  if (explicit(f.reason)) return f.reason;
  const byCode = reasonOfStatus(f.status);
  if (byCode === '' || RETRY.has(byCode) || f.diagnosticType !== 'SMTP') {
    for (const r of SECOND_PASS) {
      if (r === 'virusdetected' && BEFORE_DATA.has(f.command)) continue;
      if (r === 'notaccept' && (f.replyCode === '521' || f.replyCode === '556')) return r;
      if (r === 'failedstarttls' && (f.command === 'STARTTLS' || ['523', '524', '538'].includes(f.replyCode))) return r;
      if (includes(r, low)) return r;
    }
    if (byCode !== '') return byCode;
    const subject = f.status.slice(0, 3);
    if (subject === '5.6' || subject === '4.6') return 'contenterror';
    if (subject === '5.7' || subject === '4.7') return 'securityerror';
    if (f.diagnosticType.startsWith('X-UNIX')) return 'mailererror';
    const reply = Number(f.replyCode);
    // 50x/40x (except 400/500) are the "command unrecognised / bad sequence" replies of RFC 5321 §4.2.
    if ((reply > 400 && reply < 408) || (reply > 500 && reply < 508)) return 'syntaxerror';
    if (f.action === 'delayed' || f.action === 'expired') return 'expired';
    if (f.command === 'EHLO' || f.command === 'HELO') return 'blocked';
  }
  return byCode;
}

export function findReason(f: Fact): Reason {
  if (f.reason !== '' && !RETRY.has(f.reason)) return f.reason;
  if (f.status.startsWith('2.')) return 'delivered';
  // The trailing space lets phrases that end in a word boundary ("transaction failed ") match at the end.
  const low = f.diagnostic.toLowerCase().replace(/\s+/g, ' ') + ' ';
  let found: Reason | '' = '';
  if (f.diagnosticType === 'SMTP' || f.diagnosticType === '') {
    for (const [r, probe] of FIRST_PASS) {
      if (f.reason === r || probe(f, low)) { found = r; break; }
    }
  }
  if (found === '' || found === 'undefined') {
    found = anotherOne(f, low);
    if (found === 'undefined') found = '';
    if (found === '' && f.action === 'delayed') found = 'expired';
    if (found !== '') return found;
    if (includes('vacation', low)) return 'vacation';
    return low.trim() !== '' ? 'onhold' : 'undefined';
  }
  return found;
}
