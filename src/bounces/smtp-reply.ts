/**
 * Classifies a synchronous SMTP answer seen during delivery (code + enhanced code + text), with the
 * same tables as the bounce-mail classifier, so a 550 during the session and the DSN a relay would
 * have sent for it end up with the same reason.
 */
import { findReason } from './find-reason.js';
import { includes } from './patterns.js';
import { isHardBounce, pseudoStatus } from './reasons.js';
import { findCommand, findStatus } from './smtp-text.js';

export function classifySmtpReply(code: number | null, enhanced: string | null, text: string): { reason: string; hardbounce: boolean; status: string } {
  const t = typeof text === 'string' ? text.slice(0, 4096) : '';
  const reply = code !== null && Number.isInteger(code) && code >= 200 && code <= 599 ? String(code) : '';
  const m = enhanced ? /^([245])\.(\d{1,3})\.(\d{1,3})$/.exec(enhanced.trim()) : null;
  let status = m ? `${m[1]}.${Number(m[2])}.${Number(m[3])}` : findStatus(t);
  // An enhanced code whose class contradicts the reply code is a server bug; the reply code wins.
  if (status && reply && status[0] !== reply[0]) status = `${reply[0]}${status.slice(1)}`;
  if (reply.startsWith('2') || status.startsWith('2')) return { reason: 'delivered', hardbounce: false, status: status || '2.0.0' };
  const reason = findReason({
    reason: '', status, replyCode: reply, diagnostic: t, diagnosticType: 'SMTP', action: reply.startsWith('4') ? 'delayed' : 'failed',
    // During our own session an answer that says the mailbox does not exist is the answer to RCPT TO.
    command: findCommand(t) || (includes('userunknown', t.toLowerCase()) ? 'RCPT' : ''),
  });
  if (!status) status = pseudoStatus(reason, reply.startsWith('4')) || (reply ? `${reply[0]}.0.0` : '');
  // A 4xx answer is temporary by definition: nothing about it is a hard bounce yet.
  const hardbounce = !reply.startsWith('4') && !status.startsWith('4') && isHardBounce(reason, status, reply);
  return { reason, hardbounce, status };
}
