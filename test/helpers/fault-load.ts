import { request } from 'undici';
import type { RedisClient } from '../../src/redis/client.js';
import type { Keys } from '../../src/redis/keys.js';
import { sleep } from './sluice-process.js';

/**
 * The client side of the fault runs (test/faults): an HTTP API client that submits batches of fresh
 * single-recipient messages until `total` are accepted, carrying on through whatever the fault does
 * to Sluice (refused connections while it is down, 503 while its Redis is). Only a recipient answered
 * with an id in a 202 counts as sent. A batch that fails is not retried with the same recipients
 * (without an Idempotency-Key a retry would be a second message), so a copy of one that was persisted
 * after all is an "extra" at the MX, never confused with a duplicate of an accepted one.
 *
 * Below it, the readings every kill-and-restart test takes (test/faults and test/e2e's crash and
 * process tests): queue totals, waiting for the queue to empty, duplicates at the MX.
 */
export interface Submitter {
  /** Accepted recipients, in order. */
  readonly accepted: string[];
  /** Resolves once `total` are accepted (or after abort()). */
  readonly done: Promise<void>;
  /** Every non-202 answer by status ('error' = no answer: refused, reset, timed out). */
  readonly refusals: Map<string, number>;
  /** Recipients of batches (or batch entries) that were not accepted. */
  unanswered(): number;
  abort(): void;
}

export interface SubmitterOptions {
  /** Read before each batch: a restarted Sluice may listen elsewhere. */
  port: () => number;
  apiKey: string;
  /** Recipient local-part prefix, unique per run. */
  tag: string;
  domains: readonly string[];
  total: number;
  batch?: number;
  /** Client-side limit per request; a request that takes longer counts as a hang ('error'). */
  timeoutMs?: number;
  /** Pause between batches, to spread the send over the fault. Default 0. */
  pauseMs?: number;
}

export function startSubmitter(opts: SubmitterOptions): Submitter {
  const accepted: string[] = [];
  const refusals = new Map<string, number>();
  const batch = opts.batch ?? 500;
  let unanswered = 0;
  let next = 0;
  let stop = false;
  const refused = (why: string, n: number) => {
    refusals.set(why, (refusals.get(why) ?? 0) + 1);
    unanswered += n;
  };
  const done = (async () => {
    while (accepted.length < opts.total && !stop) {
      const want = Math.min(batch, opts.total - accepted.length);
      const rcpts = Array.from({ length: want }, () => {
        const i = next++;
        return `${opts.tag}${i}@${opts.domains[i % opts.domains.length]}`;
      });
      const messages = rcpts.map((to, j) => ({ from: 'news@acme.example', to, subject: `fault ${j}`, text: `message for ${to}` }));
      try {
        const res = await request(`http://127.0.0.1:${opts.port()}/v1/messages/batch`, {
          method: 'POST',
          headers: { authorization: `Bearer ${opts.apiKey}`, 'content-type': 'application/json' },
          body: JSON.stringify({ messages }),
          headersTimeout: opts.timeoutMs ?? 30_000,
          bodyTimeout: opts.timeoutMs ?? 30_000,
        });
        const body = (await res.body.json()) as { results?: ({ id: string } | { error: { code: string } })[] };
        if (res.statusCode !== 202 || !body.results) {
          refused(String(res.statusCode), rcpts.length);
          await sleep(100);
          continue;
        }
        body.results.forEach((r, j) => {
          if ('id' in r) accepted.push(rcpts[j] as string);
          else refused(r.error.code, 1);
        });
        if (opts.pauseMs) await sleep(opts.pauseMs);
      } catch {
        refused('error', rcpts.length);
        await sleep(100);
      }
    }
  })();
  return { accepted, done, refusals, unanswered: () => unanswered, abort: () => (stop = true) };
}

/** Recipients ready and leased over the given destinations. */
export async function queueTotals(client: RedisClient, keys: Keys, domains: readonly string[]): Promise<{ ready: number; leased: number }> {
  let ready = 0;
  let leased = 0;
  for (const d of domains) {
    ready += await client.zcard(keys.ready(d));
    leased += await client.zcard(keys.leases(d));
  }
  return { ready, leased };
}

/** Waits until nothing is ready or leased (the last acknowledgements land just after the last copy). */
export async function waitQueueEmpty(client: RedisClient, keys: Keys, domains: readonly string[], timeoutMs = 5_000): Promise<{ ready: number; leased: number }> {
  const deadline = Date.now() + timeoutMs;
  let totals = await queueTotals(client, keys, domains);
  while (totals.ready + totals.leased > 0 && Date.now() < deadline) {
    await sleep(50);
    totals = await queueTotals(client, keys, domains);
  }
  return totals;
}

/** Copies beyond the first, over the given recipients. */
export function duplicatesOf(counts: ReadonlyMap<string, number>, recipients: readonly string[]): number {
  return recipients.reduce((n, r) => n + Math.max(0, (counts.get(r) ?? 0) - 1), 0);
}

/** Polls until `fn` is true; false after timeoutMs. */
export async function until(fn: () => boolean, timeoutMs: number, stepMs = 100): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (!fn()) {
    if (Date.now() > deadline) return false;
    await sleep(stepMs);
  }
  return true;
}
