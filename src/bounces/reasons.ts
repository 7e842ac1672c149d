/**
 * The bounce-reason taxonomy (Sisimai's reason names, so results compare with the wider ecosystem),
 * the enhanced-status-code → reason table, and the hard/soft rule.
 */

export const REASONS = [
  'authfailure', 'badreputation', 'blocked', 'contenterror', 'delivered', 'exceedlimit', 'expired', 'failedstarttls',
  'feedback', 'filtered', 'hasmoved', 'hostunknown', 'mailboxfull', 'mailererror', 'mesgtoobig', 'networkerror',
  'norelaying', 'notaccept', 'notcompliantrfc', 'onhold', 'policyviolation', 'rejected', 'requireptr', 'securityerror',
  'spamdetected', 'speeding', 'suspend', 'syntaxerror', 'systemerror', 'systemfull', 'toomanyconn', 'undefined',
  'userunknown', 'vacation', 'virusdetected',
] as const;
export type Reason = (typeof REASONS)[number];

/**
 * RFC 3463 / IANA enhanced status code → reason. Codes that say nothing specific (X.0.0, 4.3.0,
 * 4.4.0, 4.5.0, 4.7.0) are absent on purpose: the text decides those.
 */
const STATUS_REASON: Readonly<Record<string, Reason>> = {
  '2.1.5': 'delivered',
  '4.1.6': 'hasmoved', '4.1.7': 'rejected', '4.1.8': 'rejected', '4.1.9': 'systemerror', '4.2.1': 'blocked',
  '4.2.2': 'mailboxfull', '4.2.3': 'exceedlimit', '4.2.4': 'filtered', '4.3.1': 'systemfull', '4.3.2': 'notaccept',
  '4.3.3': 'systemerror', '4.3.5': 'systemerror', '4.4.1': 'expired', '4.4.2': 'networkerror', '4.4.3': 'systemerror',
  '4.4.4': 'networkerror', '4.4.5': 'systemfull', '4.4.6': 'networkerror', '4.4.7': 'expired', '4.4.8': 'networkerror',
  '4.5.3': 'systemerror', '4.5.5': 'systemerror', '4.6.0': 'contenterror', '4.6.2': 'contenterror', '4.6.5': 'contenterror',
  '4.7.1': 'blocked', '4.7.2': 'blocked', '4.7.5': 'securityerror', '4.7.6': 'securityerror', '4.7.7': 'securityerror',
  '4.7.12': 'securityerror', '4.7.15': 'securityerror', '4.7.16': 'mesgtoobig', '4.7.24': 'authfailure',
  '4.7.25': 'requireptr', '4.7.26': 'authfailure',
  '5.1.0': 'userunknown', '5.1.1': 'userunknown', '5.1.2': 'hostunknown', '5.1.3': 'userunknown', '5.1.4': 'filtered',
  '5.1.6': 'hasmoved', '5.1.7': 'rejected', '5.1.8': 'rejected', '5.1.9': 'systemerror', '5.1.10': 'notaccept',
  '5.2.0': 'filtered', '5.2.1': 'filtered', '5.2.2': 'mailboxfull', '5.2.3': 'exceedlimit', '5.2.4': 'filtered',
  '5.3.0': 'systemerror', '5.3.1': 'systemfull', '5.3.2': 'notaccept', '5.3.3': 'systemerror', '5.3.4': 'mesgtoobig',
  '5.3.5': 'systemerror', '5.4.0': 'networkerror', '5.4.3': 'systemerror', '5.4.4': 'hostunknown', '5.5.2': 'syntaxerror',
  '5.5.3': 'toomanyconn', '5.5.4': 'systemerror', '5.5.5': 'systemerror', '5.5.6': 'syntaxerror',
  '5.6.0': 'contenterror', '5.6.1': 'contenterror', '5.6.2': 'contenterror', '5.6.3': 'contenterror', '5.6.5': 'contenterror',
  '5.6.6': 'contenterror', '5.6.7': 'contenterror', '5.6.8': 'contenterror', '5.6.9': 'contenterror',
  '5.7.0': 'securityerror', '5.7.1': 'securityerror', '5.7.2': 'securityerror', '5.7.3': 'securityerror',
  '5.7.4': 'securityerror', '5.7.5': 'securityerror', '5.7.6': 'securityerror', '5.7.7': 'securityerror',
  '5.7.8': 'securityerror', '5.7.9': 'securityerror', '5.7.10': 'securityerror', '5.7.11': 'securityerror',
  '5.7.13': 'suspend', '5.7.14': 'securityerror', '5.7.15': 'securityerror', '5.7.16': 'mesgtoobig', '5.7.17': 'hasmoved',
  '5.7.18': 'hasmoved', '5.7.19': 'securityerror', '5.7.20': 'authfailure', '5.7.21': 'authfailure', '5.7.22': 'authfailure',
  '5.7.23': 'authfailure', '5.7.24': 'authfailure', '5.7.25': 'requireptr', '5.7.26': 'authfailure', '5.7.27': 'notaccept',
  '5.7.28': 'spamdetected', '5.7.29': 'authfailure', '5.7.30': 'failedstarttls',
};

/** Reason implied by an enhanced status code alone, or '' when the code is generic or unknown. */
export function reasonOfStatus(status: string): Reason | '' {
  return STATUS_REASON[status] ?? '';
}

/**
 * Pseudo status codes (`X.0.9NN`) for bounces that carry no enhanced code: the class digit comes from
 * the SMTP reply or the action, the rest names the reason. The numbering is Sisimai's, so consumers
 * that already know it read ours unchanged.
 */
const PSEUDO: Readonly<Partial<Record<Reason, string>>> = {
  authfailure: '926', badreputation: '975', blocked: '971', contenterror: '960', exceedlimit: '923', expired: '947',
  failedstarttls: '976', filtered: '910', hasmoved: '916', hostunknown: '912', mailboxfull: '922', mailererror: '939',
  mesgtoobig: '934', networkerror: '944', norelaying: '909', notaccept: '932', notcompliantrfc: '974', onhold: '901',
  policyviolation: '972', rejected: '918', requireptr: '973', securityerror: '970', spamdetected: '980', speeding: '946',
  suspend: '921', systemerror: '930', systemfull: '931', syntaxerror: '902', toomanyconn: '945', userunknown: '911',
  undefined: '900', virusdetected: '981',
};

export function pseudoStatus(reason: Reason, temporary: boolean): string {
  const n = PSEUDO[reason];
  if (!n) return '';
  // An address that does not exist is never "temporarily" unknown: always class 5.
  const cls = temporary && reason !== 'userunknown' && reason !== 'hostunknown' && reason !== 'hasmoved' ? '4' : '5';
  if (cls === '4' && reason === 'filtered') return '4.0.924';
  return `${cls}.0.${n}`;
}

/**
 * Hard bounce = the address itself is bad and retrying or resending will never work: the mailbox or
 * domain does not exist, the mailbox has moved, or the domain permanently accepts no mail (null MX).
 * Policy and reputation refusals are soft: they say the sender has a problem, not the address.
 */
export function isHardBounce(reason: string, status: string, replyCode: string): boolean {
  if (reason === 'userunknown' || reason === 'hostunknown' || reason === 'hasmoved') return true;
  if (reason === 'notaccept') return status.startsWith('5') || (status === '' && replyCode.startsWith('5'));
  return false;
}

/** Address-level reasons: the mailbox or domain does not exist (or moved, or takes no mail at all). */
export const ADDRESS_HARD: ReadonlySet<string> = new Set(['userunknown', 'hostunknown', 'hasmoved', 'notaccept']);
