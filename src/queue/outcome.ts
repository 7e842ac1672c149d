import type { Result } from 'ioredis';
import type { RedisClient } from '../redis/client.js';
import type { Keys } from '../redis/keys.js';
import { byDomain, entryMember, memberTokens, type QueueEntry } from './entry.js';
import { OUTCOME, truncateResponse } from './outcome-codes.js';
import { owedMember, type OwedCount } from '../redis/owed.js';

declare module 'ioredis' {
  interface RedisCommander<Context> {
    /** src/queue/lua/ack-3.lua */
    ack(leases: string, ready: string, rs: string, member: string, now: number, attempts: number, code: string, enhanced: string, response: string, ttlMs: number, owed?: string): Result<number, Context>;
    /** src/queue/lua/ack-3.lua with the message's four keys and/or the event stream added (single server). */
    ackKeys(numKeys: 4 | 5 | 6, ...keysThenArgs: (string | number)[]): Result<number, Context>;
    ackKeys(numKeys: 7 | 8, ...keysThenArgs: (string | number)[]): Result<[number, number], Context>;
    /** src/queue/lua/retry-3.lua with the event stream added (single server). */
    retryKeys(numKeys: 4, ...keysThenArgs: (string | number)[]): Result<number, Context>;
    /** src/queue/lua/bounce-3.lua with the event stream added (single server). */
    bounceKeys(numKeys: 4 | 5 | 6, ...keysThenArgs: (string | number)[]): Result<number, Context>;
    /** src/queue/lua/retry-3.lua */
    retry(leases: string, ready: string, rs: string, member: string, next: string, now: number, nextAt: number, attempts: number, code: string, enhanced: string, response: string, token: string): Result<number, Context>;
    /** src/queue/lua/bounce-3.lua */
    bounce(leases: string, ready: string, rs: string, member: string, now: number, state: string, attempts: number, code: string, enhanced: string, response: string, reason: string, ttlMs: number, waiting: '1' | '', token: string, owed?: string): Result<number, Context>;
    /** src/queue/lua/hold-3.lua */
    hold(leases: string, ready: string, rs: string, member: string, now: number, nextAt: number, enhanced: string, response: string, token: string): Result<number, Context>;
    /** src/queue/lua/release-2.lua: member, token, member, token, … */
    release(leases: string, ready: string, now: number, ...memberTokens: string[]): Result<number, Context>;
    /** src/queue/lua/extendLeases-1.lua: member, token, member, token, … */
    extendLeases(leases: string, until: number, ...memberTokens: string[]): Result<number[], Context>;
  }
}

/*
 * Each outcome is one script that removes the member from the lease set AND from the ready set (a
 * reaper may have put it back after our lease ran out), and applies only if it removed something.
 * So of ack, retry and bounce exactly one takes effect for an entry; the others find nothing and
 * change nothing. Each returns the script's reply: NOOP (0, falsy) when someone else settled it first.
 *
 * A lease is held under its claim's token (QueueEntry.lease, queue/lua/lib/lease.lua). When an entry
 * was reaped AND claimed again, the first holder's late retry, bounce, hold or give-back names the
 * old token and changes nothing (NOOP): the second holder, which is sending it now, settles it. A
 * late ack is the exception: the mail arrived, whoever sent it, so it settles the entry and the
 * second holder finds its lease gone (extendLeases: not sent again if not sent yet; its own outcome
 * is then the no-op). The mail was sent at least once, which is the promise (DESIGN §2).
 */

/** A script's reply: OUTCOME.APPLIED, APPLIED_AFTER_REAP, or NOOP (someone else settled the entry first). */
export type OutcomeReply = (typeof OUTCOME)[keyof typeof OUTCOME];
const asReply = (reply: number): OutcomeReply => (reply === OUTCOME.APPLIED ? OUTCOME.APPLIED : reply === OUTCOME.APPLIED_AFTER_REAP ? OUTCOME.APPLIED_AFTER_REAP : OUTCOME.NOOP);
const str = (v: number | string | null): string => (v === null ? '' : String(v));

/**
 * The state change's event, appended by the outcome script itself when the outcome applies (single
 * server only: the stream is in another slot on a cluster): `packed` as store/events.ts packEvent
 * makes it. Without one the caller appends the event afterwards.
 */
export interface OutcomeEvent {
  readonly stream: string;
  readonly maxLen: number;
  readonly packed: string;
}

/**
 * A campaign copy's count, made by the outcome's own script when the outcome applies (single server
 * only: the campaign's keys are in another slot on a cluster), as recordCampaignOutcome makes it: a
 * process killed between two calls lost the copy's count, and its campaign never completed.
 */
export interface CampaignCount {
  readonly campaignId: string;
  /** The stats counter: 'bounced', 'expired', 'suppressed', 'cancelled' (an ack counts 'delivered'). */
  readonly counter?: string;
  readonly reason?: string | undefined;
  /** A hard bounce of the address ('hardbounces'). */
  readonly hard?: boolean;
}

export async function ack(
  redis: RedisClient,
  keys: Keys,
  e: QueueEntry,
  o: { now: number; code: number | null; enhanced: string | null; response: string; recordTtlMs: number; event?: OutcomeEvent; campaign?: CampaignCount; owe?: OwedCount },
): Promise<OutcomeReply> {
  const k = [keys.leases(e.domain), keys.ready(e.domain), keys.rcptState(e.domain, e.msgId, e.idx)] as const;
  const a = [entryMember(e), o.now, e.attempt + 1, str(o.code), str(o.enhanced), truncateResponse(o.response), o.recordTtlMs] as const;
  const c = o.campaign ? [keys.msgMeta(o.campaign.campaignId), keys.msgStats(o.campaign.campaignId)] : [];
  const ev = o.event ? { key: [o.event.stream], args: [o.event.maxLen, o.event.packed] } : { key: [], args: [] };
  const n = k.length + c.length + ev.key.length;
  if (o.owe && c.length > 0) throw new Error('ack: an owed count is not for a campaign counted in the same step');
  const owed = o.owe ? owedMember(e, o.owe) : '';
  const reply = n === 3 ? await redis.ack(...k, ...a, owed) : await redis.ackKeys(n as 4 | 5 | 6, ...k, ...c, ...ev.key, ...a, ...(n === 4 ? [owed] : []), ...ev.args);
  return asReply(reply);
}

/**
 * ack, and in the same call (single server only: the message's keys are in another slot on a
 * cluster) what finishCopy-5.lua does for a message's recipient: one round trip instead of two per
 * delivered recipient (guarded by the lease: a repeat finds it gone and counts nothing). `pending` is the message's recipients still pending (-1: the message
 * is not stored; -2: the ack changed nothing, so nothing was finished).
 */
export async function ackAndFinish(
  redis: RedisClient,
  keys: Keys,
  e: QueueEntry,
  o: { now: number; code: number | null; enhanced: string | null; response: string; recordTtlMs: number; messageTtlMs: number; event?: OutcomeEvent },
): Promise<{ reply: OutcomeReply; pending: number }> {
  const k = [
    keys.leases(e.domain), keys.ready(e.domain), keys.rcptState(e.domain, e.msgId, e.idx),
    keys.msgMeta(e.msgId), keys.msgBody(e.msgId), keys.links(e.msgId), keys.msgStats(e.msgId),
  ] as const;
  const a = [entryMember(e), o.now, e.attempt + 1, str(o.code), str(o.enhanced), truncateResponse(o.response), o.recordTtlMs, o.messageTtlMs] as const;
  const [reply, pending] = o.event ? await redis.ackKeys(8, ...k, o.event.stream, ...a, o.event.maxLen, o.event.packed) : await redis.ackKeys(7, ...k, ...a);
  return { reply: asReply(reply), pending };
}

/** Re-adds "<msgId>:<idx>:<attempt+1>" to ready at nextAt; the record says deferred. */
export async function retry(
  redis: RedisClient,
  keys: Keys,
  e: QueueEntry,
  o: { now: number; nextAt: number; code: number | null; enhanced: string | null; response: string; event?: OutcomeEvent },
): Promise<OutcomeReply> {
  const k = [keys.leases(e.domain), keys.ready(e.domain), keys.rcptState(e.domain, e.msgId, e.idx)] as const;
  const a = [entryMember(e), entryMember({ ...e, attempt: e.attempt + 1 }), o.now, o.nextAt, e.attempt + 1, str(o.code), str(o.enhanced), truncateResponse(o.response), e.lease ?? ''] as const;
  const reply = o.event ? await redis.retryKeys(4, ...k, o.event.stream, ...a, o.event.maxLen, o.event.packed) : await redis.retry(...k, ...a);
  return asReply(reply);
}

export async function bounce(
  redis: RedisClient,
  keys: Keys,
  e: QueueEntry,
  o: { now: number; state: 'bounced' | 'expired' | 'suppressed' | 'cancelled'; code: number | null; enhanced: string | null; response: string; reason: string; recordTtlMs: number; event?: OutcomeEvent; campaign?: CampaignCount; owe?: OwedCount },
): Promise<OutcomeReply> {
  return bounceScript(redis, keys, e, [o.now, o.state, e.attempt + 1, str(o.code), str(o.enhanced), truncateResponse(o.response), o.reason, o.recordTtlMs, '', e.lease ?? ''], o.event, o.campaign, o.owe);
}

/**
 * Cancels an entry that waits in ready (DELETE /v1/messages/:id): final state 'cancelled', no attempt
 * counted, the response saying why. An entry being sent now (leased) is not touched: NOOP, and its
 * holder's outcome stands. Returns APPLIED_AFTER_REAP (taken from ready) when it was cancelled.
 */
export async function cancelWaiting(
  redis: RedisClient,
  keys: Keys,
  e: QueueEntry,
  o: { now: number; response: string; recordTtlMs: number; event?: OutcomeEvent; owe?: OwedCount },
): Promise<OutcomeReply> {
  return bounceScript(redis, keys, e, [o.now, 'cancelled', e.attempt, '', '', truncateResponse(o.response), 'cancelled', o.recordTtlMs, '1', ''], o.event, undefined, o.owe);
}

/** bounce-3.lua for entry `e`: its ARGV after the member (now … waiting, token), with the campaign's count and the event on a single server. */
async function bounceScript(redis: RedisClient, keys: Keys, e: QueueEntry, args: readonly [number, string, number, string, string, string, string, number, '1' | '', string], event?: OutcomeEvent, campaign?: CampaignCount, owe?: OwedCount): Promise<OutcomeReply> {
  const k = [keys.leases(e.domain), keys.ready(e.domain), keys.rcptState(e.domain, e.msgId, e.idx)] as const;
  const c = campaign ? { key: [keys.msgMeta(campaign.campaignId), keys.msgStats(campaign.campaignId)], args: [campaign.counter ?? args[1], campaign.reason ?? '', campaign.hard === true ? '1' : '0'] } : { key: [], args: [] };
  const ev = event ? { key: [event.stream], args: [event.maxLen, event.packed] } : { key: [], args: [] };
  const n = k.length + c.key.length + ev.key.length;
  if (owe && campaign) throw new Error('bounce: an owed count is not for a campaign counted in the same step');
  const owed = owe ? owedMember(e, owe) : '';
  const reply = n === 3 ? await redis.bounce(...k, entryMember(e), ...args, owed) : await redis.bounceKeys(n as 4 | 5 | 6, ...k, ...c.key, ...ev.key, entryMember(e), ...args, ...c.args, ...(n === 4 ? [owed] : []), ...ev.args);
  return asReply(reply);
}

/**
 * Puts the entry back to wait until nextAt without counting an attempt (its sender may not send now);
 * the record says deferred, with the reason.
 */
export async function hold(redis: RedisClient, keys: Keys, e: QueueEntry, o: { now: number; nextAt: number; enhanced: string; response: string }): Promise<OutcomeReply> {
  const reply = await redis.hold(keys.leases(e.domain), keys.ready(e.domain), keys.rcptState(e.domain, e.msgId, e.idx), entryMember(e), o.now, o.nextAt, o.enhanced, truncateResponse(o.response), e.lease ?? '');
  return asReply(reply);
}

/**
 * Gives claimed but unattempted entries back (graceful shutdown): due now, attempt not counted.
 * Returns how many were still leased and so moved. The destination's schedule needs no update: it
 * points no later than the earliest lease expiry (see claim-2.lua), and repairSchedule() backs that.
 */
export async function release(redis: RedisClient, keys: Keys, entries: readonly QueueEntry[], now: number): Promise<number> {
  const calls: Promise<number>[] = [];
  for (const [domain, list] of byDomain(entries)) {
    calls.push(redis.release(keys.leases(domain), keys.ready(domain), now, ...memberTokens(list)));
  }
  return (await Promise.all(calls)).reduce((a, b) => a + b, 0);
}

/**
 * Moves the lease expiry of entries still leased under their token to `until` (never re-leases a
 * lost one, nor one claimed again by another holder). Returns the members of the entries that were
 * not (reaped, settled, or claimed again): their holder must not send them.
 */
export async function extendLeases(redis: RedisClient, keys: Keys, domain: string, entries: readonly QueueEntry[], until: number): Promise<string[]> {
  if (entries.length === 0) return [];
  const held = await redis.extendLeases(keys.leases(domain), until, ...memberTokens(entries));
  return entries.filter((_, i) => held[i] !== 1).map(entryMember);
}
