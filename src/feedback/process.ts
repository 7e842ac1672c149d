import type { ReputationRecorder } from '../store/reputation.js';
import type { Logger } from 'pino';
import type { RedisClient } from '../redis/client.js';
import type { Keys } from '../redis/keys.js';
import { classifyMessage, type BounceRecord } from '../bounces/index.js';
import { looksLikeBounce } from '../bounces/detect.js';
import { parseMessage } from '../bounces/mime.js';
import { isId } from '../core/ids.js';
import { DAY } from '../core/time.js';
import { appendEvent, type EventType } from '../store/events.js';
import { markUnsubscribe } from '../store/engagement.js';
import type { MessageMeta } from '../store/messages.js';
import { claimFeedbackCount, copyDelivery, liveAddress, noteFeedbackStep, markRecipient, messageFor, unsubscribeRecipient, type MessageView } from '../store/recipients.js';
import { addSuppression, attachEvidence, normaliseForSuppression, GLOBAL_LIST, type SuppressionReason } from '../store/suppression.js';
import { appendedEvent, keepAppendedEvent, recordOutcome, type FeedbackOutcome } from './raw-store.js';
import { dropFeedback } from '../store/feedback-stored.js';
import { copiesInText, feedbackRecipient, MAX_QUOTED_CANDIDATES, type VerifyUnsubscribeToken } from './recipients.js';
import { recordSoftBounce } from '../store/soft-bounces.js';
import { deletionDue } from '../store/account-state.js';
import { tombstoneOf } from '../store/tombstone.js';
import { faultOf, feedbackTypeLabel, verdictOf, type Verdict } from '../bounces/verdict.js';

/**
 * What one stored feedback mail does. The envelope recipient decides WHO it is about — a VERP
 * return path names the message and recipient, whatever the body says (or fails to say); the
 * classifier decides WHAT happened. Mail to the FBL address carries no VERP in its envelope, so
 * the returned message inside the report is searched for what only its copy carries, signed (its
 * Return-Path, its List-Unsubscribe token or mailto: recipients.ts copiesInText), then for a
 * Message-ID Sluice minted. A Message-ID names the message, not the copy, and the recipient a report
 * names is the reporter's to write: any recipient of a message could name another. So a Message-ID
 * is acted on only for a message of one recipient; for several it is kept as 'ambiguous' for the
 * operator, and nobody is suppressed.
 *
 * Every action is one event on the stream with ids, reason and status — never content or addresses.
 */
export interface FeedbackMetricsHook {
  /** Stored mail by what processing made of it. */
  outcome?(outcome: FeedbackOutcome): void;
  /** sluice_bounces_total{reason,hard} for asynchronous bounces (verdict 'hard' → hard="true"). */
  bounce?(reason: string, verdict: 'hard' | 'soft'): void;
  /** sluice_complaints_total{type}: type is a registered ARF feedback type, else 'other'. */
  complaint?(type: string): void;
  /** sluice_suppressions_added_total{list,reason}: list 'global' | 'account'. */
  suppressed?(list: 'global' | 'account', reason: SuppressionReason): void;
  /** sluice_events_total{type} */
  event?(type: string): void;
}

export interface FeedbackDeps {
  readonly redis: RedisClient;
  readonly keys: Keys;
  readonly logger: Logger;
  readonly metrics?: FeedbackMetricsHook | undefined;
  readonly now?: (() => number) | undefined;
  /** Complaints and address-level hard bounces count against the sender's reputation. */
  readonly reputation?: ReputationRecorder | undefined;
  /**
   * Passes a copy's failure on to the sender of its message (app/notices.ts: an SMTP submitter, whose
   * return path the copy's VERP address replaced, gets a failure notice); rejects when the notice
   * cannot be queued.
   */
  readonly reportFailure?: ((failure: LaterFailure) => Promise<void>) | undefined;
}

/** A copy the next hop took and later reported undeliverable, as reportFailure gets it. */
export interface LaterFailure {
  readonly meta: MessageMeta;
  readonly idx: number;
  readonly address: string;
  readonly record: BounceRecord;
  readonly now: number;
}

/**
 * The verdicts that say the copy was not delivered (the address's failure, the sender's, or the
 * message's): its sender is told. A delay warning is not a failure (the next hop keeps trying, and
 * Sluice sends no delay warnings), nor an auto-reply or a complaint.
 */
const UNDELIVERED: ReadonlySet<Verdict> = new Set(['hard', 'soft', 'sender', 'message']);

export interface ProcessOptions {
  /** Lower-case bounce domains of the VERP addresses. */
  readonly bounceDomains: readonly string[];
  readonly fblAddresses: readonly string[];
  readonly verifyUnsubscribeToken?: VerifyUnsubscribeToken | undefined;
  /** Key of the VERP tags: forged VERP addresses are not matched. */
  readonly verpKey?: Buffer | undefined;
  /** Soft bounces (this many, within softBounceWindowMs, with no delivery between) suppress globally. */
  readonly softBounceLimit: number;
  readonly softBounceWindowMs: number;
  readonly eventsMaxLen: number;
  /** How long stored mail is kept (also bounds the unprocessed index). */
  readonly rawRetentionMs: number;
  /** How long per-recipient marks (an unsubscribe's first/repeat) are kept: config retention.records. Default 90 days. */
  readonly recordsRetentionMs?: number | undefined;
}

const DEFAULT_RECORDS_RETENTION_MS = 90 * DAY;

export interface FeedbackMail {
  readonly id: string;
  readonly raw: Buffer;
  readonly rcpts: readonly string[];
  readonly receivedAt: number;
}

export interface FeedbackAction {
  readonly msgId: string;
  readonly idx: number;
  readonly verdict: Verdict | 'unsubscribe';
  readonly reason: string;
  readonly status: string;
  /** List the recipient was added to: '*' (global), the account id, or '' when not suppressed. */
  readonly suppressed: string;
  /** Stream id of the event, '' when none was written (success notices). */
  readonly eventId: string;
}

export interface ProcessResult {
  readonly outcome: FeedbackOutcome;
  readonly actions: readonly FeedbackAction[];
}

interface Target {
  readonly msgId: string;
  /** Undefined for a Message-ID match: the index comes from the recipient the report names. */
  readonly idx: number | undefined;
  /**
   * 'verp' and 'unsubscribe' are our own envelope; 'quoted' is a copy's signed data read from the
   * mail (as good: only that copy carried it); 'message-id' names the message only.
   */
  readonly via: 'verp' | 'unsubscribe' | 'quoted' | 'message-id';
}

/** Targets per mail: a bounce is about one copy; a few more cover a digest of several reports. */
const MAX_TARGETS = 10;
/**
 * Sluice's Message-IDs are <msgId@hostname> (render/raw.ts); a hit only counts once the report names
 * one of its recipients. Only a Message-ID field is read, and after the report's own header (that
 * is the returned message's): an id in References or In-Reply-To names another message of the
 * thread, which the complaint is not about (a reply to a Sluice message sent from elsewhere, a
 * support thread of several), and anywhere in a body it is anyone's text.
 */
const MESSAGE_ID_RE = /^Message-ID:[ \t]*(?:\r?\n[ \t]+)?<([0-9a-hjkmnp-tv-z]{16})@[^>\s]{1,255}>/gim;

export async function processFeedback(deps: FeedbackDeps, opts: ProcessOptions, mail: FeedbackMail): Promise<ProcessResult> {
  const records = await classifyMessage(mail.raw);
  const { targets, postmaster, guessing } = findTargets(opts, mail);
  if (guessing) deps.logger.warn({ feedbackId: mail.id, max: MAX_QUOTED_CANDIDATES }, 'feedback mail quotes more candidate copies than a report would: not searched, kept as unparsed');
  const actions: FeedbackAction[] = [];
  let matched = false;
  // A Message-ID of a message of several recipients, and nothing that says whose copy: see above.
  let ambiguous = false;
  // A mail that is guessing is garbage, whatever the classifier made of it.
  let understood = records.length > 0 && !guessing;
  // Our own VERP or unsubscribe address naming an erased recipient (a tombstone): about nobody now.
  let erased = false;
  // A message of an account whose deletion is due or done: as if its record were gone (see below).
  let accountDeleted = false;
  const now = deps.now?.() ?? Date.now();

  for (const target of targets) {
    const stored = await messageFor(deps.redis, deps.keys, target.msgId, target.idx);
    if (!stored) {
      // A message erased whole (or its recipient, once the record expired) or a deleted account's
      // leaves a tombstone (store/tombstone.ts): mail about it is about an erased person, or a
      // deleted account's recipient, as while the record was kept. Without one it is unknown.
      const gone = await tombstoneOf(deps.redis, deps.keys, target.msgId, target.via === 'message-id' ? undefined : target.idx);
      if (gone === 'erased') erased = true;
      else if (gone === 'account-deleted') accountDeleted = true;
      if (gone !== null) deps.logger.info({ msgId: target.msgId, feedbackId: mail.id, gone }, 'feedback about a message whose record was removed: not acted on');
      continue;
    }
    const meta = stored.meta;
    // The retention walk removes such an account's keys in keyspace order: a suppression, mark, count
    // or event written now, after the walk passed its key, would outlive the deletion (as the
    // tracking server's unsubscribe refuses, tracking/unsubscribe.ts). Nothing is done for it,
    // whatever the mail says; a hard bounce's global suppression included, since it names the copy.
    if (await deletionDue(deps.redis, deps.keys, meta.account, now)) {
      accountDeleted = true;
      deps.logger.info({ msgId: meta.id, account: meta.account, feedbackId: mail.id }, "feedback about a message of an account being deleted: not acted on");
      continue;
    }
    if (target.via === 'message-id' && meta.rcpts.length > 1) {
      ambiguous = true;
      deps.logger.info({ msgId: meta.id, feedbackId: mail.id }, 'feedback names a message of several recipients by its Message-ID only: not acted on');
      continue;
    }
    // A quoted copy is named by its own signed data, as a VERP names it: as good a sign of whose it was.
    if (target.via !== 'message-id' && target.idx !== undefined && meta.rcpts[target.idx] && liveAddress(meta, target.idx) === undefined) erased = true;
    // A campaign's erased contact is gone from its list, not a tombstone in the record: its x:<no> mark says so.
    if (stored.listId !== null && target.via !== 'message-id' && target.idx !== undefined && meta.rcpts[target.idx] === undefined && (await tombstoneOf(deps.redis, deps.keys, meta.id, target.idx)) === 'erased') erased = true;
    if (target.via === 'unsubscribe') {
      // An erased recipient (a tombstone) is nobody to act on: liveAddress is undefined for it.
      const address = liveAddress(meta, target.idx);
      if (address === undefined || target.idx === undefined) continue;
      matched = true;
      actions.push(await unsubscribe(deps, opts, mail, stored, target.idx, address));
      continue;
    }
    const recs = records.length === 0 && target.via === 'verp' ? await classifyNaming(mail.raw, meta, target.idx) : records;
    if (recs.length > 0) understood = true;
    const pick = pickRecord(recs, meta, target);
    // Our own VERP names a copy we sent: matched, even when the body says nothing actionable.
    if (target.via === 'verp' && liveAddress(meta, target.idx) !== undefined) matched = true;
    if (!pick) continue;
    matched = true;
    const action = await act(deps, opts, mail, stored, pick.idx, pick.address, pick.record);
    if (action) actions.push(action);
  }

  if (erased || (accountDeleted && !postmaster && actions.length === 0)) {
    // Kept, the mail would carry the erased person's VERP address (and maybe more) past their
    // erasure, or a deleted account's recipient's past the account's deletion, found by nothing: it
    // is dropped, and counts as handled ('account-deleted' for the latter). About an erased person it
    // is dropped even when it was acted on for another copy it names too (mixed mail): nothing in it
    // can be told from the erased person's part, and the tombstone holds no address to redact by.
    // Those actions stand; their events name a mail no longer kept.
    await dropFeedback(deps.redis, deps.keys, mail.id);
    const outcome: FeedbackOutcome = erased ? 'processed' : 'account-deleted';
    deps.metrics?.outcome?.(outcome);
    return { outcome, actions };
  }
  const unsubscribing = targets.some((t) => t.via === 'unsubscribe');
  const outcome: FeedbackOutcome = actions.length > 0 ? 'processed'
    : accountDeleted ? 'account-deleted'
    : !understood && !unsubscribing ? 'unparsed'
    : matched ? 'processed' : ambiguous ? 'ambiguous' : 'unmatched';
  deps.metrics?.outcome?.(outcome);
  // Mail to postmaster is a person's, for the operator to read, whatever else it was sent to.
  await recordOutcome(deps.redis, deps.keys, mail.id, outcome, mail.receivedAt, opts.rawRetentionMs, outcome !== 'processed' || postmaster);
  return { outcome, actions };
}

/**
 * What the mail is about, whether postmaster is among its recipients, and whether it quotes more
 * candidate copies than a report would (recipients.ts MAX_QUOTED_CANDIDATES): then it names nothing.
 */
function findTargets(opts: ProcessOptions, mail: FeedbackMail): { targets: Target[]; postmaster: boolean; guessing: boolean } {
  const out: Target[] = [];
  const seen = new Set<string>();
  const add = (t: Target) => {
    const key = `${t.msgId}:${t.idx ?? ''}`;
    if (seen.has(key) || out.length >= MAX_TARGETS) return;
    seen.add(key);
    out.push(t);
  };
  let fbl = false;
  let postmaster = false;
  for (const rcpt of mail.rcpts) {
    const r = feedbackRecipient(rcpt, opts);
    if (r?.kind === 'verp') add({ msgId: r.msgId, idx: r.idx, via: 'verp' });
    else if (r?.kind === 'unsubscribe') add({ msgId: r.msgId, idx: r.idx, via: 'unsubscribe' });
    else if (r?.kind === 'fbl') fbl = true;
    // postmaster: a person's mail, kept for the operator (listed), never a target.
    else if (r?.kind === 'postmaster') postmaster = true;
  }
  if (fbl && out.length === 0) {
    // latin1 maps every byte to one char: the regexes see ASCII exactly, whatever the charset.
    const text = mail.raw.toString('latin1');
    const quoted = copiesInText(text, opts, MAX_TARGETS);
    // A report is about a few copies: a mail quoting that many candidates is guessing (or garbage),
    // and is not searched further, for a Message-ID either.
    if (quoted.tooMany) return { targets: [], postmaster, guessing: true };
    for (const v of quoted.copies) add({ msgId: v.msgId, idx: v.idx, via: 'quoted' });
    if (out.length === 0) {
      // One message at most: a report is about the message it returns, whose header is the first after the report's own.
      const ownHeaderEnd = text.search(/\r?\n\r?\n/);
      for (const m of text.matchAll(MESSAGE_ID_RE)) {
        const id = (m[1] as string).toLowerCase();
        if (ownHeaderEnd === -1 || (m.index ?? 0) < ownHeaderEnd || !isId(id)) continue;
        add({ msgId: id, idx: undefined, via: 'message-id' });
        break;
      }
    }
  }
  return { targets: out, postmaster, guessing: false };
}

/**
 * A bounce that names no recipient ("your message could not be delivered", no address anywhere)
 * yields no record, though the VERP says whose copy it was. Exim's X-Failed-Recipients header is
 * how a bounce states that recipient, and the classifier reads it: so the same mail is classified
 * again with the VERP's recipient stated there, and the notice text supplies the reason.
 */
async function classifyNaming(raw: Buffer, meta: MessageMeta, idx: number | undefined): Promise<BounceRecord[]> {
  const address = liveAddress(meta, idx);
  if (address === undefined || /[\r\n]/.test(address) || !looksLikeBounceMail(raw)) return [];
  return classifyMessage(Buffer.concat([Buffer.from(`X-Failed-Recipients: ${address}\r\n`), raw]));
}

/** Only a mail that presents itself as a bounce may have its recipient supplied: garbage stays garbage. */
function looksLikeBounceMail(raw: Buffer): boolean {
  try {
    return raw.length > 0 && looksLikeBounce(parseMessage(raw).headers, false);
  } catch {
    return false;
  }
}

/**
 * The record about this target's recipient. A record naming the recipient wins; otherwise, for a
 * VERP (ours, so authoritative) the report is about that copy whatever address the body names — a
 * forwarder's final address, or none at all. A Message-ID match (a message of one recipient) needs
 * the report to name that recipient, or it is not ours to act on.
 *
 * A record that names our address as its Original-Recipient and another as its Final-Recipient
 * (RFC 3464 §2.3: the address the reporting MTA tried, after aliasing) reports a member of an alias
 * or a forward target, not the address we sent to: Postfix's DSN for one dead member of a virtual
 * alias is such a record, and the alias still reached its other members. Its hard failure counts as
 * a soft bounce of our address (suppressed after feedback.softBounceLimit of them, as an address
 * whose mail fails downstream every time should be), never puts it on the global list at once.
 */
function pickRecord(records: readonly BounceRecord[], meta: MessageMeta, target: Target): { record: BounceRecord; idx: number; address: string } | undefined {
  // A Message-ID is no proof of whose copy it was (message ids are not secret: a forward shows it):
  // it finds the message of a feedback report (ARF), which acts per account; a bounce by it alone,
  // which would put the address on the global list, is anyone's to forge.
  const useful = records.filter((r) => verdictOf(r) !== 'ignore' && (target.via !== 'message-id' || FEEDBACK_VERDICTS.has(verdictOf(r))));
  if (target.idx !== undefined) {
    const address = liveAddress(meta, target.idx);
    if (address === undefined) return undefined;
    const norm = normaliseForSuppression(address);
    const named = useful.find((r) => r.recipient !== '' && normaliseForSuppression(r.recipient) === norm);
    const expanded = named ? undefined : useful.find((r) => r.originalRecipient !== undefined && normaliseForSuppression(r.originalRecipient) === norm);
    if (expanded) return { record: verdictOf(expanded) === 'hard' ? { ...expanded, hardbounce: false } : expanded, idx: target.idx, address };
    const record = named ?? useful[0];
    return record ? { record, idx: target.idx, address } : undefined;
  }
  for (const record of useful) {
    if (record.recipient === '') continue;
    const norm = normaliseForSuppression(record.recipient);
    const idx = meta.rcpts.findIndex((r) => normaliseForSuppression(r.address) === norm);
    if (idx >= 0) return { record, idx, address: (meta.rcpts[idx] as { address: string }).address };
  }
  return undefined;
}

/** The verdicts of a feedback report (ARF): what a Message-ID alone may be acted on for. */
const FEEDBACK_VERDICTS: ReadonlySet<Verdict> = new Set(['complaint', 'optout', 'notspam', 'report']);

const EVENT_OF: Readonly<Record<Verdict, EventType | ''>> = {
  complaint: 'complained',
  optout: 'unsubscribed',
  notspam: 'feedback',
  report: 'feedback',
  hard: 'bounced',
  soft: 'bounced',
  sender: 'bounced',
  message: 'bounced',
  delayed: 'delayed',
  autoreply: 'autoreply',
  ignore: '',
};

async function act(
  deps: FeedbackDeps,
  opts: ProcessOptions,
  mail: FeedbackMail,
  view: MessageView,
  idx: number,
  address: string,
  record: BounceRecord,
): Promise<FeedbackAction | undefined> {
  const meta = view.meta;
  const verdict = verdictOf(record);
  const type = EVENT_OF[verdict];
  if (type === '') return undefined;
  const now = deps.now?.() ?? Date.now();
  const m = deps.metrics;

  // Decide the suppression first, so the event says what was done.
  let list = '';
  let reason: SuppressionReason | undefined;
  if (verdict === 'complaint') [list, reason] = [meta.account, 'complaint'];
  else if (verdict === 'optout') [list, reason] = [meta.account, 'unsubscribe'];
  else if (verdict === 'hard') [list, reason] = [GLOBAL_LIST, 'hardbounce'];
  else if (verdict === 'soft') {
    const count = await recordSoftBounce(deps.redis, deps.keys, address, `${meta.id}:${idx}`, now, opts.softBounceWindowMs);
    if (count >= opts.softBounceLimit) [list, reason] = [GLOBAL_LIST, 'softbounce'];
  }

  const fields: Record<string, string | number> = {
    source: 'feedback',
    feedbackId: mail.id,
    msgId: meta.id,
    idx,
    account: meta.account,
    reason: record.reason,
  };
  if (record.status) fields['status'] = record.status;
  if (type === 'bounced' || type === 'delayed') {
    fields['hard'] = record.hardbounce ? 1 : 0;
    fields['fault'] = faultOf(verdict);
  }
  if (record.feedbacktype !== null) fields['feedbacktype'] = feedbackTypeLabel(record.feedbacktype);
  if (list !== '') fields['suppressed'] = list;
  // The suppression is written before the event that says so (a webhook consumer may look it up at
  // once, and a failed write must not leave an event claiming it), then given the event's id as
  // evidence: one more write of the same field.
  const suppression = list !== '' && reason !== undefined ? { list, reason, evidence: { feedbackId: mail.id, msgId: meta.id, idx, ...(record.status ? { status: record.status } : {}) } } : null;
  if (suppression) await addSuppression(deps.redis, deps.keys, suppression.list, address, { reason: suppression.reason, at: now, evidence: suppression.evidence });
  const { id: eventId, fresh } = await eventOnce(deps, mail, meta.id, idx, () => appendEvent(deps.redis, deps.keys, type, fields, opts.eventsMaxLen));
  if (fresh) m?.event?.(type);
  if (suppression) {
    // No id: the copy is being erased (store/privacy.ts), which keeps the suppression as a digest only.
    // Only while still listed: an erasure that ran meanwhile keeps the address as its digest alone.
    if (eventId !== '') await attachEvidence(deps.redis, deps.keys, suppression.list, address, { reason: suppression.reason, at: now, evidence: { event: eventId, ...suppression.evidence } });
    m?.suppressed?.(suppression.list === GLOBAL_LIST ? 'global' : 'account', suppression.reason);
  }
  // A complaint or hard bounce of a copy counts once, however many reports of it arrive: the first
  // mail claims the count, and each step is noted once done, so that this mail's processing, failed
  // and tried again, does what is left (a failure is not swallowed: the guards would miss the count).
  const counts = verdict === 'complaint' || verdict === 'hard';
  const kind = verdict === 'complaint' ? 'complaint' : 'hardbounce';
  const claim = counts ? await claimFeedbackCount(deps.redis, deps.keys, meta.id, idx, kind, now, opts.recordsRetentionMs ?? DEFAULT_RECORDS_RETENTION_MS, mail.id) : null;
  const counting = claim?.counting === true;
  // A copy bounced by mail was mostly taken by the remote server first, and counted delivered then;
  // one reported while deferred, or after it expired, was not.
  const delivery = counting ? await copyDelivery(deps.redis, deps.keys, meta, idx) : null;
  const wasDelivered = verdict === 'hard' && delivery?.delivered === true;
  const status = verdict === 'complaint' ? 'complained' : verdict === 'optout' ? 'unsubscribed' : verdict === 'hard' ? 'bounced' : null;
  if (status && (!counts || (counting && !claim.done.has('c')))) {
    await markRecipient(deps.redis, deps.keys, view, idx, status, now, record.reason, wasDelivered);
    if (counting) await noteFeedbackStep(deps.redis, deps.keys, meta.id, idx, kind, 'c');
  }
  if (view.listId !== null && counting) await deps.reputation?.judgeCampaign?.(meta.id);
  if (counting && !claim.done.has('r') && deps.reputation) {
    // Its id: this mail's retry (a failure, or a crash before the note below) counts the copy once.
    await deps.reputation.record({ account: meta.account, domain: meta.fromDomain || null, kind, wasDelivered, deliveredAt: delivery?.at ?? undefined, id: `f:${mail.id}:${meta.id}:${idx}:${kind}` });
    await noteFeedbackStep(deps.redis, deps.keys, meta.id, idx, kind, 'r');
  }
  if (type === 'bounced') m?.bounce?.(record.reason, record.hardbounce ? 'hard' : 'soft');
  if (verdict === 'complaint' || verdict === 'optout' || verdict === 'notspam' || verdict === 'report') m?.complaint?.(feedbackTypeLabel(record.feedbacktype));
  deps.logger.info({ msgId: meta.id, feedbackId: mail.id, idx, verdict, reason: record.reason, status: record.status, suppressed: list }, 'feedback applied');
  // Last, once the bounce is acted on: a notice that cannot be queued fails this mail's processing,
  // which keeps it as 'failed' (inbound-mx.ts), listed by `sluice bounce list`, and tries it again.
  if (deps.reportFailure && UNDELIVERED.has(verdict)) {
    await deps.reportFailure({ meta, idx, address, record, now }).catch((err: unknown) => {
      deps.logger.error({ err, msgId: meta.id, feedbackId: mail.id, idx }, 'could not queue the failure notice to the sender');
      throw err;
    });
  }
  return { msgId: meta.id, idx, verdict, reason: record.reason, status: record.status, suppressed: list, eventId };
}

/**
 * The event of this mail's action on one copy, appended once: its id is kept on the stored mail
 * (raw-store.ts), so a processing tried again after failing partway (inbound-mx.ts) finds it and
 * appends none. The rest of an action is idempotent by itself (suppressions, marks, counts, the
 * notice's id).
 */
async function eventOnce(deps: FeedbackDeps, mail: FeedbackMail, msgId: string, idx: number, append: () => Promise<string>): Promise<{ id: string; fresh: boolean }> {
  const prior = await appendedEvent(deps.redis, deps.keys, mail.id, msgId, idx);
  if (prior) return { id: prior, fresh: false };
  const id = await append();
  await keepAppendedEvent(deps.redis, deps.keys, mail.id, msgId, idx, id);
  return { id, fresh: true };
}

/** Mail to an unsubscribe mailto address: the same effect as the one-click POST (RFC 8058). */
async function unsubscribe(deps: FeedbackDeps, opts: ProcessOptions, mail: FeedbackMail, view: MessageView, idx: number, address: string): Promise<FeedbackAction> {
  const meta = view.meta;
  const now = deps.now?.() ?? Date.now();
  // Marked and counted as the one-click POST is (first or repeat, the message's `unsubscribes`), and
  // the event has that path's fields (tracking/record.ts eventFlat), with via 'mail'.
  const first = await markUnsubscribe(deps.redis, deps.keys, meta.id, idx, now, opts.recordsRetentionMs ?? DEFAULT_RECORDS_RETENTION_MS);
  // Suppressed before the event that says so, then given its id as evidence (as act() does).
  const evidence = { feedbackId: mail.id, msgId: meta.id, idx };
  await unsubscribeRecipient(deps.redis, deps.keys, view, idx, address, { now, evidence });
  const { id: eventId, fresh } = await eventOnce(deps, mail, meta.id, idx, () => appendEvent(
    deps.redis, deps.keys, 'unsubscribed',
    { at: now, account: meta.account, msgId: meta.id, idx, first: first ? 1 : 0, machine: 0, via: 'mail', source: 'mailto', feedbackId: mail.id, suppressed: meta.account },
    opts.eventsMaxLen,
  ));
  if (fresh) deps.metrics?.event?.('unsubscribed');
  if (eventId !== '') await attachEvidence(deps.redis, deps.keys, meta.account, address, { reason: 'unsubscribe', at: now, evidence: { event: eventId, ...evidence } });
  deps.metrics?.suppressed?.('account', 'unsubscribe');
  deps.logger.info({ msgId: meta.id, feedbackId: mail.id, idx }, 'unsubscribed by mail');
  return { msgId: meta.id, idx, verdict: 'unsubscribe', reason: 'unsubscribe', status: '', suppressed: meta.account, eventId };
}
