/**
 * MTA- and provider-specific sentences that decide the reason by themselves, whatever the status
 * code says. These are fixed wordings of DragonFly, Exim, qmail, Gmail, Office 365, Tencent and others
 * (documented in their sources and in Sisimai's per-MTA tables); the generic phrase tables in
 * patterns.ts cannot express them because the same words mean something else elsewhere.
 */
import type { Reason } from './reasons.js';

export interface MtaHint { readonly pattern: RegExp; readonly reason: Reason }

export const MTA_HINTS: readonly MtaHint[] = [
  { pattern: /dns lookup failure: host \S+ not found/i, reason: 'hostunknown' },
  { pattern: /could not deliver for the last \d+ seconds|delivery failed \d+ attempts|did not accept our requests to connect/i, reason: 'expired' },
  { pattern: /an mx or srv record indicated no smtp service|returned null mx|doesn't receive email according to the administrator/i, reason: 'notaccept' },
  { pattern: /does not support tls|tls is required|must issue a starttls/i, reason: 'failedstarttls' },
  { pattern: /network error on destination mxs|dns query failed/i, reason: 'networkerror' },
  { pattern: /because the address couldn't be found|address not found\b/i, reason: 'userunknown' },
  { pattern: /turn on smtp authentication/i, reason: 'securityerror' },
  { pattern: /sent to too many recipients this hour|exceeded the (?:hourly|daily) (?:sending|recipient) limit/i, reason: 'speeding' },
  { pattern: /my name was rejected/i, reason: 'blocked' },
  { pattern: /unable to contact ldap server/i, reason: 'systemerror' },
  { pattern: /couldn't find a mail exchanger or ip address|no mx found for domain/i, reason: 'notaccept' },
  { pattern: /does not have authentication information or fails to pass|fails to pass authentication checks/i, reason: 'authfailure' },
  { pattern: /recipientnotfound|recipnotfound|recipient name is not recognized|mail\.local: unknown user|\bunknown user: \S+@/i, reason: 'userunknown' },
  { pattern: /not listed in (?:domino directory|public name & address book)/i, reason: 'userunknown' },
  { pattern: /account is disabled|account has been disabled/i, reason: 'suspend' },
  { pattern: /ip frequency limited|frequency limited/i, reason: 'toomanyconn' },
];
