import { Cluster, type Redis, type Result } from 'ioredis';
import type { RedisClient } from '../redis/client.js';
import type { Keys } from '../redis/keys.js';
import { masterNodes } from '../redis/nodes.js';
import { holdLock as takeLock, releaseLock as freeLock } from './locks.js';

declare module 'ioredis' {
  interface RedisCommander<Context> {
    /** src/queue/lua/purgeMessage-7.lua: how many of the six record keys existed. */
    purgeMessage(meta: string, body: string, links: string, stats: string, gone: string, goneAt: string, marks: string, ttlMs: number): Result<number, Context>;
  }
}

/**
 * The Redis primitives of the retention job (housekeeping/retention.ts): trimming streams by age
 * in bounded steps, and walking the whole keyspace a page at a time with a cursor kept in Redis, so
 * the walk resumes where it stopped whichever housekeeping process runs the next step.
 *
 *   retention:cursor  HASH  pass      ms when the current pass over the keyspace began
 *                           scan:<n>  SCAN cursor of node n ('done' once the node is walked)
 *                           events    last event-stream id examined by the event walk
 *   retention:lock    STRING  token of the process running a step (PX: a few intervals)
 */

/** The stream id just after `id` ("<ms>-<seq>" → "<ms>-<seq+1>"). */
function nextStreamId(id: string): string {
  const [ms, seq] = id.split('-');
  return `${ms}-${Number(seq ?? 0) + 1}`;
}

/**
 * Deletes at most `limit` of the oldest entries of a stream that are older than `beforeMs`. Exact
 * (not `~`, which frees only whole radix-tree nodes and so keeps up to ~100 old entries for ever on
 * a quiet stream) and still bounded: XRANGE finds the id below which exactly the entries it returned
 * lie, and XTRIM MINID removes just those. Returns how many went.
 */
export async function trimStreamBefore(redis: RedisClient, key: string, beforeMs: number, limit: number): Promise<number> {
  if (beforeMs <= 0) return 0;
  const old = (await redis.xrange(key, '-', `(${Math.floor(beforeMs)}-0`, 'COUNT', limit)) as [string, string[]][];
  if (old.length === 0) return 0;
  const last = (old[old.length - 1] as [string, string[]])[0];
  return Number(await redis.xtrim(key, 'MINID', nextStreamId(last)));
}

/**
 * Deletes one message's every key (meta, body, link table, tracking marks, counters: one slot).
 * With `tombstoneMs` (its account's deletion, not the end of its life) its marks are left as the
 * tombstone (store/tombstone.ts), for that long: a bounce or complaint that names the message later
 * is then known to be about a deleted account's mail. Erasure marks already there (x:<idx>, or x:* =
 * '1' when every recipient was erased) are kept: mail about an erased person is dropped as such, even
 * when it also went to postmaster (which keeps a deleted account's mail). One script on the message's
 * slot (purgeMessage-7.lua), so an erasure running meanwhile cannot lose its mark. Returns the keys
 * deleted, the marks not counted then (a second purge finds only the tombstone: nothing more went).
 */
export async function purgeMessage(redis: RedisClient, keys: Keys, msgId: string, tombstoneMs?: number): Promise<number> {
  const parts = [keys.msgMeta(msgId), keys.msgBody(msgId), keys.links(msgId), keys.msgStats(msgId), keys.campaignGone(msgId), keys.campaignGoneAt(msgId)] as const;
  if (tombstoneMs === undefined) return redis.del(...parts, keys.trackMarks(msgId));
  return redis.purgeMessage(...parts, keys.trackMarks(msgId), Math.max(1, Math.floor(tombstoneMs)));
}

/**
 * The nodes a keyspace walk must visit: the server itself, or every master of a cluster (SCAN is
 * per node). Named by address so a cursor is never applied to another node's keyspace.
 */
export async function scanNodes(redis: RedisClient): Promise<{ name: string; node: Redis }[]> {
  if (redis instanceof Cluster) {
    return (await masterNodes(redis))
      .map((node) => ({ name: `${node.options.host ?? ''}:${node.options.port ?? ''}`, node }))
      .sort((a, b) => a.name.localeCompare(b.name));
  }
  return [{ name: 'server', node: redis }];
}

export interface SweepState {
  /** When the current pass began (ms); 0 before the first. */
  readonly passStartedAt: number;
  /** The cursor of each node in this pass ('done' once walked; absent = not begun). */
  readonly cursors: ReadonlyMap<string, string>;
  /** The event walk's position ('' = from the start; 'done' = reached the end). */
  readonly eventsCursor: string;
}

export async function readSweepState(redis: RedisClient, keys: Keys): Promise<SweepState> {
  const flat = await redis.hgetall(keys.retentionCursor());
  const cursors = new Map<string, string>();
  for (const [k, v] of Object.entries(flat)) if (k.startsWith('scan:')) cursors.set(k.slice(5), v);
  return { passStartedAt: Number(flat['pass'] ?? 0), cursors, eventsCursor: flat['events'] ?? '' };
}

/** Starts a new pass: every node from cursor 0, the event walk from the start. */
export async function beginPass(redis: RedisClient, keys: Keys, now: number): Promise<void> {
  await redis.multi().del(keys.retentionCursor()).hset(keys.retentionCursor(), 'pass', now, 'events', '').exec();
}

export async function saveNodeCursor(redis: RedisClient, keys: Keys, node: string, cursor: string): Promise<void> {
  await redis.hset(keys.retentionCursor(), `scan:${node}`, cursor);
}

export async function saveEventsCursor(redis: RedisClient, keys: Keys, cursor: string): Promise<void> {
  await redis.hset(keys.retentionCursor(), 'events', cursor);
}

/**
 * Takes (or renews) the retention lock for `ttlMs`: true when this process holds it. Only one
 * process walks the keyspace at a time, so two housekeeping processes never share one cursor.
 */
export async function holdLock(redis: RedisClient, keys: Keys, token: string, ttlMs: number): Promise<boolean> {
  return takeLock(redis, keys.retentionLock(), token, ttlMs);
}

export async function releaseLock(redis: RedisClient, keys: Keys, token: string): Promise<void> {
  await freeLock(redis, keys.retentionLock(), token);
}

/**
 * Removes at most `limit` members of a time-scored sorted set scored below `beforeMs` (an index such
 * as feedback:unprocessed, whose entries point at mail that has expired). Bounded, unlike a bare
 * ZREMRANGEBYSCORE after a long pause. Returns how many went.
 */
export async function trimSortedSetBefore(redis: RedisClient, key: string, beforeMs: number, limit: number): Promise<number> {
  const old = await redis.zrangebyscore(key, '-inf', `(${Math.floor(beforeMs)}`, 'LIMIT', 0, limit);
  return old.length === 0 ? 0 : redis.zrem(key, ...old);
}
