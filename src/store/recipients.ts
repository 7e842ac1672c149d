import type { RedisClient } from '../redis/client.js';
import type { Keys } from '../redis/keys.js';
import { toMeta, type MessageMeta, type StoredRecipient } from './messages.js';
import { recordCampaignOutcome, toCampaign } from './campaigns.js';
import { readContacts, setContactStatus, type ContactStatus } from './contacts.js';
import { addSuppression } from './suppression.js';
import { domainOf } from '../core/address.js';

/**
 * Who a (message id, recipient index) pair names, for the parts that start from a token or a VERP
 * address (tracking, feedback). A message lists its recipients; a campaign's recipient `idx` is
 * contact number `idx` of the campaign's list.
 */
export interface MessageView {
  readonly meta: MessageMeta;
  /** The campaign's list, when the id is a campaign's; null for a message. */
  readonly listId: string | null;
}

/**
 * A message's meta; for a campaign, a meta whose `rcpts` holds the contact at `idx` only (the list
 * may hold millions: nothing else of it is read). null when neither is stored. Both share the
 * {m:<id>}:meta layout, so one HGETALL tells which it is.
 */
export async function messageFor(redis: RedisClient, keys: Keys, msgId: string, idx?: number): Promise<MessageView | null> {
  const h = await redis.hgetall(keys.msgMeta(msgId));
  const meta = toMeta(msgId, h);
  if (meta) return { meta, listId: null };
  const c = toCampaign(msgId, h);
  if (!c) return null;
  const rcpts: { address: string; domain: string }[] = [];
  if (idx !== undefined && Number.isSafeInteger(idx) && idx > 0) {
    const [contact] = await readContacts(redis, keys, c.listId, [idx]);
    const address = contact?.email ?? (await goneContact(redis, keys, c.id, c.listId, idx));
    if (address) rcpts[idx] = { address, domain: domainOf(address) };
  }
  return {
    listId: c.listId,
    meta: {
      id: c.id, account: c.account, source: 'http', kind: 'spec', from: c.from, fromDomain: c.fromDomain, rcpts,
      acceptedAt: c.startedAt ?? c.createdAt, tags: c.tags, metadata: {}, pending: c.pending,
    },
  };
}

/**
 * The address of a campaign's recipient whose contact was deleted since: kept under its number in
 * {m:<id>}:gone (store/privacy.ts keepCopiesFindable); when the whole list was deleted, found in the
 * list's address index, which a list that campaigns were sent to keeps (contacts.ts deleteList): a
 * walk of it (HSCAN; rare: an unsubscribe, bounce or complaint of a deleted list's copy), whose
 * answer is then kept in {m:<id>}:gone for the next time. Undefined when neither has it (erased,
 * expired, or the list was deleted for good).
 */
async function goneContact(redis: RedisClient, keys: Keys, campaignId: string, listId: string, no: number): Promise<string | undefined> {
  const kept = await redis.hget(keys.campaignGone(campaignId), String(no));
  // '' : a walk found no such number before (kept, so the next request does not walk again).
  if (kept !== null) return kept === '' ? undefined : kept;
  if ((await redis.exists(keys.listMeta(listId))) === 1) return undefined;
  const emails = keys.listEmails(listId);
  const ttl = await redis.pttl(emails);
  if (ttl <= 0) return undefined;
  const want = String(no);
  let cursor = '0';
  do {
    const [next, flat] = await redis.hscan(emails, cursor, 'COUNT', 1000);
    cursor = next;
    for (let i = 0; i + 1 < flat.length; i += 2) {
      if (flat[i + 1] !== want) continue;
      const address = flat[i] as string;
      await redis.multi().hset(keys.campaignGone(campaignId), want, address).pexpire(keys.campaignGone(campaignId), ttl).exec();
      return address;
    }
  } while (cursor !== '0');
  await redis.multi().hset(keys.campaignGone(campaignId), want, '').pexpire(keys.campaignGone(campaignId), ttl).exec();
  return undefined;
}

/**
 * The address of recipient `idx`, or undefined when there is none or it was erased: an erased
 * recipient (store/privacy.ts) is a tombstone with an empty address, kept so the others' indexes
 * hold. Whatever starts from a token or a VERP address (an unsubscribe, a bounce, a complaint) acts
 * only on a live address, as the dispatcher sends only to one, so an erased person's old links and
 * bounces write nothing about them again.
 */
export function liveAddress(meta: MessageMeta, idx: number | undefined): string | undefined {
  if (idx === undefined) return undefined;
  const r = meta.rcpts[idx] as (StoredRecipient & { readonly erased?: boolean }) | undefined;
  return r && r.erased !== true && r.address !== '' ? r.address : undefined;
}

/**
 * What a recipient's unsubscribe, complaint or hard bounce does to a campaign's contact: its status
 * changes (a later campaign to the list leaves it out), and a complaint is counted in the campaign's
 * stats. Nothing for a message.
 */
export async function markRecipient(redis: RedisClient, keys: Keys, view: MessageView, idx: number, status: Exclude<ContactStatus, 'subscribed'>, now: number, reason?: string, wasDelivered = false): Promise<void> {
  if (view.listId === null) return;
  await setContactStatus(redis, keys, view.listId, idx, status, now);
  if (status === 'complained') await recordCampaignOutcome(redis, keys, view.meta.id, { counter: 'complaints', final: false, now });
  // A hard bounce by mail of a copy counted delivered (the remote took it, then reported it): a bounce
  // instead, as the sender's figures count it (store/reputation.ts undoDelivered).
  if (status === 'bounced') await recordCampaignOutcome(redis, keys, view.meta.id, { counter: 'bounced', reason: reason ?? undefined, final: false, now, hardbounce: true, undoDelivered: wasDelivered });
}

/**
 * Whether recipient `idx`'s copy is recorded delivered (its delivery record, kept retention.records
 * after its outcome): a hard bounce reported by mail then takes back a delivery counted at its 250,
 * which a copy that bounced at RCPT, expired or is still deferred never had. `at`: when it was
 * delivered (null: not, or not said).
 */
export async function copyDelivery(redis: RedisClient, keys: Keys, meta: MessageMeta, idx: number): Promise<{ delivered: boolean; at: number | null }> {
  const r = meta.rcpts[idx];
  if (!r || r.domain === '') return { delivered: false, at: null };
  const [state, at] = await redis.hmget(keys.rcptState(r.domain, meta.id, idx), 'state', 'updatedAt');
  if (state !== 'delivered') return { delivered: false, at: null };
  return { delivered: true, at: Number(at) > 0 ? Number(at) : null };
}

/**
 * Marks that a complaint or an address-level hard bounce of recipient `idx` was counted (in the
 * campaign's stats and the sender's reputation figures): true the first time, false for a repeat —
 * a provider's duplicate report, a relay retrying its DSN, or a recipient mailing their own VERP
 * again, which would otherwise count again and could alone push a campaign past the 0.3 % line.
 * Kept in the message's tracking marks ({m:<id>}:track, "fc:<idx>" and "fh:<idx>"), with their TTL
 * (renewed as recordTrackingEvent-4.lua does), and erased with them (eraseRecipient-5.lua).
 */
export async function firstFeedback(redis: RedisClient, keys: Keys, msgId: string, idx: number, kind: 'complaint' | 'hardbounce', now: number, ttlMs: number): Promise<boolean> {
  return (await claimFeedbackCount(redis, keys, msgId, idx, kind, now, ttlMs, '')).counting;
}

/** A step of counting a copy's complaint or hard bounce: 'c' its campaign (markRecipient), 'r' the sender's reputation. */
export type FeedbackCountStep = 'c' | 'r';

/**
 * firstFeedback for the feedback processor, whose processing of a mail is tried again when it fails:
 * the mark ("<time>|<feedbackId>|<steps done>") names the mail that claimed the count, so a retry of
 * that mail does the steps a failure left undone (noteFeedbackStep), while another report of the
 * copy counts nothing. `counting`: this mail counts the copy (first now, or claimed it before);
 * `done`: its steps done so far. A mark of a bare time (written before steps were noted) counted
 * every step.
 */
export async function claimFeedbackCount(
  redis: RedisClient, keys: Keys, msgId: string, idx: number, kind: 'complaint' | 'hardbounce', now: number, ttlMs: number, feedbackId: string,
): Promise<{ readonly counting: boolean; readonly done: ReadonlySet<FeedbackCountStep> }> {
  const marks = keys.trackMarks(msgId);
  const field = feedbackMarkField(kind, idx);
  const res = await redis.multi().hsetnx(marks, field, `${now}|${feedbackId}|`).hget(marks, field).pexpire(marks, Math.max(1, Math.floor(ttlMs))).exec();
  if (res?.[0]?.[1] === 1) return { counting: true, done: new Set() };
  const [, claimer, steps] = String(res?.[1]?.[1] ?? '').split('|');
  if (steps === undefined || feedbackId === '' || claimer !== feedbackId) return { counting: false, done: new Set() };
  const done = new Set(steps.split('').filter((s): s is FeedbackCountStep => s === 'c' || s === 'r'));
  return { counting: done.size < 2, done };
}

/** Notes a step of counting a copy's complaint or hard bounce as done (claimFeedbackCount); only while its mark is kept. */
export async function noteFeedbackStep(redis: RedisClient, keys: Keys, msgId: string, idx: number, kind: 'complaint' | 'hardbounce', step: FeedbackCountStep): Promise<void> {
  const marks = keys.trackMarks(msgId);
  const field = feedbackMarkField(kind, idx);
  const value = await redis.hget(marks, field);
  const steps = value?.split('|')[2];
  if (value !== null && steps !== undefined && !steps.includes(step)) await redis.hset(marks, field, value + step);
}

function feedbackMarkField(kind: 'complaint' | 'hardbounce', idx: number): string {
  return `${kind === 'complaint' ? 'fc' : 'fh'}:${idx}`;
}

/**
 * What every unsubscribe does, whichever way it came (the one-click POST or page, mail to the mailto
 * address): the address goes on the account's suppression list at once, so a later send is refused
 * at claim time, and a campaign contact's status becomes unsubscribed. The caller records its own
 * event (the channels' fields differ).
 */
export async function unsubscribeRecipient(
  redis: RedisClient,
  keys: Keys,
  view: MessageView,
  idx: number,
  address: string,
  o: { now: number; evidence: Readonly<Record<string, string | number>> },
): Promise<void> {
  await addSuppression(redis, keys, view.meta.account, address, { reason: 'unsubscribe', at: o.now, evidence: o.evidence });
  await markRecipient(redis, keys, view, idx, 'unsubscribed', o.now);
}
