import { randomBytes } from 'node:crypto';
import type { Result } from 'ioredis';
import type { RedisClient } from '../redis/client.js';
import type { Keys } from '../redis/keys.js';
import { parseMember, type QueueEntry } from './entry.js';
import { toTime } from './outcome-codes.js';

declare module 'ioredis' {
  interface RedisCommander<Context> {
    /** src/queue/lua/claim-2.lua */
    claim(ready: string, leases: string, now: number, max: number, leaseMs: number, token: string): Result<string[], Context>;
  }
}

/** This process's part of a lease token, and the claims it made: together unique to one claim. */
const PROCESS_TOKEN = randomBytes(6).toString('base64url');
let claims = 0;

/**
 * Moves up to `max` entries due at or before `now` from the destination's ready set to its lease set
 * (score now + leaseMs) under a lease token unique to this claim (QueueEntry.lease), in one script: the due entries of their own earliest first, then the due
 * campaigns' recipients, the campaigns taking equal parts of what is left (claim-2.lua). `nextAt` is the earliest score left in ready
 * or leases (null when both are empty): the time to look at this destination again.
 */
export async function claim(
  redis: RedisClient,
  keys: Keys,
  opts: { domain: string; max: number; leaseMs: number; now: number },
): Promise<{ entries: QueueEntry[]; nextAt: number | null }> {
  const { domain } = opts;
  const token = `${PROCESS_TOKEN}.${(++claims).toString(36)}`;
  const reply = await redis.claim(keys.ready(domain), keys.leases(domain), opts.now, Math.max(0, Math.floor(opts.max)), opts.leaseMs, token);
  const entries: QueueEntry[] = [];
  for (let i = 1; i < reply.length; i++) {
    // A member that is not an entry was written by something else; it stays leased and is reaped
    // later rather than crashing the dispatcher.
    const e = parseMember(domain, reply[i] as string);
    if (!e) continue;
    e.lease = token;
    entries.push(e);
  }
  return { entries, nextAt: toTime(reply[0]) };
}
