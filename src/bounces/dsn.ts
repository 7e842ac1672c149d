/**
 * RFC 3464 delivery-status bodies: one block of per-message fields, then one block per recipient.
 * Real MTAs bend the format (no blank line between blocks, Original- before Final-Recipient, folded
 * Diagnostic-Code), so records are split on the recipient fields themselves, not only on blank lines.
 */
import { cleanAddress } from './smtp-text.js';

export interface DsnRecipient {
  finalRecipient: string;
  originalRecipient: string;
  action: string;
  status: string;
  diagnosticType: string;
  diagnostic: string;
  remoteMta: string;
}

/** A report names at most a few hundred recipients; stop counting beyond that. */
const MAX_RECIPIENTS = 500;

function emptyRecord(): DsnRecipient {
  return { finalRecipient: '', originalRecipient: '', action: '', status: '', diagnosticType: '', diagnostic: '', remoteMta: '' };
}

export function parseDeliveryStatus(text: string): DsnRecipient[] {
  const out: DsnRecipient[] = [];
  let cur = emptyRecord();
  let last = '';
  const hasRecipient = (r: DsnRecipient): boolean => r.finalRecipient !== '' || r.originalRecipient !== '';
  const push = (): void => {
    if (hasRecipient(cur) && out.length < MAX_RECIPIENTS) out.push(cur);
    cur = emptyRecord();
  };
  for (const line of text.split(/\r?\n/)) {
    if (line.trim() === '') {
      if (hasRecipient(cur)) push();
      last = '';
      continue;
    }
    if (/^[ \t]/.test(line)) {
      if (last === 'diagnostic-code') cur.diagnostic += ' ' + line.trim();
      continue;
    }
    const colon = line.indexOf(':');
    if (colon <= 0) { last = ''; continue; }
    const name = line.slice(0, colon).trim().toLowerCase();
    const value = line.slice(colon + 1).trim();
    last = name;
    switch (name) {
      case 'final-recipient':
      case 'x-actual-recipient':
        if (name === 'x-actual-recipient') {
          if (!cur.finalRecipient && /@/.test(value)) cur.finalRecipient = cleanAddress(value);
          break;
        }
        if (cur.finalRecipient) push();
        cur.finalRecipient = cleanAddress(value);
        if (!cur.finalRecipient && !cur.originalRecipient) cur.originalRecipient = ' '; // placeholder keeps the record
        break;
      case 'original-recipient':
        if (cur.originalRecipient.trim()) push();
        cur.originalRecipient = cleanAddress(value) || cur.originalRecipient;
        break;
      case 'action':
        cur.action = value.toLowerCase().replace(/\s.*$/, '');
        break;
      case 'status': {
        const m = /([245])\.(\d{1,3})\.(\d{1,3})/.exec(value);
        cur.status = m ? `${m[1]}.${Number(m[2])}.${Number(m[3])}` : '';
        break;
      }
      case 'diagnostic-code': {
        const semi = value.indexOf(';');
        cur.diagnosticType = semi > 0 ? value.slice(0, semi).trim().toUpperCase() : '';
        cur.diagnostic = semi > 0 ? value.slice(semi + 1).trim() : value;
        break;
      }
      case 'remote-mta': {
        const semi = value.indexOf(';');
        cur.remoteMta = (semi >= 0 ? value.slice(semi + 1) : value).trim();
        break;
      }
      default:
        break;
    }
  }
  push();
  for (const r of out) r.originalRecipient = r.originalRecipient.trim();
  return out;
}
