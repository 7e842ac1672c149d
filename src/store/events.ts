import type { Result } from 'ioredis';
import type { RedisClient } from '../redis/client.js';
import type { Keys } from '../redis/keys.js';

declare module 'ioredis' {
  interface RedisCommander<Context> {
    /** src/queue/lua/appendEvents-2.lua */
    appendEvents(events: string, erased: string, maxLen: number, entries: string): Result<number, Context>;
    /** The same, answering each entry's id ('' for one dropped as erased). */
    appendEvents(events: string, erased: string, maxLen: number, entries: string, ids: '1'): Result<string[], Context>;
  }
}

/**
 * The event stream: one Redis Stream that every role appends to and consumers (webhooks, reputation)
 * read with consumer groups. Entries carry ids (msgId, idx, account) and outcome codes, never message
 * content or addresses, so trimming and erasure requests stay simple.
 */
/**
 * Every type of event written to the stream, for webhook subscriptions (which take these or '*'):
 * delivery outcomes (ingress/persist.ts, delivery/dispatcher.ts, ingress/message-cancel.ts), feedback
 * mail (feedback/process.ts: a DSN's 'bounced' or 'delayed', an ARF 'complained', an opt-out's
 * 'unsubscribed', a not-spam report's 'feedback', an 'autoreply'), tracking (tracking/record.ts),
 * the reputation guard's pauses and resumes, and an erasure.
 */
export const EVENT_TYPES = [
  'accepted', 'delivered', 'deferred', 'bounced', 'expired', 'suppressed', 'cancelled',
  'delayed', 'complained', 'unsubscribed', 'feedback', 'autoreply',
  'opened', 'clicked',
  'campaign_paused', 'sender_paused', 'sender_resumed', 'erased',
] as const;

/** A type the stream is written with: a new one is added to EVENT_TYPES, so webhooks can subscribe to it. */
export type EventType = (typeof EVENT_TYPES)[number];

/**
 * XADD with `MAXLEN ~ maxLen`: the approximate trim lets Redis drop whole radix-tree nodes, which is
 * O(1) amortised, where an exact trim would cut inside nodes on every append. Returns the entry id.
 * An event about one copy (msgId and idx: an unsubscribe, a bounce, a complaint) goes through
 * appendEvents-2.lua instead, which drops it while the copy is being erased, or was lately: the id
 * is then ''.
 */
export async function appendEvent(
  redis: RedisClient,
  keys: Keys,
  type: EventType,
  fields: Readonly<Record<string, string | number>>,
  maxLen: number,
): Promise<string> {
  if (fields['msgId'] !== undefined && fields['idx'] !== undefined) {
    const [id] = await redis.appendEvents(keys.events(), keys.eventsErased(), maxLen, packBatch([packEvent(type, fields)]), '1');
    return id ?? '';
  }
  const id = await redis.xadd(keys.events(), 'MAXLEN', '~', maxLen, '*', ...eventArgs(type, fields));
  return id as string;
}

/** An event's XADD field and value arguments: `type <type>` first, then the fields. */
export function eventArgs(type: EventType, fields: Readonly<Record<string, string | number>>): (string | number)[] {
  const args: (string | number)[] = ['type', type];
  for (const [k, v] of Object.entries(fields)) args.push(k, v);
  return args;
}

/** A stream entry's flat [field, value, …] list (XRANGE, XREADGROUP) as an object. */
export function streamFields(flat: readonly string[]): Record<string, string> {
  const o: Record<string, string> = {};
  for (let i = 0; i + 1 < flat.length; i += 2) o[flat[i] as string] = flat[i + 1] as string;
  return o;
}

/** One field of a stream entry's flat list (the last one of that name, as streamFields keeps it). */
export function streamField(flat: readonly string[], name: string): string | undefined {
  for (let i = flat.length - (flat.length % 2 === 0 ? 2 : 3); i >= 0; i -= 2) if (flat[i] === name) return flat[i + 1];
  return undefined;
}

/** The time (ms) a stream entry id '<ms>-<seq>' carries: when the entry was appended. */
export function streamIdTime(id: string): number {
  const dash = id.indexOf('-');
  return Number(dash === -1 ? id : id.slice(0, dash));
}

/**
 * Entries per appendEvents call: the script then runs ~1 ms in Redis (XADD is ~1–2 µs), short enough
 * not to hold up delivery's claims on the same server.
 */
export const EVENTS_PER_CALL = 500;

/** The stream's length bound when a caller is not given one (config retention.eventsMaxLen has the same default). */
export const DEFAULT_EVENTS_MAX_LEN = 1_000_000;

/**
 * One entry as appendEvents-2.lua takes it: a JSON array of strings [field, value, …]. A lone
 * surrogate (possible in any JS string) becomes U+FFFD, as it would on its way to Redis as UTF-8:
 * JSON.stringify would write it as a \ud800 escape, which cjson refuses, losing the whole batch.
 */
export function packEvent(type: EventType, fields: Readonly<Record<string, string | number>>): string {
  const flat: string[] = ['type', type];
  for (const k in fields) flat.push(k, String(fields[k]));
  const json = JSON.stringify(flat);
  return json.includes('\\ud') || json.includes('\\uD') ? JSON.stringify(flat.map((s) => s.toWellFormed())) : json;
}

/** Entries made by packEvent, as the one argument appendEvents-2.lua takes: a JSON array of them. */
export function packBatch(entries: readonly string[]): string {
  return `[${entries.join(',')}]`;
}

/**
 * Appends entries made by packEvent, in order, in one script call (at most EVENTS_PER_CALL of them).
 * Entries naming a recipient being erased are dropped (appendEvents-2.lua). Returns how many were appended.
 */
export function appendEventBatch(redis: RedisClient, keys: Keys, maxLen: number, entries: readonly string[]): Promise<number> {
  return redis.appendEvents(keys.events(), keys.eventsErased(), maxLen, packBatch(entries));
}

export interface EventWriter {
  /** Queues an event; it is written with the others of this turn of the event loop. Never throws. */
  write(type: EventType, fields: Readonly<Record<string, string | number>>): void;
  /** Resolves when everything queued so far is written (or failed and was reported). */
  flush(): Promise<void>;
}

/**
 * Events of a busy process (a delivery outcome per recipient) written in batches: everything queued
 * in one turn of the event loop goes in one appendEvents script call, in order, rather than one XADD
 * round trip each. Used where the caller does not need the entry id.
 */
export function createEventWriter(redis: RedisClient, keys: Keys, maxLen: number, onError: (err: unknown, lost: number) => void): EventWriter {
  const queue: string[] = [];
  let scheduled: Promise<void> | null = null;
  const drain = async (): Promise<void> => {
    while (queue.length > 0) {
      const batch = queue.splice(0, EVENTS_PER_CALL);
      try {
        await appendEventBatch(redis, keys, maxLen, batch);
      } catch (err) {
        onError(err, batch.length);
      }
    }
  };
  return {
    write(type, fields) {
      queue.push(packEvent(type, fields));
      scheduled ??= new Promise<void>((resolve) => setImmediate(resolve)).then(drain).finally(() => {
        scheduled = null;
      });
    },
    async flush() {
      while (scheduled) await scheduled;
      if (queue.length > 0) await drain();
    },
  };
}
