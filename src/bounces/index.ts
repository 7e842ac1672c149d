/**
 * The bounce classifier: raw mail in, one record per failed (complaining, auto-replying, delivered)
 * recipient out. Pure code — no I/O — so the feedback MX, the CLI and the tests all share it.
 *
 *   raw ─► bounded MIME walk ─┬─ feedback-report? ──► complaint records (reason "feedback")
 *                             ├─ delivery-status?  ──► RFC 3464 records, enriched from the notice text
 *                             ├─ looks like bounce ─► recipients + errors read from the notice text
 *                             └─ auto-reply?       ──► one "vacation" record for the responder
 *   each failure ─► findReason (status code + phrase tables) ─► hard/soft
 */
import { isFeedbackReport, parseFeedbackReport } from './arf.js';
import { isAutoReply, isDelayNotice, looksLikeBounce } from './detect.js';
import { parseDeliveryStatus } from './dsn.js';
import { findReason, type Fact } from './find-reason.js';
import { decodeWords, header, parseMessage, walk, type MimePart } from './mime.js';
import { MTA_HINTS } from './mta-hints.js';
import { ADDRESS_HARD, isHardBounce, pseudoStatus, reasonOfStatus } from './reasons.js';
import { findAddresses, findCommand, findReplyCode, findStatus } from './smtp-text.js';
import { parseSesNotification } from './ses-notification.js';
import { extractFromText, humanPart } from './text-bounce.js';

export { classifySmtpReply } from './smtp-reply.js';
export { REASONS, type Reason } from './reasons.js';

export interface BounceRecord {
  recipient: string;
  /** Enhanced status code, e.g. '5.1.1'; a pseudo code X.0.9NN when the message carried none; '' when n/a. */
  status: string;
  reason: string;
  hardbounce: boolean;
  /** ARF Feedback-Type for complaints, else null. */
  feedbacktype: string | null;
  /**
   * A DSN's Original-Recipient (RFC 3464 §2.3.1: the address the sender gave) when it is not the
   * recipient above (Final-Recipient, §2.3.2: the address tried, after aliasing or forwarding).
   */
  originalRecipient?: string;
  action?: string;
  diagnostic?: string;
  remoteMta?: string;
  replyCode?: string;
}

/** Diagnostics are stored and logged; 1000 chars keeps every real SMTP reply whole. */
const MAX_DIAGNOSTIC_CHARS = 1000;

export async function classifyMessage(raw: Buffer): Promise<BounceRecord[]> {
  try {
    return classify(raw);
  } catch {
    // Garbage in must never take the feedback MX down: an unparseable mail is "not a bounce".
    return [];
  }
}

function classify(raw: Buffer): BounceRecord[] {
  if (!Buffer.isBuffer(raw) || raw.length === 0) return [];
  const root = parseMessage(raw);
  if (root.headers.fields.size === 0) return [];
  const parts = walk(root);

  if (isFeedbackReport(root)) {
    return parseFeedbackReport(root).map((c) => ({
      recipient: c.recipient, status: '', reason: 'feedback', hardbounce: false, feedbacktype: c.feedbackType,
    }));
  }

  // Apple Mail's one-click "unsubscribe" mail is an opt-out complaint from its sender (RFC 8058 mailto).
  if (/^true$/i.test(header(root.headers, 'x-apple-unsubscribe'))) {
    const from = findAddresses(header(root.headers, 'from'), 1)[0];
    if (from) return [{ recipient: from, status: '', reason: 'feedback', hardbounce: false, feedbacktype: 'opt-out' }];
  }

  const ses = /amazonses|amazonaws/i.test(header(root.headers, 'from') + header(root.headers, 'x-amz-sns-message-id'))
    ? parseSesNotification(root.text) : [];
  if (ses.length > 0) {
    return ses.map((r) => {
      if (r.kind === 'complaint') return { recipient: r.recipient, status: '', reason: 'feedback', hardbounce: false, feedbacktype: r.feedbackType };
      if (r.kind === 'delivery') return { recipient: r.recipient, status: r.status, reason: 'delivered', hardbounce: false, feedbacktype: null };
      return build(r.recipient, { status: r.status, diagnostic: r.diagnostic, context: r.diagnostic, diagnosticType: 'SMTP', action: r.action, remoteMta: '' }, () => '');
    });
  }

  const report = parts.find((p) => !insideMessage(root, p) && /^message\/(?:global-)?delivery-status$/.test(p.type));
  const notice = noticeText(root, parts);
  // Lower-cased once, when a record first asks (a report of 500 recipients asks 500 times).
  let low: string | undefined;
  const noticeLow = (): string => (low ??= notice.toLowerCase());
  const never = ownAddresses(root, []);
  const exclude = ownAddresses(root, parts);

  if (report) {
    const dsn = parseDeliveryStatus(report.text);
    if (dsn.length > 0) {
      const fromText = extractFromText(notice, exclude, never);
      return dsn.map((r) => {
        const recipient = r.finalRecipient || r.originalRecipient;
        const textual = fromText.find((t) => t.recipient === recipient || t.recipient === r.originalRecipient);
        const context = textual?.diagnostic ?? (dsn.length === 1 ? humanPart(notice) : '');
        const original = r.originalRecipient !== '' && r.originalRecipient.toLowerCase() !== recipient.toLowerCase() ? { originalRecipient: r.originalRecipient } : {};
        return { ...build(recipient, {
          status: r.status,
          diagnostic: r.diagnostic || textual?.diagnostic || '',
          // The notice often says more than Diagnostic-Code (Postfix adds "in reply to RCPT TO command").
          extra: textual && r.diagnostic && !textual.diagnostic.includes(r.diagnostic) ? textual.diagnostic : '',
          context,
          diagnosticType: r.diagnosticType,
          action: r.action,
          remoteMta: r.remoteMta,
        }, noticeLow), ...original };
      });
    }
  }

  if (looksLikeBounce(root.headers, report !== undefined)) {
    const found = extractFromText(notice, exclude, never);
    const headerRcpts = (root.headers.fields.get('x-failed-recipients') ?? []).flatMap((v) => findAddresses(v));
    const list = found.length > 0 ? found : headerRcpts.map((recipient) => ({ recipient, diagnostic: humanPart(notice) }));
    if (list.length === 0) {
      const original = originalHeaders(parts);
      const to = original ? findAddresses(header(original, 'to'), 1)[0] : undefined;
      if (to) list.push({ recipient: to, diagnostic: humanPart(notice) });
    }
    if (list.length > 0) {
      const fromList = /googlegroups\.com/i.test(header(root.headers, 'from') + ' ' + header(root.headers, 'x-failed-recipients'));
      const action = isDelayNotice(decodeWords(header(root.headers, 'subject')), notice) ? 'delayed' : '';
      return list.map((t) => build(t.recipient, {
        status: '', diagnostic: t.diagnostic, context: list.length === 1 ? humanPart(notice) : t.diagnostic,
        diagnosticType: '', action, remoteMta: '', fromList,
      }, noticeLow));
    }
  }

  if (isAutoReply(root.headers) && !looksLikeBounce(root.headers, false)) {
    const from = findAddresses(header(root.headers, 'from'), 1)[0];
    if (from) return [{ recipient: from, status: '', reason: 'vacation', hardbounce: false, feedbacktype: null }];
  }
  return [];
}

interface Evidence {
  status: string;
  /** The error text for this recipient. */
  diagnostic: string;
  /** Wider text around it (the notice), for the command and MTA-specific wording. */
  context: string;
  diagnosticType: string;
  action: string;
  remoteMta: string;
  /** The bounce comes from a mailing-list service refusing the post (Google Groups): always "rejected". */
  fromList?: boolean;
  /** More text about this recipient from the notice, matched together with the diagnostic. */
  extra?: string;
}

/** Status-field codes that only say "it failed eventually"; the remote server's own code is better. */
const VAGUE_STATUS = /^[45]\.(?:0\.0|4\.7)$/;

function build(recipient: string, e: Evidence, noticeLow: () => string): BounceRecord {
  const diagnostic = e.diagnostic.replace(/\s+/g, ' ').trim().slice(0, MAX_DIAGNOSTIC_CHARS);
  const context = e.context.replace(/\s+/g, ' ').trim();
  const inText = findStatus(diagnostic, e.status) || findStatus(context, e.status);
  let status = e.status;
  // A specific code in the remote server's own words beats a generic one in the Status: field.
  if ((status === '' || VAGUE_STATUS.test(status)) && inText && !/\.0\.0$/.test(inText) && inText !== status && inText[0] === (status[0] ?? inText[0])) status = inText;
  if (status === '') status = inText;
  const replyCode = findReplyCode(diagnostic) || findReplyCode(context);
  // A provider's sentence decides the reason, but never makes a refusal of the sender (X.1.7/X.1.8:
  // the sender's address, RFC 3463; X.7.x: policy) the recipient's own failure: Gmail's "because the
  // address couldn't be found" with 501 5.1.8 is about the envelope sender.
  const senderStatus = /^[45]\.(?:1\.[78]|7\.\d{1,3})$/.test(status);
  const hint = MTA_HINTS.find((h) => (h.pattern.test(diagnostic) || h.pattern.test(context)) && !(senderStatus && ADDRESS_HARD.has(h.reason)));
  const listReason = e.fromList ? 'rejected' : '';
  const fact: Fact = {
    reason: listReason || (hint?.reason ?? ''),
    status,
    replyCode,
    diagnostic: diagnostic || context,
    diagnosticType: e.diagnosticType || (diagnostic || context ? 'SMTP' : ''),
    action: e.action,
    command: findCommand(diagnostic) || findCommand(context) || commandInTranscript(noticeLow, recipient),
  };
  if (e.extra) fact.diagnostic += ' ' + e.extra;
  let reason = findReason(fact);
  if ((reason === 'onhold' || reason === 'undefined') && context && context !== fact.diagnostic) {
    // Nothing in the recipient's own lines decided it: read the whole notice before giving up.
    reason = findReason({ ...fact, diagnostic: context, command: fact.command || findCommand(context) });
  }
  if (status === '' || (reasonOfStatus(status) === '' && !/^[245]\.\d\.\d+$/.test(status))) {
    const temporary = e.action === 'delayed' || replyCode.startsWith('4') || /\b(?:temporar|delayed|will (?:be )?retr|will continue)/i.test(context);
    status = pseudoStatus(reason, temporary) || status;
  }
  const record: BounceRecord = {
    recipient,
    status: reason === 'vacation' || reason === 'feedback' ? '' : status,
    reason,
    hardbounce: isHardBounce(reason, status, replyCode),
    feedbacktype: null,
  };
  if (e.action) record.action = e.action;
  if (diagnostic) record.diagnostic = diagnostic;
  if (e.remoteMta) record.remoteMta = e.remoteMta;
  if (replyCode) record.replyCode = replyCode;
  return record;
}

/** A session transcript that shows `RCPT TO:<recipient>` was answered with the error (`noticeLow`: the notice lower-cased). */
function commandInTranscript(noticeLow: () => string, recipient: string): string {
  if (!recipient) return '';
  return noticeLow().includes(`rcpt to:<${recipient}>`) ? 'RCPT' : '';
}

/** True when `p` is inside a returned message (message/rfc822) rather than the notice itself. */
function insideMessage(root: MimePart, p: MimePart): boolean {
  const path: MimePart[] = [];
  const find = (n: MimePart): boolean => {
    if (n === p) return true;
    for (const c of n.children) {
      path.push(n);
      if (find(c)) return true;
      path.pop();
    }
    return false;
  };
  find(root);
  return path.some((n) => n.type === 'message/rfc822' || n.type === 'message/global');
}

/** The human-readable notice: text parts of the bounce itself, not of the returned message. */
function noticeText(root: MimePart, parts: MimePart[]): string {
  const texts = parts.filter((p) => p.children.length === 0 && (p.type === 'text/plain' || p.type === 'text/html') && !insideMessage(root, p));
  const plain = texts.filter((p) => p.type === 'text/plain');
  const chosen = plain.length > 0 ? plain : texts;
  if (chosen.length === 0) return root.text;
  return chosen.map((p) => (p.type === 'text/html' ? stripHtml(p.text) : p.text)).join('\n\n');
}

/**
 * The text of an HTML notice, in time linear in its length: the inbound MX takes mail from anyone,
 * and patterns that rescan to the end for each unclosed `<` or `<style` took hours of its one thread
 * for a 4 MB body of '<'. Tags are `<…>` without another `<` inside; script and style blocks are cut
 * with one forward scan (an unclosed one ends the text).
 */
function stripHtml(html: string): string {
  const low = html.toLowerCase();
  let out = '';
  let at = 0;
  const block = /<(script|style)\b/g;
  for (;;) {
    block.lastIndex = at;
    const m = block.exec(low);
    if (!m) {
      out += html.slice(at);
      break;
    }
    out += html.slice(at, m.index) + ' ';
    const close = low.indexOf(`</${m[1] as string}`, m.index);
    if (close < 0) break;
    const gt = low.indexOf('>', close);
    at = gt < 0 ? html.length : gt + 1;
  }
  return out.replace(/<br\s*\/?>|<\/(?:p|div|tr|li)>/gi, '\n')
    .replace(/<[^<>]*>/g, ' ').replace(/&lt;/g, '<').replace(/&gt;/g, '>').replace(/&amp;/g, '&').replace(/&nbsp;/g, ' ');
}

function originalHeaders(parts: MimePart[]): MimePart['headers'] | undefined {
  const msg = parts.find((p) => p.type === 'message/rfc822' || p.type === 'message/global');
  if (msg?.children[0]) return msg.children[0].headers;
  return undefined;
}

/**
 * Addresses that are not the failed recipient: the bounce's own sender and recipient and, when
 * `parts` are given, the original message's sender (which a test mail may share with its recipient,
 * so callers only use that wider set for addresses found loosely in prose).
 */
function ownAddresses(root: MimePart, parts: MimePart[]): Set<string> {
  const out = new Set<string>();
  for (const name of ['from', 'to', 'return-path', 'reply-to', 'sender', 'delivered-to', 'envelope-to']) {
    for (const v of root.headers.fields.get(name) ?? []) for (const a of findAddresses(v)) out.add(a);
  }
  const original = originalHeaders(parts);
  if (original) for (const v of [header(original, 'from'), header(original, 'return-path')]) for (const a of findAddresses(v)) out.add(a);
  return out;
}
