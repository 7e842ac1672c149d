import { formatRfc5322Date } from '../render/headers.js';
import { fromBase32, toBase32 } from '../core/ids.js';

/**
 * The non-delivery report of an SMTP submission: once Sluice has said 250 to a message, it owes its
 * sender word of a recipient it could not deliver (RFC 5321 §6.1: "it MUST construct an
 * 'undeliverable mail' notification message and send it to the originator", as given by the
 * reverse-path). A DSN as RFC 3464 lays it out, in a multipart/report (RFC 6522):
 *
 *   text/plain              what happened, for a person
 *   message/delivery-status [Original-Envelope-Id], Reporting-MTA, Arrival-Date; [Original-Recipient],
 *                           Final-Recipient, Action, Status, Diagnostic-Code (the remote server's
 *                           reply), Last-Attempt-Date
 *   text/rfc822-headers     the header section of the message (message/rfc822: all of it, RET=FULL)
 *
 * sent from MAILER-DAEMON with the null reverse-path, so that a notice which cannot be delivered
 * starts no loop (the dispatcher reports nothing about a notice, nor to a null sender). One notice
 * per recipient that fails, when it fails for good: bounced, expired, or refused because the
 * address is suppressed; or (Action: relayed) that the next hop took, when the submission asked for
 * it with NOTIFY=SUCCESS (RFC 3461 §5.2.2: Sluice passes no DSN parameters on, see dispatcher.ts).
 */
export interface FailureNoticeInput {
  /** This instance's host name: the Reporting-MTA and MAILER-DAEMON's domain. */
  readonly hostname: string;
  /** Sluice's id of the message that failed, and recipient index: make the notice's Message-ID. */
  readonly msgId: string;
  readonly idx: number;
  /** ms since epoch */
  readonly acceptedAt: number;
  readonly now: number;
  /** The failed message's envelope sender, to whom the notice goes. */
  readonly to: string;
  readonly recipient: string;
  /** 'failed' unless said: 'relayed', the next hop took the message (NOTIFY=SUCCESS). */
  readonly action?: 'failed' | 'relayed';
  /** RFC 3463 status: the remote server's enhanced code, or one for the local reason. */
  readonly status: string;
  /** The remote server's reply ("550 5.1.1 …"), or null when no server answered. */
  readonly remoteReply: string | null;
  /** Why, in a sentence, for the person reading it. */
  readonly explanation: string;
  /** The message the notice is about, as stored (raw MIME): its header section, or all of it, goes back. */
  readonly original: Buffer;
  /** The submission's DSN parameters (RFC 3461), xtext-decoded: RET, ENVID, and the recipient's ORCPT. */
  readonly ret?: 'FULL' | 'HDRS' | undefined;
  readonly envid?: string | undefined;
  readonly orcpt?: string | undefined;
}

/**
 * The id a notice about recipient `idx` of message `msgId` is stored under: the same for every
 * holder of the recipient, so that a second notice (two dispatchers settled the recipient, one after
 * a reaped lease; a crash between the notice and the outcome) finds the first one's id taken and
 * stores nothing (app/start.ts). The original's time part (core/ids.ts: retention reasons from its
 * finishedAt, not its birth, once it is finished) and its random part plus idx + 1, so no two notices of one
 * message share an id, nor a notice its original; another message minted in the same millisecond
 * takes it once in 2^30, which the caller tells from a notice by the record's `about`.
 */
export function noticeId(msgId: string, idx: number): string {
  return msgId.slice(0, 10) + toBase32((fromBase32(msgId, 10, 6) + idx + 1) % 2 ** 30, 6);
}

/** The header section of a notice's original is cut at this size (a forwarded chain can be long). */
const MAX_ORIGINAL_HEADERS = 32 * 1024;
/**
 * RET=FULL returns a message up to this size; a larger one, or one that is not 7-bit (the notice is
 * plain ASCII), has its header section returned instead (as Postfix does beyond bounce_size_limit).
 */
const MAX_RETURNED_MESSAGE = 64 * 1024;

export function failureNotice(n: FailureNoticeInput): Buffer {
  const boundary = `=_sluice-dsn-${n.msgId}-${n.idx}`;
  const host = oneLine(n.hostname);
  const reply = n.remoteReply === null ? null : oneLine(n.remoteReply);
  const relayed = n.action === 'relayed';
  // RET applies to a report of failure (RFC 3461 §4.3); one of success returns the headers.
  const whole = !relayed && n.ret === 'FULL' ? returnable(n.original) : null;
  const human = [
    `This is the mail system at host ${host}.`,
    '',
    relayed ? `Your message was handed on to the mail server of <${oneLine(n.recipient)}>.` : `Your message could not be delivered to <${oneLine(n.recipient)}>.`,
    oneLine(n.explanation),
    ...(reply !== null ? ['', relayed ? 'That server said:' : 'The recipient\'s mail server said:', `    ${reply}`] : []),
    ...(!relayed && n.ret === 'FULL' && !whole ? ['', 'The message was too large to return (or not 7-bit): only its header section is attached.'] : []),
    '',
    'This report was sent automatically; please do not reply to it.',
  ];
  const status = [
    ...(n.envid !== undefined ? [`Original-Envelope-Id: ${oneLine(n.envid)}`] : []),
    `Reporting-MTA: dns; ${host}`,
    `X-Sluice-Message-ID: ${n.msgId}`,
    `Arrival-Date: ${formatRfc5322Date(n.acceptedAt)}`,
    '',
    ...(n.orcpt !== undefined ? [`Original-Recipient: ${originalRecipient(n.orcpt)}`] : []),
    `Final-Recipient: rfc822; ${oneLine(n.recipient)}`,
    `Action: ${relayed ? 'relayed' : 'failed'}`,
    `Status: ${n.status}`,
    ...(reply !== null ? [`Diagnostic-Code: smtp; ${reply}`] : []),
    `Last-Attempt-Date: ${formatRfc5322Date(n.now)}`,
  ];
  const head = [
    `From: Mail Delivery System <MAILER-DAEMON@${host}>`,
    `To: <${oneLine(n.to)}>`,
    `Subject: ${relayed ? 'Successful Mail Delivery Report' : 'Undelivered Mail Returned to Sender'}`,
    `Date: ${formatRfc5322Date(n.now)}`,
    `Message-ID: <dsn.${n.msgId}.${n.idx}@${host}>`,
    // RFC 3834: an automatic answer to a message, which auto-responders must not answer in turn.
    'Auto-Submitted: auto-replied',
    'MIME-Version: 1.0',
    `Content-Type: multipart/report; report-type=delivery-status; boundary="${boundary}"`,
  ];
  const text = [
    ...head,
    '',
    'This is a MIME-encapsulated message.',
    '',
    `--${boundary}`,
    'Content-Description: Notification',
    'Content-Type: text/plain; charset=us-ascii',
    '',
    ...human,
    '',
    `--${boundary}`,
    'Content-Description: Delivery report',
    'Content-Type: message/delivery-status',
    '',
    ...status,
    '',
    `--${boundary}`,
    ...(whole ? ['Content-Description: Undelivered message', 'Content-Type: message/rfc822'] : [`Content-Description: ${relayed ? 'Message' : 'Undelivered message'} headers`, 'Content-Type: text/rfc822-headers']),
    '',
  ].join('\r\n');
  return Buffer.concat([Buffer.from(`${text}\r\n`, 'latin1'), whole ?? originalHeaders(headerSection(n.original)), Buffer.from(`\r\n--${boundary}--\r\n`, 'latin1')]);
}

/**
 * RET=FULL: the whole message with CRLF line ends, when it is 7-bit and at most
 * MAX_RETURNED_MESSAGE; else null (its header section goes instead).
 */
function returnable(raw: Buffer): Buffer | null {
  if (raw.length > MAX_RETURNED_MESSAGE) return null;
  for (const b of raw) if (b > 0x7e || (b < 0x20 && b !== 0x0d && b !== 0x0a && b !== 0x09)) return null;
  const text = raw.toString('latin1').replace(/\r\n|\r|\n/g, '\r\n');
  return Buffer.from(text.endsWith('\r\n') ? text.slice(0, -2) : text, 'latin1');
}

/** ORCPT's "addr-type;address" as RFC 3464 §2.3.1 writes it: "addr-type; address". */
function originalRecipient(orcpt: string): string {
  const semi = orcpt.indexOf(';');
  return oneLine(semi === -1 ? orcpt : `${orcpt.slice(0, semi)}; ${orcpt.slice(semi + 1)}`);
}

/** The header section of a raw message: up to its blank line (excluded), at most MAX_ORIGINAL_HEADERS. */
function headerSection(raw: Buffer): Buffer {
  const end = raw.indexOf('\r\n\r\n');
  return raw.subarray(0, end === -1 ? Math.min(raw.length, MAX_ORIGINAL_HEADERS) : Math.min(end, MAX_ORIGINAL_HEADERS));
}

/**
 * The original's headers as the third part carries them: 7-bit (an 8-bit byte becomes '?', as the
 * notice itself is plain ASCII), CRLF line ends, cut at a line end within MAX_ORIGINAL_HEADERS.
 */
function originalHeaders(headers: Buffer): Buffer {
  let h = headers.subarray(0, MAX_ORIGINAL_HEADERS);
  if (h.length === MAX_ORIGINAL_HEADERS) {
    const lastLine = h.lastIndexOf('\r\n');
    if (lastLine > 0) h = h.subarray(0, lastLine);
  }
  const out = Buffer.from(h);
  for (let i = 0; i < out.length; i++) if ((out[i] as number) > 0x7e || ((out[i] as number) < 0x20 && out[i] !== 0x0d && out[i] !== 0x0a && out[i] !== 0x09)) out[i] = 0x3f;
  // A bare CR or LF would not survive transport as it is: every line end becomes CRLF.
  return Buffer.from(out.toString('latin1').replace(/\r\n|\r|\n/g, '\r\n'), 'latin1');
}

/** One line of printable ASCII: a remote reply's lines joined by spaces, anything else as '?'. */
function oneLine(s: string): string {
  return s.replace(/\s*[\r\n]+\s*/g, ' ').replace(/[^\x20-\x7e]/g, '?').slice(0, 900);
}
