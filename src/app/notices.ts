import type { Config } from '../config/schema.js';
import type { Metrics } from '../observability/metrics.js';
import type { Keys } from '../redis/keys.js';
import type { RedisClient } from '../redis/client.js';
import type { ClosedAccounts } from '../store/account-state.js';
import { persistMessage, refsTtlMs } from '../ingress/persist.js';
import { parseAddress } from '../core/address.js';
import { newId, withFreeId } from '../core/ids.js';
import { getMessage } from '../store/messages.js';
import { indexAddresses } from '../store/address-index.js';
import { noticeToSender, type NoticeSender } from '../delivery/failure-notice.js';
import type { LaterFailure } from '../feedback/process.js';

/**
 * The one sender of notices to SMTP submitters: the dispatcher queues through it what it learns
 * during delivery (a refusal, an expiry, a suppressed address, a relay), the feedback role what a
 * next hop reports later (a DSN to the copy's VERP address). Built whatever roles run here: the
 * feedback role may run in a process without the delivery role.
 *
 * A notice is a message of the sender's account like any other (queued, shaped, indexed for export
 * and erasure under its sender's address, and under the failed recipient's it names), from
 * MAILER-DAEMON, sent with MAIL FROM:<>.
 */
export function createNoticeSender(deps: { readonly redis: RedisClient; readonly keys: Keys; readonly config: Config; readonly metrics: Metrics; readonly closedAccounts: ClosedAccounts }): NoticeSender {
  const { redis, keys, config, metrics, closedAccounts } = deps;
  return async (n) => {
    const to = parseAddress(n.to);
    // A closed account writes nothing new: its data is to be deleted (store/account-state.ts).
    if (!to || (await closedAccounts.get(n.account)) !== null) return;
    const now = Date.now();
    const hostname = config.instance.hostname;
    // Stored under n.id (the same for every holder of the recipient): found taken by a notice
    // about the same message, it was queued before (a second holder, a repeat after a crash, the
    // dispatcher's notice of a copy a later DSN reports again) and is not queued again; taken by
    // anything else (1 in 2^30), it goes under a fresh id.
    const fresh = await withFreeId(() => newId(Date.now()), async (id) => {
      // The notice quotes its failed recipient (Final-Recipient, the returned headers): indexed under
      // that address too, before it is stored (a reference to nothing is skipped; a notice stored
      // unindexed would escape the recipient's export and erasure, store/privacy.ts).
      await indexAddresses(redis, keys, [{ address: n.names, ref: { kind: 'n', msgId: id, idx: 0 }, at: now }], refsTtlMs(config));
      const persisted = await persistMessage(redis, keys, config.redis.scheduleShards, {
        id, account: n.account, source: 'dsn', kind: 'raw', from: `MAILER-DAEMON@${hostname}`, fromDomain: hostname.toLowerCase(),
        rcpts: [{ address: to.address, domain: to.domain }], acceptedAt: now, tags: [], metadata: { about: n.about }, body: n.body,
      }, refsTtlMs(config), config.retention.eventsMaxLen);
      // Its `accepted` event is appended with it, as a submission's is (ingress/accept.ts).
      if (persisted.stored && persisted.eventError === undefined) metrics.eventsAppended.inc({ type: 'accepted' });
      if (persisted.stored) return true;
      const other = id === n.id ? await getMessage(redis, keys, id) : null;
      return other?.meta.source === 'dsn' && other.meta.metadata['about'] === n.about ? false : null;
    }, n.id);
    if (!fresh) return;
    metrics.messagesAccepted.inc({ source: 'dsn' });
    metrics.recipientsAccepted.inc({ source: 'dsn' });
  };
}

/** A pseudo status the classifier makes up when a bounce carried none (bounces/index.ts): not for a notice. */
const PSEUDO_STATUS = /^\d\.0\.9\d\d$/;

/**
 * The feedback role's part: a copy the next hop took (250) and bounced later, by a DSN to its VERP
 * address, is reported to its SMTP sender as the dispatcher reports a refusal (noticeToSender: the
 * same rule, the same notice id, so a copy already reported is not reported twice), with the
 * remote DSN's Status, Diagnostic-Code and Remote-MTA. The message's body, when still stored (a
 * recipient of it is pending), returns its header section; after that the notice goes without.
 * Rejects when the notice cannot be queued (feedback/process.ts says what then).
 */
export function laterFailureNotices(deps: { readonly redis: RedisClient; readonly keys: Keys; readonly config: Config; readonly send: NoticeSender }): (f: LaterFailure) => Promise<void> {
  const { redis, keys, config, send } = deps;
  return async ({ meta, idx, address, record, now }) => {
    // The cheap part of noticeToSender's rule first: no body read for API mail.
    if (!config.delivery.failureNotices || meta.source !== 'smtp' || !meta.returnPath) return;
    const status = /^[245]\.\d{1,3}\.\d{1,3}$/.test(record.status) && !PSEUDO_STATUS.test(record.status) ? record.status : '5.0.0';
    const notice = noticeToSender(meta, {
      hostname: config.instance.hostname, now, idx, recipient: address, status,
      remoteReply: record.diagnostic ? record.diagnostic : null, remoteMta: record.remoteMta || undefined,
      explanation: 'The recipient\'s mail server took it, then reported that it could not be delivered.',
      original: await redis.getBuffer(keys.msgBody(meta.id)),
    });
    if (notice) await send(notice);
  };
}
