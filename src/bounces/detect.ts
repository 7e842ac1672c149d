/**
 * Is this message a bounce, an auto-reply, or neither? Decided from the envelope-ish headers only,
 * before any body parsing matters.
 */
import { decodeWords, header, type Headers } from './mime.js';

/** Senders that only ever send delivery notices. */
const BOUNCE_SENDER = /^(?:.*<)?\s*(?:mailer-daemon|mail-daemon|maildaemon|postmaster|mail delivery (?:system|subsystem)|double-bounce|bounce[s]?|mdaemon|returned|nobody)\b|mailer-daemon@|postmaster@|mail delivery subsystem|\bmailer-daemon\b/i;

/** Subjects real MTAs use for delivery notices, in several languages. */
const BOUNCE_SUBJECT = new RegExp([
  'undeliver', 'undelivered', 'delivery status notification', 'delivery failure', 'delivery failed', 'failed delivery',
  'delivery notification', 'returned mail', 'return(?:ed)? to sender', 'mail delivery', 'failure notice', 'non.?deliver',
  'could not be delivered', 'delivery problem', 'delivery report', 'not delivered', 'warning: could not send',
  'message not delivered', 'delayed mail', 'delivery delayed', 'delivery has failed', 'mail system error', 'bounce',
  'nicht zustellbar', 'unzustellbar', 'non remis', 'no entregado', 'error sending', 'returned message',
  'message you sent', 'permanent error', 'delivery status', 'unable to deliver',
  'message delivery', 'retorno', 'problem delivering',
].join('|'), 'i');

export function looksLikeBounce(h: Headers, hasReport: boolean): boolean {
  if (hasReport) return true;
  if (h.fields.has('x-failed-recipients')) return true;
  const from = header(h, 'from');
  if (BOUNCE_SENDER.test(from)) return true;
  // An auto-reply (RFC 3834) quotes the subject it answers: "Automatic reply: Your parcel could not
  // be delivered" is someone's out-of-office, not a delivery notice. A real notice that is marked
  // auto-replied too (Gmail's) comes from a daemon or carries a report, both decided above.
  if (isAutoReply(h)) return false;
  const subject = decodeWords(header(h, 'subject'));
  if (BOUNCE_SUBJECT.test(subject)) return true;
  const returnPath = header(h, 'return-path');
  return /^<\s*>$/.test(returnPath);
}

/**
 * A delay warning in words (a notice without a machine-readable report, or whose report was lost on
 * the way): "THIS IS A WARNING MESSAGE ONLY" (Sendmail, Postfix), "has not yet been delivered …
 * Delivery attempts will continue" (Exim), "Delivery Status Notification (Delay)" (Exchange), "will
 * retry" (Gmail), a Will-Retry-Until field. Not a failure (RFC 3464 §2.3.3 action "delayed").
 */
const DELAY_NOTICE = /\bwarning (?:message )?only\b|you do not need to resend|\bwill-retry-until:|has not (?:yet )?been delivered|delivery attempts will continue|\bwill (?:retry|keep trying|continue (?:trying|to try))\b|delivery (?:is |has been )?delayed|\(delay\)|delayed mail|could not send message for past/i;

export function isDelayNotice(subject: string, notice: string): boolean {
  return DELAY_NOTICE.test(subject) || DELAY_NOTICE.test(notice);
}

/** RFC 3834 auto-responses and the common vendor equivalents. */
const AUTO_SUBJECT = /^(?:auto(?:matic)?(?:[ -]?reply)?\s*:|auto[ -]?response|out of (?:the )?office|away until|absence|vacation|i am (?:currently )?(?:away|out)|r[ée]ponse automatique|abwesenheit|automatische antwort|autosvar|fuori sede)/i;

export function isAutoReply(h: Headers): boolean {
  const auto = header(h, 'auto-submitted').toLowerCase();
  if (auto.startsWith('auto-replied')) return true;
  if (h.fields.has('x-autoreply') || h.fields.has('x-autorespond')) return true;
  const subject = decodeWords(header(h, 'subject')).trim();
  if (AUTO_SUBJECT.test(subject)) return true;
  if (h.fields.has('x-auto-response-suppress') && /automatic reply|auto/i.test(subject)) return true;
  return /^auto_reply$/i.test(header(h, 'precedence'));
}
