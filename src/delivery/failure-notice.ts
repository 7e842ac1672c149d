import { formatRfc5322Date } from '../render/headers.js';
import { fromBase32, toBase32 } from '../core/ids.js';
import type { MessageDsn } from '../store/messages.js';

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
 * A copy the next hop took and bounced later is reported too: its DSN came to Sluice's VERP address,
 * not to the sender whose return path Sluice replaced, so the feedback role passes the failure on
 * (RFC 5321 §6.1, RFC 3461 §6.2), with the remote status, Remote-MTA and Diagnostic-Code.
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
  /**
   * 'failed' unless said: 'relayed', the next hop took the message (NOTIFY=SUCCESS); 'delayed', a
   * warning that it is still being retried (delivery.delayWarning; NOTIFY=DELAY or no NOTIFY).
   */
  readonly action?: NoticeAction;
  /** A warning's Will-Retry-Until (RFC 3464 §2.3.8): when Sluice gives up (ms). */
  readonly retryUntil?: number | undefined;
  /** RFC 3463 status: the remote server's enhanced code, or one for the local reason. */
  readonly status: string;
  /** The remote server's reply ("550 5.1.1 …"), or null when no server answered. */
  readonly remoteReply: string | null;
  /** Why, in a sentence, for the person reading it. */
  readonly explanation: string;
  /** The remote MTA that reported the failure (a later DSN's Remote-MTA or Reporting-MTA), when known. */
  readonly remoteMta?: string | undefined;
  /**
   * The message the notice is about, as stored (raw MIME): its header section, or all of it, goes
   * back. null once it is no longer stored (a later bounce of a message whose copies were all
   * settled): the notice is the report without its third part (RFC 6522 §3 makes it optional).
   */
  readonly original: Buffer | null;
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
export function noticeId(msgId: string, idx: number, action: NoticeAction = 'failed'): string {
  // A report of success has ids of its own (2^29 on), and a delay warning (2^28 on): a copy relayed
  // (NOTIFY=SUCCESS,FAILURE) and bounced by the next hop later gets both reports, a copy warned
  // about and failed later both, and each of them once.
  return msgId.slice(0, 10) + toBase32((fromBase32(msgId, 10, 6) + NOTICE_ID_OFFSET[action] + idx + 1) % 2 ** 30, 6);
}

export type NoticeAction = 'failed' | 'relayed' | 'delayed';

const NOTICE_ID_OFFSET: Record<NoticeAction, number> = { failed: 0, relayed: 2 ** 29, delayed: 2 ** 28 };

/** A notice as the sender of notices (app/notices.ts) queues it: see Dispatcher's sendNotice. */
export interface QueuedNotice {
  readonly id: string;
  readonly account: string;
  readonly to: string;
  readonly body: Buffer;
  readonly about: string;
  /** The recipient the notice is about: its address is in the body, so it is indexed under it too. */
  readonly names: string;
}

/**
 * Queues a notice as a message of `account` to `to`, sent with the null reverse-path; `id`: the id
 * to store it under (noticeId): when a notice about the same message (`about`) has it already,
 * nothing is stored, the notice was queued before. Rejects when it cannot be queued.
 */
export type NoticeSender = (notice: QueuedNotice) => Promise<void>;

/**
 * The fields of a stored message that decide whether its sender is owed a notice: a LoadedMessage
 * (delivery) or a MessageMeta (feedback).
 */
export interface NoticeSubject {
  readonly id: string;
  readonly account: string;
  readonly kind: string;
  readonly source?: string | undefined;
  readonly returnPath?: string | undefined;
  readonly dsn?: MessageDsn | undefined;
  readonly rcpts: readonly { readonly address: string }[];
  readonly acceptedAt: number;
}

/** What happened to one recipient, as the notice reports it. */
export type RecipientReport = Pick<FailureNoticeInput, 'hostname' | 'now' | 'status' | 'remoteReply' | 'remoteMta' | 'explanation' | 'original' | 'retryUntil'> & {
  readonly idx: number;
  /** The address the remote server answered about; else the message's recipient `idx`. */
  readonly recipient?: string | undefined;
  readonly action?: NoticeAction;
};

/**
 * The notice the sender of `msg` is owed about recipient `r.idx`, or null when none is: only an SMTP
 * submission (raw, with a sender: not a notice, sent with <>, nor API mail, which webhooks and GET
 * /v1/messages/:id report) gets one. The recipient's NOTIFY (RFC 3461 §4.1), when the submission
 * gave one, says which: without FAILURE (NEVER, say) none of failure; with SUCCESS one of relay;
 * without DELAY no warning of delay. Without NOTIFY: failure and delay, not success.
 * The one rule for the dispatcher (a refusal, an expiry) and the feedback role (a later bounce).
 */
export function noticeToSender(msg: NoticeSubject, r: RecipientReport): QueuedNotice | null {
  if (msg.source !== 'smtp' || !msg.returnPath || msg.kind !== 'raw') return null;
  const action = r.action ?? 'failed';
  const asked = msg.dsn?.rcpts?.[r.idx];
  const notify = asked?.notify;
  const wanted = action === 'relayed' ? notify?.includes('SUCCESS') === true : !notify || notify.includes(action === 'delayed' ? 'DELAY' : 'FAILURE');
  if (!wanted) return null;
  const recipient = r.recipient ?? msg.rcpts[r.idx]?.address;
  if (!recipient) return null;
  const body = failureNotice({
    hostname: r.hostname, msgId: msg.id, idx: r.idx, acceptedAt: msg.acceptedAt, now: r.now, to: msg.returnPath, recipient, action,
    status: r.status, remoteReply: r.remoteReply, remoteMta: r.remoteMta, explanation: r.explanation, original: r.original, retryUntil: r.retryUntil,
    ret: msg.dsn?.ret, envid: msg.dsn?.envid, orcpt: asked?.orcpt ?? undefined,
  });
  return { id: noticeId(msg.id, r.idx, action), account: msg.account, to: msg.returnPath, body, about: msg.id, names: recipient };
}

/** The header section of a notice's original is cut at this size (a forwarded chain can be long). */
const MAX_ORIGINAL_HEADERS = 32 * 1024;
/**
 * RET=FULL returns a message up to this size; a larger one, or one that is not 7-bit (the notice is
 * plain ASCII), has its header section returned instead (as Postfix does beyond bounce_size_limit).
 */
const MAX_RETURNED_MESSAGE = 64 * 1024;

/** What differs between the three kinds of report. */
const WORDING: Record<NoticeAction, { subject: string; idPart: string; opening: (rcpt: string) => string[]; replyIntro: string; third: string }> = {
  failed: {
    subject: 'Undelivered Mail Returned to Sender', idPart: 'dsn',
    opening: (r) => [`Your message could not be delivered to <${r}>.`], replyIntro: 'The recipient\'s mail server said:', third: 'Undelivered message',
  },
  relayed: {
    subject: 'Successful Mail Delivery Report', idPart: 'relayed',
    opening: (r) => [`Your message was handed on to the mail server of <${r}>.`], replyIntro: 'That server said:', third: 'Message',
  },
  delayed: {
    // Postfix's subject and banner: a warning must not read as a failure, or the sender resends.
    subject: 'Delayed Mail (still being retried)', idPart: 'delayed',
    opening: (r) => ['####  THIS IS A WARNING ONLY.  YOU DO NOT NEED TO RESEND YOUR MESSAGE.  ####', '', `Your message to <${r}> has not been delivered yet.`],
    replyIntro: 'The recipient\'s mail server last said:', third: 'Delayed message',
  },
};

export function failureNotice(n: FailureNoticeInput): Buffer {
  const boundary = `=_sluice-dsn-${n.msgId}-${n.idx}`;
  const host = oneLine(n.hostname);
  const reply = n.remoteReply === null ? null : oneLine(n.remoteReply);
  const action = n.action ?? 'failed';
  const words = WORDING[action];
  // RET applies to a report of failure (RFC 3461 §4.3); one of success or delay returns the headers.
  const failed = action === 'failed';
  const whole = failed && n.ret === 'FULL' && n.original ? returnable(n.original) : null;
  const human = [
    `This is the mail system at host ${host}.`,
    '',
    ...words.opening(oneLine(n.recipient)),
    oneLine(n.explanation),
    ...(reply !== null ? ['', words.replyIntro, `    ${reply}`] : []),
    ...(n.original === null ? ['', 'The message is no longer stored here, so it is not returned.'] : failed && n.ret === 'FULL' && !whole ? ['', 'The message was too large to return (or not 7-bit): only its header section is attached.'] : []),
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
    `Action: ${action}`,
    `Status: ${n.status}`,
    ...(n.remoteMta ? [`Remote-MTA: dns; ${oneLine(n.remoteMta)}`] : []),
    ...(reply !== null ? [`Diagnostic-Code: smtp; ${reply}`] : []),
    `Last-Attempt-Date: ${formatRfc5322Date(n.now)}`,
    ...(action === 'delayed' && n.retryUntil !== undefined ? [`Will-Retry-Until: ${formatRfc5322Date(n.retryUntil)}`] : []),
  ];
  const head = [
    `From: Mail Delivery System <MAILER-DAEMON@${host}>`,
    `To: <${oneLine(n.to)}>`,
    `Subject: ${words.subject}`,
    `Date: ${formatRfc5322Date(n.now)}`,
    // A report of relay (or a warning) and a later one of failure about the same copy are two messages.
    `Message-ID: <${words.idPart}.${n.msgId}.${n.idx}@${host}>`,
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
    `--${boundary}${n.original === null ? '--' : ''}`,
  ];
  if (n.original === null) return Buffer.from(`${text.join('\r\n')}\r\n`, 'latin1');
  const third = [
    ...(whole ? ['Content-Description: Undelivered message', 'Content-Type: message/rfc822'] : [`Content-Description: ${words.third} headers`, 'Content-Type: text/rfc822-headers']),
    '',
  ];
  return Buffer.concat([Buffer.from(`${[...text, ...third].join('\r\n')}\r\n`, 'latin1'), whole ?? originalHeaders(headerSection(n.original)), Buffer.from(`\r\n--${boundary}--\r\n`, 'latin1')]);
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
