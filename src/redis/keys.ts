/**
 * Every Redis key name Sluice uses comes from here. Keys that one Lua script touches together share a
 * hash tag, so every script runs on one slot and the same code works on Redis Cluster:
 *
 *   {d:<domain>}   a destination's ready set, lease set, per-recipient delivery records and the
 *                  shaping rule the dispatcher resolved for it
 *   {t:<scope>}    a throttle scope's token buckets, connection leases and backoff state
 *                  (scope = '<rule>' for provider-wide rules, '<rule>:<domain>' for per-domain rules)
 *   {s:<n>}        shard n of the schedule of destinations with due work
 *   {m:<id>}       one message or campaign: metadata and body (a campaign's body is its prepared template)
 *   {a:<account>}  an account's quota, rate and idempotency records, webhook endpoints and their outboxes
 *   {x:<account>}  an account's suppression list ('*' = the global list)
 *   {f:<id>}       one inbound feedback mail (bounce, complaint) kept raw for a retention period
 *   {l:<listId>}   one contact list: its meta, contacts, address index and field names (store/contacts.ts)
 *   {r:<digest>}   one address's references to its data and its soft-bounce history, by salted digest (store/privacy.ts)
 *
 *   ready   ZSET  member "<msgId>:<rcptIdx>:<attempt>"  score = due time (ms)
 *   leases  ZSET  member as in ready                    score = lease expiry (ms)
 *   owners  HASH  member → the lease token of the claim that holds it (queue/lua/lib/lease.lua)
 *   rs:<msgId>:<idx>  HASH  state, attempts, code, enhanced, response, nextAt, updatedAt, firstAt (the first attempt, once deferred)
 */
export function createKeys(prefix: string) {
  const p = prefix;
  return {
    prefix: p,
    // destination
    ready: (domain: string) => `${p}{d:${domain}}:ready`,
    leases: (domain: string) => `${p}{d:${domain}}:leases`,
    /** The lease set's tokens: its name is the lease set's with 'leases' replaced, which is how the scripts find it (lib/lease.lua). */
    leaseOwners: (domain: string) => `${p}{d:${domain}}:owners`,
    rcptState: (domain: string, msgId: string, idx: number) => `${p}{d:${domain}}:rs:${msgId}:${idx}`,
    /**
     * ZSET "<msgId>:<idx>|<counter>|<reason>|<hard>" → when its outcome was written: copies whose final
     * outcome is written here but not yet counted on their message or campaign, in another slot on a
     * Redis Cluster (lib/owed.lua). Its name is the lease set's with 'leases' replaced, as the scripts find it.
     */
    owed: (domain: string) => `${p}{d:${domain}}:owed`,
    /** LIST of contact numbers: a campaign's recipients waiting at this destination (claim-2.lua expands them). */
    campaignQueue: (domain: string, campaignId: string) => `${p}{d:${domain}}:cq:${campaignId}`,
    /** HASH campaign id → "<chunk>:<count>": the last enqueue chunk pushed here (pushCampaign-3.lua). */
    campaignPushed: (domain: string) => `${p}{d:${domain}}:cqpos`,
    /**
     * STRING with a TTL: the shaping rule the dispatcher last resolved for this destination with its
     * MX hosts (queue/destination-rule.ts), so `sluice queue` and the queue gauges group it as
     * deliveries do. Written alone, read alone.
     */
    destinationRule: (domain: string) => `${p}{d:${domain}}:rule`,
    // throttle scope
    bucket: (scope: string) => `${p}{t:${scope}}:bucket`,
    conns: (scope: string) => `${p}{t:${scope}}:conns`,
    /** ZSET domain → when it began waiting for a slot of a shared scope; the connection slots' name with 'conns' replaced, as acquireConnection-1.lua finds it. */
    connWaiting: (scope: string) => `${p}{t:${scope}}:waiting`,
    /** ZSET domain → when it last asked for a slot of the scope (waits that stopped asking go). */
    connWaitSeen: (scope: string) => `${p}{t:${scope}}:waitseen`,
    backoff: (scope: string) => `${p}{t:${scope}}:backoff`,
    // schedule
    schedule: (shard: number) => `${p}{s:${shard}}:due`,
    destinations: (shard: number) => `${p}{s:${shard}}:dests`,
    /** HASH domain → the score postpone() last gave it, so repairSchedule() tells a wait on purpose from a lost score. */
    postponed: (shard: number) => `${p}{s:${shard}}:postponed`,
    /** HASH shard, cursor: where repairSchedule() resumes its SSCAN walk (read and written alone). */
    repairCursor: () => `${p}repair:cursor`,
    // message
    msgMeta: (id: string) => `${p}{m:${id}}:meta`,
    msgBody: (id: string) => `${p}{m:${id}}:body`,
    /** LIST: the message's link table (URL i is click target i; written once when it is prepared). */
    links: (id: string) => `${p}{m:${id}}:links`,
    /** HASH: per-recipient tracking marks (first open, first click per link, unsubscribe, click bursts). */
    trackMarks: (id: string) => `${p}{m:${id}}:track`,
    /** HASH: the message's engagement counters (src/store/engagement.ts), kept in every tracking mode. */
    msgStats: (id: string) => `${p}{m:${id}}:stats`,
    /** Bitmap, bit <idx>: the copy's final outcome is counted on the message or campaign (finishCopy-5.lua). */
    copiesCounted: (id: string) => `${p}{m:${id}}:counted`,
    /** SET: the destinations a campaign has recipients queued at (pause, resume and cancel walk it). */
    campaignDomains: (id: string) => `${p}{m:${id}}:domains`,
    /** STRING: held by the process enqueuing the campaign (one enqueuer at a time across processes). */
    campaignLock: (id: string) => `${p}{m:${id}}:lock`,
    /**
     * HASH contact number → address: the campaign's recipients whose contact was deleted since (or
     * whose list was), so their unsubscribe, bounce or complaint still finds the address
     * (store/privacy.ts keepCopiesFindable, store/recipients.ts messageFor); "d:<digest>" → the
     * deleted contact's numbers, so an erasure finds the address there (store/privacy.ts find).
     * A deleted contact's fields live as the copies' data from its deletion (campaignGoneAt).
     */
    campaignGone: (id: string) => `${p}{m:${id}}:gone`,
    /** ZSET "<no> <digest>" → deleted (ms): when each deleted contact's :gone fields go (queue/lua/keepGone-3.lua). */
    campaignGoneAt: (id: string) => `${p}{m:${id}}:goneAt`,
    // account
    quota: (account: string, day: string) => `${p}{a:${account}}:quota:${day}`,
    accountRate: (account: string) => `${p}{a:${account}}:rate`,
    /** STRING: a takeSending-1.lua call's answer, kept a while for the same call sent again (accounts/limits.ts). */
    sendingTook: (account: string, id: string) => `${p}{a:${account}}:took:${id}`,
    idempotency: (account: string, keyHash: string) => `${p}{a:${account}}:idem:${keyHash}`,
    /** HASH "<scope>|<kind>" → count for one time bucket (scope '*' = the whole account, else a sending domain). */
    reputation: (account: string, bucketStart: number) => `${p}{a:${account}}:rep:${bucketStart}`,
    /** STRING: a reputation count made, by its call's id, kept a while (queue/lua/countReputation-2.lua). */
    reputationDone: (account: string, id: string) => `${p}{a:${account}}:repdone:${id}`,
    /** HASH scope ('*' or a sending domain) → JSON pause record of the reputation guard. */
    senderPaused: (account: string) => `${p}{a:${account}}:paused`,
    /** HASH scope ('*' or a From domain) → when the sender was last resumed (ms), kept a longest window (store/reputation.ts). */
    senderResumed: (account: string) => `${p}{a:${account}}:resumed`,
    /** ZSET "<account>|<scope>" → paused time (ms): every paused sender, for status and the gauge. */
    pausedSenders: () => `${p}senders:paused`,
    /** HASH 'domain:<d>' | 'rule:<name>' → JSON hold: destinations an operator stopped delivery to (queue/holds.ts). */
    holds: () => `${p}delivery:holds`,
    /** ZSET campaign id → created (ms): an account's campaigns. */
    accountCampaigns: (account: string) => `${p}{a:${account}}:campaigns`,
    /** ZSET campaign id → when its enqueuer should look (send time; now while its list is being queued). */
    campaignsDue: () => `${p}campaigns:due`,
    /** SET of the account's contact list ids. */
    accountLists: (account: string) => `${p}{a:${account}}:lists`,
    // contact lists: every key of one list shares its tag, so one Lua call writes a whole import batch
    /** HASH account, name, created, updated, nextNo, count, and a counter per contact status. */
    listMeta: (listId: string) => `${p}{l:${listId}}:meta`,
    /** HASH contact number (1, 2, 3…, never reused) → compact JSON contact {e, s, c, u, f}. */
    listContacts: (listId: string) => `${p}{l:${listId}}:contacts`,
    /** HASH normalised address → contact number: merges duplicates, finds a contact by address. */
    listEmails: (listId: string) => `${p}{l:${listId}}:emails`,
    /** HASH field name → order of first appearance: the columns of a CSV export. */
    listFields: (listId: string) => `${p}{l:${listId}}:fields`,
    /** STRING bitmap with a TTL, bit n = contact n already written by import <importId> (its duplicates). */
    listImportSeen: (listId: string, importId: string) => `${p}{l:${listId}}:seen:${importId}`,
    // auth throttling
    authFailures: (kind: string, who: string) => `${p}authfail:${kind}:${who}`,
    // suppression: per account, and the global list ('*') of addresses that do not exist
    suppression: (account: string) => `${p}{x:${account}}:suppressed`,
    /**
     * ZSET member "<msgId>:<idx>", score = time (ms): an address's recent soft bounces (N in M days →
     * suppressed), named by the address's salted digest (store/address-digest.ts), never the address.
     * Under the address's own hash tag: the dispatcher reads it at every delivery (markDelivered), so
     * on a cluster the histories spread over the slots instead of sharing one.
     */
    softBounces: (digest: string) => `${p}{r:${digest}}:soft`,
    // feedback: each inbound mail kept raw (HASH, with a TTL); an index of those not understood
    feedbackRaw: (id: string) => `${p}{f:${id}}:raw`,
    /** ZSET feedback id → received time (ms): mail kept but not understood, unmatched or failed. */
    feedbackUnprocessed: () => `${p}feedback:unprocessed`,
    /** ZSET feedback id → when its processing is due: stored and not yet processed, or failed and retried (raw-store.ts). */
    feedbackPending: () => `${p}feedback:pending`,
    /** HASH day number → bytes of feedback mail received that day and still stored (feedback.maxStored, raw-store.ts). */
    feedbackStored: () => `${p}feedback:stored`,
    // the key of the VERP tags (core/verp.ts), made once, shared by every process
    verpKey: () => `${p}secret:verp`,
    /** STRING: the salt (HMAC key) of address digests (store/address-digest.ts), made once, never rotated. */
    privacyKey: () => `${p}secret:privacy`,
    // recipients' rights (store/privacy.ts)
    /**
     * ZSET member "m:<msgId>:<idx>" or "f:<feedbackId>" → time (ms): where an address's data is, by
     * the address's salted digest (never the address itself), written at acceptance, TTL = the data's.
     */
    addressRefs: (digest: string) => `${p}{r:${digest}}:refs`,
    // events (one stream; consumers use groups)
    events: () => `${p}events`,
    /**
     * ZSET "<msgId>:<idx>" → time erased (ms): recipients whose events appendEvents-2.lua drops, for
     * an hour after their erasure began (store/privacy.ts). In the stream's slot: its hash tag is the
     * stream's whole name, which is what that name, without braces, is hashed by.
     */
    eventsErased: () => `${p}{${p}events}:erased`,
    // webhooks: an account's endpoints under its tag; per endpoint an outbox and a dead-letter list
    /** HASH endpoint id → JSON record (url, events, sealed signing secret, created). */
    webhooks: (account: string) => `${p}{a:${account}}:webhooks`,
    /** ZSET member = JSON batch, score = when it is due (ms): first attempts and retries alike. */
    webhookOutbox: (account: string, id: string) => `${p}{a:${account}}:wh:${id}:outbox`,
    /** LIST of JSON batches that ran out of retries, for an operator to replay. */
    webhookDead: (account: string, id: string) => `${p}{a:${account}}:wh:${id}:dead`,
    /**
     * ZSET member = id of a batch in the outbox, score = the time of its oldest event (ms): what the
     * webhook lag gauge reads (the outbox's scores are due times, which retries move).
     */
    webhookAges: (account: string, id: string) => `${p}{a:${account}}:wh:${id}:ages`,
    /**
     * STRING: the events the outbox holds, kept by the scripts that add and take its batches, so
     * queueBatch-4.lua can hold it to webhooks.maxOutbox without reading it.
     */
    webhookOutboxEvents: (account: string, id: string) => `${p}{a:${account}}:wh:${id}:events`,
    /** SET of "<account>/<endpoint id>": every registered endpoint, walked by the dispatcher with SSCAN. */
    webhookEndpoints: () => `${p}webhooks:endpoints`,
    /**
     * STRING counter, incremented whenever an endpoint is registered or removed: dispatchers drop
     * their cached endpoint lists when it moves (housekeeping/webhooks.ts).
     */
    webhookGeneration: () => `${p}webhooks:generation`,
    // account lifecycle (store/account-state.ts): one HASH, outside every account's tag, so that
    // deleting all of {a:<id>} never deletes the record that says the account is closed
    /** HASH account id → JSON { closedAt, purgeAt, by, deletedAt? }: closed accounts and their deletion. */
    closedAccounts: () => `${p}accounts:closed`,
    // audit log (store/audit.ts)
    /** STREAM of admin and account actions: actor, action, account, target, from (IP or 'cli'). */
    audit: () => `${p}audit`,
    // retention (housekeeping/retention.ts)
    /** HASH: the keyspace sweep's SCAN cursor per Redis node and when its current pass began. */
    retentionCursor: () => `${p}retention:cursor`,
    /** STRING with a TTL: held by the one housekeeping process running a retention tick. */
    retentionLock: () => `${p}retention:lock`,
  };
}

export type Keys = ReturnType<typeof createKeys>;

/** FNV-1a: a stable, cheap shard number for a destination domain. */
export function shardOf(domain: string, shards: number): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < domain.length; i++) {
    h ^= domain.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return (h >>> 0) % shards;
}
