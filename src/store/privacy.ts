import type { Result } from 'ioredis';
import type { RedisClient } from '../redis/client.js';
import type { Keys } from '../redis/keys.js';
import { addressDigest, normaliseAddress } from './address-digest.js';
import { indexAddresses, readAddressRefs } from './address-index.js';
import { domainOf } from '../core/address.js';
import { parseVerp } from '../core/verp.js';
import { idTime, isId } from '../core/ids.js';
import { getMessage, type MessageMeta } from './messages.js';
import { campaignListIds, campaignsOfList, getCampaign, type CampaignRecord } from './campaigns.js';
import { readContacts, deleteContact, listLists, type Contact } from './contacts.js';
import { appendEvent, streamFields, streamIdTime } from './events.js';
import { erasedField, GLOBAL_LIST, type SuppressionEntry } from './suppression.js';
import { loadWebhooks } from './webhooks.js';
import { jsonOr } from './record-io.js';
import { isDeliveryMark } from './soft-bounces.js';
import { scanNodes } from './retention.js';
import { countOwedCopy } from './copy-count.js';
import { dropFeedback } from './feedback-stored.js';
import { owedMember, type OwedCount } from '../redis/owed.js';
import { ERASED } from './tombstone.js';

/** An erased copy that was still pending: counted cancelled on its message or campaign. */
const CANCELLED: OwedCount = { counter: 'cancelled' };

declare module 'ioredis' {
  interface RedisCommander<Context> {
    /** src/queue/lua/rewriteBatch-3.lua: 1 rewritten, 0 the batch is no longer there as read. */
    rewriteBatch(outbox: string, ages: string, events: string, member: string, next: string, removed: number, batchId: string, oldest: number | ''): Result<number, Context>;
    /** src/queue/lua/eraseEntry-4.lua: queue entries removed (> 0: the recipient was pending). */
    eraseEntry(ready: string, leases: string, rs: string, cq: string, msgId: string, idx: number, floor: number, now: number, owed: string): Result<number, Context>;
    /** src/queue/lua/eraseRecipient-5.lua: 2 message deleted, 1 recipient erased, 0 no record. */
    eraseRecipient(meta: string, body: string, links: string, marks: string, stats: string, idx: number, address: string, replacement: string, ttlMs: number): Result<number, Context>;
    /** src/queue/lua/redactBody-1.lua: 1 when the body named the address (now replaced), else 0. */
    redactBody(body: string, address: string, replacement: string): Result<number, Context>;
    /** src/queue/lua/keepGone-3.lua: the fields trimmed (no '': only that). */
    keepGone(gone: string, goneAt: string, marks: string, no: number | '', address: string, digest: string, at: number, ttlMs: number): Result<number, Context>;
    /** src/queue/lua/rewriteItem-1.lua: 1 replaced (or removed, for ''), 0 no longer in the list. */
    rewriteItem(list: string, item: string, replacement: string): Result<number, Context>;
  }
}

/**
 * Recipients' rights (DESIGN §7): everything held about an address, and its erasure.
 *
 * Where the data is found, without walking the keyspace:
 *   messages        the address index {r:<digest>}:refs (store/address-index.ts) → "<msgId>:<idx>"
 *   contacts        each list's address index {l:<id>}:emails, for every list of the accounts in scope
 *   campaign copies every campaign of those accounts sending to a list holding the address → contact no;
 *                   of a deleted contact, the "c:" references its deletion left in the address index,
 *                   and its numbers under "d:<digest>" in each campaign's {m:<id>}:gone (kept longer);
 *                   of a deleted list, the list's address index, which it keeps (keepCopiesFindable)
 *   delivery        {d:<domain>}:rs:<msgId>:<idx>, queue entries "<msgId>:<idx>:<attempt>", campaign
 *                   queue numbers: from (msgId, idx, domain)
 *   events          the stream from the oldest reference on, in pages (ids are times), matched by
 *                   (msgId, idx); their feedbackId names the raw bounces and complaints. A reference
 *                   whose record is gone (past retention.records, which events may outlast: an open
 *                   comes after the finish) is matched too, and its events' `account` says whose it is;
 *                   so is the copy a suppression's evidence names when its record is gone (a one-click
 *                   unsubscribe after the purge: its token carries the address, core/tokens.ts)
 *   raw feedback    those ids, plus the mail kept for the operator (feedback:unprocessed: not understood,
 *                   ambiguous, postmaster's) that names the address
 *   notices         failure notices to SMTP senders naming the address as their failed recipient: the
 *                   "n:" references of the address index (app/notices.ts indexes each notice so)
 *   webhooks        every endpoint's outbox and dead letters of the accounts in scope, by (msgId, idx)
 *   suppression     the accounts' lists and the global list, by address; soft bounces by address
 *   idempotency     the accounts' stored answers (they list accepted recipients): a SCAN, see below
 *
 * Erasure keeps one thing: a suppression, as the address's salted digest, so the person is still
 * never mailed. (And names nobody in the tombstones it leaves: an erased recipient's x:<idx> mark, a
 * message's x:* once every recipient is erased, store/tombstone.ts, by which later mail about them is
 * known and dropped.) It is idempotent (a second run finds nothing) and safe while mail is in flight: a
 * queue entry removed while leased makes its holder's outcome a no-op, but the copy being sent at
 * that moment may still go out. Events about the copies that come while the erasure runs or later
 * (that copy's delivery outcome, an open or click decided before the marks went, a held click) are
 * dropped by the stream's script for an hour (keys.eventsErased, appendEvents-2.lua; the copies are
 * added before the walk, so an event is either walked or dropped), and the tracking scripts write
 * none after that (the erased marks). An unsubscribe (page or mail) or feedback mail that found the
 * copy before the erasure began and writes its suppression only after the erasure ended may still
 * leave the address on a list (run erase again to turn it into a digest); its second write, with the
 * event's id, never puts an erased address back (store/suppression.ts attachEvidence). A webhook
 * batch being POSTed at that moment may be put back by a failed attempt the same way.
 */
export interface PrivacyScope {
  /** The accounts whose lists, campaigns, suppression lists and webhooks are searched. */
  readonly accounts: readonly string[];
  /** Every account (operator): messages of any account are included, not only those of `accounts`. */
  readonly all: boolean;
}

/** Stream entries read per XRANGE: ~1 ms of Redis time per page. */
const EVENTS_PAGE = 1000;
/** Queue entries are tried up to this attempt number even without a delivery record. */
const ATTEMPT_FLOOR = 2;
/** Members per ZREM when an erasure drops part of an address's index. */
const ZREM_SLICE = 1000;

/** What an erased address becomes inside a stored body or answer. */
export const ERASED_ADDRESS = 'erased@erased.invalid';
/** Keys per SCAN step of the idempotency walk. */
const SCAN_COUNT = 1000;
/** Batches per ZSCAN step of a webhook outbox (a batch is up to webhooks.batchSize events). */
export const OUTBOX_PAGE = 100;
/** Dead-lettered webhook batches read at a time by an erasure (each up to webhooks.batchSize events). */
const DEAD_PAGE = 100;
/** Ids per ZSCAN step of the unprocessed feedback index (an operator's search of every account). */
export const UNPROCESSED_PAGE = 1000;

interface MessageRef {
  readonly msgId: string;
  readonly idx: number;
  readonly account: string;
  readonly domain: string;
  /** Campaign copies: the campaign and its list; null for a message. */
  readonly campaign: CampaignRecord | null;
  /** A message's record as find() read it; null for a campaign copy. Both null: the record is gone, its events are left (withEvents). */
  readonly meta: MessageMeta | null;
  readonly at: number;
}

/**
 * A failure notice that names the address (its failed recipient) in its body: a message of the
 * sender's account, to the sender. Its body, while stored (until the notice is sent), quotes the
 * address; once it is gone, the record names only the message the notice was about.
 */
interface NoticeRef {
  readonly id: string;
  readonly account: string;
  readonly meta: MessageMeta;
}

/** An entry of the address index: its member, and whether this erasure may drop it. */
interface IndexEntry {
  readonly member: string;
  /** In scope, or naming data that is gone: an account's erasure leaves other accounts' entries. */
  readonly drop: boolean;
}

/** A copy whose message or campaign record is gone: only its events may be left. */
interface LooseRef {
  readonly msgId: string;
  readonly idx: number;
  /** Its entry of the address index; null when a suppression's evidence named it (find). */
  readonly member: string | null;
  readonly at: number;
}

interface Found {
  readonly address: string;
  readonly digest: string;
  readonly contacts: (Contact & { account: string; listId: string; listName: string })[];
  readonly refs: MessageRef[];
  readonly notices: NoticeRef[];
  /** Their entries of the address index are not in `index`: whose they are is known from their events (withEvents). */
  readonly loose: LooseRef[];
  readonly index: IndexEntry[];
  /** Deleted lists whose kept address index (keepCopiesFindable) names the address. */
  readonly deletedLists: string[];
}

function inScope(scope: PrivacyScope, account: string): boolean {
  return scope.all || scope.accounts.includes(account);
}

/** The pair key events and webhooks are matched by. */
const pairOf = (msgId: string, idx: number | string): string => `${msgId}:${idx}`;

async function find(redis: RedisClient, keys: Keys, address: string, scope: PrivacyScope): Promise<Found> {
  const norm = normaliseAddress(address);
  const digest = await addressDigest(redis, keys, norm);
  const refs: MessageRef[] = [];
  const seen = new Set<string>();
  // A campaign copy can be found twice (a "c:" reference and a contact still in the list): once.
  const add = (r: MessageRef): void => {
    const pair = pairOf(r.msgId, r.idx);
    if (seen.has(pair)) return;
    seen.add(pair);
    refs.push(r);
  };
  const index: IndexEntry[] = [];
  const loose: LooseRef[] = [];
  const notices: NoticeRef[] = [];
  // Events are kept from their own time (retention.events), so they can outlive their record.
  const gone = (r: { ref: { msgId: string; idx: number }; member: string; at: number }): void => {
    loose.push({ msgId: r.ref.msgId, idx: r.ref.idx, member: r.member, at: isId(r.ref.msgId) ? Math.min(r.at, idTime(r.ref.msgId)) : r.at });
  };
  for (const r of await readAddressRefs(redis, keys, digest)) {
    if (r.ref.kind === 'n') {
      // A notice's events name its own recipient (the sender), never this address: gone, it names nothing.
      const notice = await getMessage(redis, keys, r.ref.msgId);
      const mine = notice !== null && notice.meta.source === 'dsn' && inScope(scope, notice.meta.account);
      index.push({ member: r.member, drop: notice === null || notice.meta.source !== 'dsn' || mine });
      if (mine) notices.push({ id: notice.meta.id, account: notice.meta.account, meta: notice.meta });
      continue;
    }
    if (r.ref.kind === 'c') {
      // The copies of a campaign to a contact deleted since (keepCopiesFindable).
      const c = await getCampaign(redis, keys, null, r.ref.msgId);
      if (c === null) {
        gone(r);
        continue;
      }
      index.push({ member: r.member, drop: inScope(scope, c.account) });
      if (inScope(scope, c.account)) add({ msgId: c.id, idx: r.ref.idx, account: c.account, domain: domainOf(norm), campaign: c, meta: null, at: c.startedAt ?? c.createdAt });
      continue;
    }
    const msg = await getMessage(redis, keys, r.ref.msgId);
    if (msg === null) {
      gone(r);
      continue;
    }
    const rcpt = msg.meta.rcpts[r.ref.idx];
    // An erased recipient's tombstone has no address: the entry names nothing any more.
    const live = rcpt !== undefined && normaliseAddress(rcpt.address) === norm;
    index.push({ member: r.member, drop: !live || inScope(scope, msg.meta.account) });
    if (!live || !inScope(scope, msg.meta.account)) continue;
    // Its events from its acceptance on: the reference's score is later when the message finished late.
    add({ msgId: r.ref.msgId, idx: r.ref.idx, account: msg.meta.account, domain: rcpt.domain, campaign: null, meta: msg.meta, at: Math.min(r.at, msg.meta.acceptedAt) });
  }
  // A copy unsubscribed after its record was purged may be named by nothing else: its unsubscribe
  // event can be written long after the address's reference went (as long as the link's key verifies).
  const named = new Set([...seen, ...loose.map((l) => pairOf(l.msgId, l.idx))]);
  for (const s of await suppressions(redis, keys, norm, digest, scope)) {
    const ev = s.entry.evidence as Record<string, unknown> | undefined;
    const msgId = ev?.['msgId'];
    const idx = Number(ev?.['idx']);
    if (typeof msgId !== 'string' || !Number.isSafeInteger(idx) || named.has(pairOf(msgId, idx))) continue;
    named.add(pairOf(msgId, idx));
    if ((await redis.exists(keys.msgMeta(msgId))) === 0) loose.push({ msgId, idx, member: null, at: isId(msgId) ? idTime(msgId) : s.entry.at });
  }
  const contacts: Found['contacts'] = [];
  const deletedLists: string[] = [];
  for (const account of scope.accounts) {
    const lists = await listLists(redis, keys, account);
    const live = new Set(lists.map((l) => l.id));
    const held: Found['contacts'] = [];
    for (const list of lists) {
      const no = await redis.hget(keys.listEmails(list.id), norm);
      if (no === null) continue;
      const [c] = await readContacts(redis, keys, list.id, [Number(no)]);
      if (c) held.push({ ...c, account, listId: list.id, listName: list.name });
    }
    contacts.push(...held);
    /** The address's number in each deleted list's kept address index, read once per list. */
    const keptNo = new Map<string, string | null>();
    const campaigns = await campaignListIds(redis, keys, account);
    // A deleted contact's numbers in each campaign's {m:<id>}:gone (keepCopiesFindable): found as long
    // as the address is kept there, which may be longer than its "c:" reference lives. One HGET a
    // campaign, auto-pipelined as campaignListIds reads them.
    const goneNos = await Promise.all(campaigns.map(({ id }) => redis.hget(keys.campaignGone(id), goneField(digest))));
    for (const [i, { id, listId }] of campaigns.entries()) {
      const contact = held.find((h) => h.listId === listId);
      // A deleted list's address index is kept while its campaigns' copies may be (keepCopiesFindable).
      if (!contact && !live.has(listId) && !keptNo.has(listId)) keptNo.set(listId, await redis.hget(keys.listEmails(listId), norm));
      const kept = contact ? null : (keptNo.get(listId) ?? null);
      const gone = goneNumbers(goneNos[i] ?? null);
      if (!contact && kept === null && gone.length === 0) continue;
      const c = await getCampaign(redis, keys, account, id);
      if (!c) continue;
      if (kept !== null && !deletedLists.includes(listId)) deletedLists.push(listId);
      const at = c.startedAt ?? c.createdAt;
      if (contact || kept !== null) add({ msgId: c.id, idx: contact ? contact.no : Number(kept), account, domain: contact ? contact.domain : domainOf(norm), campaign: c, meta: null, at });
      for (const no of gone) add({ msgId: c.id, idx: no, account, domain: domainOf(norm), campaign: c, meta: null, at });
    }
  }
  return { address: norm, digest, contacts, refs, notices, loose, index, deletedLists };
}

/**
 * The events of the address's references, with one walk of the stream, and what the references whose
 * record is gone (`loose`) turned out to be: one whose events are the scope's account's is the
 * scope's (a message ref, its record null), one whose events are another account's is left with its
 * index entry for that account's own erasure, one with no event left names nothing and its entry may
 * go. Returns every reference and index entry, and the events of the scope's references.
 */
async function withEvents(redis: RedisClient, keys: Keys, f: Found, scope: PrivacyScope, now: number): Promise<{ refs: MessageRef[]; index: IndexEntry[]; events: StreamEvent[] }> {
  const loose = new Map(f.loose.map((l) => [pairOf(l.msgId, l.idx), l]));
  const pairs = new Set([...f.refs.map((r) => pairOf(r.msgId, r.idx)), ...loose.keys()]);
  const found = await matchingEvents(redis, keys, pairs, Math.min(now, ...f.refs.map((r) => r.at), ...f.loose.map((l) => l.at)));
  const owner = new Map<string, string>();
  for (const e of found) {
    const pair = pairOf(e.fields['msgId'] ?? '', e.fields['idx'] ?? '');
    if (loose.has(pair) && !owner.has(pair)) owner.set(pair, e.fields['account'] ?? '');
  }
  const refs = [...f.refs];
  const index = [...f.index];
  for (const [pair, l] of loose) {
    const account = owner.get(pair);
    const mine = account !== undefined && inScope(scope, account);
    if (l.member !== null) index.push({ member: l.member, drop: account === undefined || mine });
    if (mine) refs.push({ msgId: l.msgId, idx: l.idx, account, domain: domainOf(f.address), campaign: null, meta: null, at: l.at });
  }
  const kept = new Set(refs.map((r) => pairOf(r.msgId, r.idx)));
  return { refs, index, events: found.filter((e) => kept.has(pairOf(e.fields['msgId'] ?? '', e.fields['idx'] ?? ''))) };
}

/**
 * The campaigns of `account` that began sending to `listId` (a copy may exist): a draft or a
 * scheduled campaign made none.
 */
export async function campaignsSentToList(redis: RedisClient, keys: Keys, account: string, listId: string): Promise<CampaignRecord[]> {
  return (await campaignsOfList(redis, keys, account, listId)).filter((c) => c.startedAt !== null);
}

/** The field of {m:<campaignId>}:gone naming a deleted contact's numbers by the address's digest. */
const goneField = (digest: string): string => `d:${digest}`;

/** The contact numbers of a goneField value ("5", or "5 9": deleted, added again and deleted while the campaign read its list). */
function goneNumbers(value: string | null): number[] {
  if (!value) return [];
  return value.split(' ').map(Number).filter((n) => Number.isSafeInteger(n) && n > 0);
}

/**
 * Keeps the campaign copies a contact received findable by a later erasure of the address, when the
 * contact is about to be deleted from its list: erasure finds campaign copies through the lists'
 * address index, which no longer names a deleted contact. One "c:<campaignId>:<no>" reference per
 * campaign that began sending to the list, in the address index (store/address-index.ts), for
 * `ttlMs` (ingress/persist.ts refsTtlMs: as long as a copy's data can live); and the other way, the
 * address under its contact number in each such campaign's {m:<id>}:gone, so the copies'
 * unsubscribe links, bounces and complaints still name it (store/recipients.ts messageFor), with the
 * number under the address's digest ("d:<digest>"), which find() reads per campaign. Both fields
 * live `ttlMs` from this deletion (their time in {m:<id>}:goneAt, trimmed by the campaign's later
 * deletions, keepGone-3.lua), but only roughly, as the "c:" reference does (trimmed by the address's
 * later writes): find() reads "d:" so that an address still kept there is found whichever went first.
 * The copies record no open or click from then on (an "x:<no>" mark, as an erasure leaves): the
 * person is no longer the account's contact. Returns how many campaigns. (A deleted list keeps its address index for the same time instead:
 * contacts.ts deleteList.)
 */
export async function keepCopiesFindable(
  redis: RedisClient,
  keys: Keys,
  account: string,
  listId: string,
  contact: { readonly email: string; readonly no: number },
  now: number,
  ttlMs: number,
): Promise<number> {
  // Only campaigns whose snapshot of the list holds the contact mailed it (lastNo: the list as it
  // was when the campaign began; null while it is read).
  const campaigns = (await campaignsSentToList(redis, keys, account, listId)).filter((c) => c.lastNo === null || contact.no <= c.lastNo);
  await indexAddresses(redis, keys, campaigns.map((c) => ({ address: contact.email, ref: { kind: 'c', msgId: c.id, idx: contact.no }, at: now })), ttlMs);
  // And the other way, for the copies' unsubscribe links, bounces and complaints (recipients.ts).
  const ttl = Math.max(1, Math.floor(ttlMs));
  // Each field for ttlMs from its deletion, however often later deletions renew the key (keepGone-3.lua).
  const digest = await addressDigest(redis, keys, contact.email);
  await Promise.all(campaigns.map((c) => redis.keepGone(keys.campaignGone(c.id), keys.campaignGoneAt(c.id), keys.trackMarks(c.id), contact.no, contact.email, digest, Math.floor(now), ttl)));
  return campaigns.length;
}

interface StreamEvent {
  readonly id: string;
  readonly fields: Record<string, string>;
}

/** Every event naming one of the pairs, from `since` (ms) on, read a page at a time. */
async function matchingEvents(redis: RedisClient, keys: Keys, pairs: ReadonlySet<string>, since: number): Promise<StreamEvent[]> {
  if (pairs.size === 0) return [];
  const out: StreamEvent[] = [];
  let start = `${Math.max(0, Math.floor(since))}-0`;
  for (;;) {
    const page = (await redis.xrange(keys.events(), start, '+', 'COUNT', EVENTS_PAGE)) as [string, string[]][];
    for (const [id, flat] of page) {
      const fields = streamFields(flat);
      const msgId = fields['msgId'];
      if (msgId !== undefined && fields['idx'] !== undefined && pairs.has(pairOf(msgId, fields['idx']))) out.push({ id, fields });
    }
    if (page.length < EVENTS_PAGE) return out;
    start = `(${(page[page.length - 1] as [string, string[]])[0]}`;
  }
}

/**
 * Raw feedback mail about the address:
 * - named by its events (which are the scope's);
 * - not processed yet (feedback:pending: for milliseconds normally, minutes after a crash, up to its
 *   retention while no feedback process runs), so no event names it: an account's request takes the
 *   mail returned to one of its copies (`pairs`) by the VERP address it came to; an operator's, any
 *   that names the address;
 * - for an operator's search of every account only, mail of the unprocessed index that names it (not
 *   understood, ambiguous, or sent to postmaster). Such mail was acted on for no copy, or not only
 *   for one, so nothing says whose it is (a bounce often quotes the original, which may be any
 *   account's): an account's own request never reads or erases it.
 */
async function feedbackIds(redis: RedisClient, keys: Keys, address: string, events: readonly StreamEvent[], scope: PrivacyScope, pairs: ReadonlySet<string>): Promise<string[]> {
  const ids = new Set(events.flatMap((e) => (e.fields['feedbackId'] ? [e.fields['feedbackId']] : [])));
  const names = (raw: Buffer | null, rcpts: string | null): boolean => (raw !== null && raw.toString('latin1').toLowerCase().includes(address)) || (rcpts?.toLowerCase().includes(address) ?? false);
  const returnedToScope = (rcpts: string | null): boolean =>
    jsonOr<unknown[]>(rcpts ?? '[]', []).some((a) => {
      const v = typeof a === 'string' ? parseVerp(a) : undefined;
      return v !== undefined && pairs.has(pairOf(v.msgId, v.idx));
    });
  // In ZSCAN steps (the unprocessed index holds the retention window's mail): every id there from
  // start to end is returned, whatever the inbound MX adds or trims meanwhile (one returned twice is
  // read twice).
  const scan = async (index: string, match: (raw: Buffer | null, rcpts: string | null) => boolean): Promise<void> => {
    let cursor = '0';
    do {
      const [next, flat] = await redis.zscan(index, cursor, 'COUNT', UNPROCESSED_PAGE);
      for (let i = 0; i < flat.length; i += 2) {
        const id = flat[i] as string;
        if (ids.has(id)) continue;
        const [raw, rcpts] = await Promise.all([redis.hgetBuffer(keys.feedbackRaw(id), 'raw'), redis.hget(keys.feedbackRaw(id), 'rcpts')]);
        if (raw !== null && match(raw, rcpts)) ids.add(id);
      }
      cursor = next;
    } while (cursor !== '0');
  };
  await scan(keys.feedbackPending(), scope.all ? names : (_raw, rcpts) => returnedToScope(rcpts));
  if (scope.all) await scan(keys.feedbackUnprocessed(), names);
  return [...ids];
}

/** The suppression entries of the address: the accounts' lists and the global list. */
async function suppressions(redis: RedisClient, keys: Keys, address: string, digest: string, scope: PrivacyScope): Promise<{ list: string; erased: boolean; entry: SuppressionEntry }[]> {
  const out: { list: string; erased: boolean; entry: SuppressionEntry }[] = [];
  for (const list of [...scope.accounts, GLOBAL_LIST]) {
    const [plain, hashed] = await redis.hmget(keys.suppression(list), address, erasedField(digest));
    if (plain != null) out.push({ list, erased: false, entry: jsonOr<unknown>(plain, undefined) as SuppressionEntry });
    if (hashed != null) out.push({ list, erased: true, entry: jsonOr<unknown>(hashed, undefined) as SuppressionEntry });
  }
  return out;
}

/**
 * Whether a suppression's evidence is the scope's to see and erase: always for the operator; for an
 * account, when it names one of the account's own recipients (`pairs`). The global list is everyone's:
 * its entry may have been made by another account's mail (a hard bounce), whose ids stay that
 * account's.
 */
function evidenceInScope(scope: PrivacyScope, pairs: ReadonlySet<string>, s: { list: string; entry: SuppressionEntry }): boolean {
  if (scope.all || s.list !== GLOBAL_LIST) return true;
  const ev = s.entry.evidence as Record<string, unknown> | undefined;
  return typeof ev?.['msgId'] === 'string' && pairs.has(pairOf(ev['msgId'], String(ev['idx'])));
}

/**
 * The address's soft-bounce history ("<msgId>:<idx>" → time, and its copies' delivery marks) that the scope may see and erase: all
 * of it for the operator, an account's own recipients for an account. The history is global (five
 * soft bounces from any accounts' mail suppress the address everywhere): one account's erasure must
 * not reset the count that other accounts' mail built.
 */
async function softBouncesInScope(redis: RedisClient, keys: Keys, digest: string, scope: PrivacyScope, pairs: ReadonlySet<string>): Promise<{ member: string; at: number }[]> {
  const flat = await redis.zrange(keys.softBounces(digest), 0, -1, 'WITHSCORES');
  const out: { member: string; at: number }[] = [];
  for (let i = 0; i + 1 < flat.length; i += 2) {
    const member = flat[i] as string;
    // A delivery mark ("d:<msgId>:<idx>", store/soft-bounces.ts) belongs to the copy it names.
    if (scope.all || pairs.has(isDeliveryMark(member) ? member.slice(2) : member)) out.push({ member, at: Number(flat[i + 1]) });
  }
  return out;
}

function eventJson(e: StreamEvent): Record<string, string> {
  return { ...e.fields, id: e.id, time: new Date(streamIdTime(e.id)).toISOString() };
}

/**
 * A delivery record ({d:<domain>}:rs:…, a Redis hash of strings) typed: counts and codes as numbers
 * (as GET /v1/messages/:id gives them), times as ISO strings like every other time of the export;
 * other fields as stored.
 */
function deliveryJson(h: Readonly<Record<string, string>>): Record<string, string | number> {
  const out: Record<string, string | number> = {};
  for (const [k, v] of Object.entries(h)) {
    const n = Number(v);
    if ((k === 'attempts' || k === 'code') && v !== '' && Number.isFinite(n)) out[k] = n;
    else if ((k === 'updatedAt' || k === 'nextAt') && v !== '' && Number.isFinite(n)) out[k] = new Date(n).toISOString();
    else out[k] = v;
  }
  return out;
}

/** Everything held about `address` in `scope`, as one JSON-ready object. */
export async function exportAddress(redis: RedisClient, keys: Keys, address: string, scope: PrivacyScope, now = Date.now()): Promise<Record<string, unknown>> {
  const f = await find(redis, keys, address, scope);
  const { refs, events } = await withEvents(redis, keys, f, scope, now);
  const pairs = new Set(refs.map((r) => pairOf(r.msgId, r.idx)));
  const byType = (...types: string[]) => events.filter((e) => types.includes(e.fields['type'] ?? '')).map(eventJson);
  const messages = [];
  for (const r of refs) {
    const [delivery, marks] = await Promise.all([redis.hgetall(keys.rcptState(r.domain, r.msgId, r.idx)), redis.hgetall(keys.trackMarks(r.msgId))]);
    const own = Object.fromEntries(Object.entries(marks).filter(([k]) => k === `hc:${r.idx}` || new RegExp(`^(?:m?[ocub]|f[ch]):${r.idx}(:\\d+)?$`).test(k)));
    messages.push({
      id: r.msgId,
      kind: r.campaign ? 'campaign' : 'message',
      account: r.account,
      recipientIndex: r.idx,
      ...(r.campaign ? { campaign: { name: r.campaign.name, listId: r.campaign.listId, subject: r.campaign.subject } } : {}),
      ...(r.meta ? { from: r.meta.from, acceptedAt: new Date(r.meta.acceptedAt).toISOString(), tags: r.meta.tags, metadata: r.meta.metadata } : {}),
      delivery: Object.keys(delivery).length > 0 ? deliveryJson(delivery) : null,
      tracking: own,
      events: events.filter((e) => e.fields['msgId'] === r.msgId && e.fields['idx'] === String(r.idx)).map(eventJson),
    });
  }
  const feedback = [];
  for (const id of await feedbackIds(redis, keys, f.address, events, scope, pairs)) {
    const h = await redis.hmget(keys.feedbackRaw(id), 'mailFrom', 'receivedAt', 'outcome', 'rcpts');
    const raw = await redis.hgetBuffer(keys.feedbackRaw(id), 'raw');
    if (raw === null) continue;
    feedback.push({ id, receivedAt: new Date(Number(h[1] ?? 0)).toISOString(), outcome: h[2] ?? '', mailFrom: h[0] ?? '', rcpts: jsonOr<unknown>(h[3] ?? '[]', undefined), raw: raw.toString('utf8') });
  }
  const notices = [];
  for (const n of f.notices) {
    const body = await redis.getBuffer(keys.msgBody(n.id));
    notices.push({ id: n.id, account: n.account, about: n.meta.metadata['about'] ?? null, to: n.meta.rcpts[0]?.address ?? null, queuedAt: new Date(n.meta.acceptedAt).toISOString(), body: body === null ? null : body.toString('utf8') });
  }
  const soft = await softBouncesInScope(redis, keys, f.digest, scope, pairs);
  return {
    email: f.address,
    accounts: scope.all ? 'all' : scope.accounts,
    exportedAt: new Date(now).toISOString(),
    contacts: f.contacts.map((c) => ({ account: c.account, listId: c.listId, list: c.listName, no: c.no, email: c.email, status: c.status, fields: c.fields, created: new Date(c.created).toISOString(), updated: new Date(c.updated).toISOString() })),
    // Another account's evidence on the global list is left out: the entry's reason and time are the
    // address's, the ids are that account's.
    suppressions: (await suppressions(redis, keys, f.address, f.digest, scope)).map((s) => {
      const { evidence, ...rest } = s.entry;
      return { list: s.list === GLOBAL_LIST ? 'global' : s.list, erased: s.erased, ...rest, ...(evidenceInScope(scope, pairs, s) ? { evidence } : {}) };
    }),
    messages,
    opens: byType('opened'),
    clicks: byType('clicked'),
    unsubscribes: byType('unsubscribed'),
    bounces: byType('bounced', 'expired', 'delayed', 'deferred'),
    complaints: byType('complained'),
    softBounces: soft.filter((s) => !isDeliveryMark(s.member)).map((s) => ({ ref: s.member, at: new Date(s.at).toISOString() })),
    feedback,
    notices,
  };
}

export interface ErasureReport {
  readonly contacts: number;
  readonly messages: number;
  readonly queued: number;
  readonly events: number;
  readonly feedback: number;
  /** Failure notices still queued whose body named the address: it is replaced there. */
  readonly notices: number;
  readonly webhookBatches: number;
  readonly suppressions: number;
  readonly idempotency: number;
}

/**
 * Removes every trace of `address` in `scope` (see the module comment for what stays and the limits
 * while mail is in flight), then appends an `erased` event per account touched (no address in it:
 * `ref` is the audit log's addressRef), so the account's webhooks tell the controller.
 */
export async function eraseAddress(
  redis: RedisClient,
  keys: Keys,
  address: string,
  scope: PrivacyScope,
  o: { readonly eventsMaxLen: number; readonly recordTtlMs: number; readonly refsTtlMs: number; readonly ref: string; readonly now?: number },
): Promise<ErasureReport> {
  const now = o.now ?? Date.now();
  const f = await find(redis, keys, address, scope);
  let queued = 0;
  let messages = 0;
  // The erased mark of a copy whose record is gone (store/tombstone.ts): made with the records' TTL,
  // or kept with the marks' own when they exist. The copy's index is always known: the address index
  // and a suppression's evidence name (msgId, idx), and the events are matched by both.
  const markErased = async (msgId: string, idx: number): Promise<void> => {
    const marks = keys.trackMarks(msgId);
    await redis.multi().hset(marks, `x:${idx}`, ERASED).pexpire(marks, Math.max(1, o.recordTtlMs), 'NX').exec();
  };
  // Queue first, so nothing is claimed again while the rest goes; then the records.
  const eraseRef = async (r: MessageRef): Promise<void> => {
    const cq = r.campaign ? keys.campaignQueue(r.domain, r.msgId) : keys.campaignQueue(r.domain, `${r.msgId}:none`);
    // A pending copy's count (cancelled) is made below, after its record is erased; until then the
    // queue step notes it owed, so a crash in between leaves it to the reaper instead of leaving the
    // message or campaign pending for good.
    const removed = await redis.eraseEntry(keys.ready(r.domain), keys.leases(r.domain), keys.rcptState(r.domain, r.msgId, r.idx), cq, r.msgId, r.idx, ATTEMPT_FLOOR, now, owedMember(r, CANCELLED));
    queued += removed;
    // A reference whose record is gone (its life ended): its delivery record and queue entries went
    // above, if any were left. A bounce or complaint naming the copy can still come, and would be kept
    // as unmatched mail with the address in it: the copy's erased mark (store/tombstone.ts) says it is
    // about an erased person. Made with the records' TTL, or kept with its own if the marks exist.
    if (r.meta === null && r.campaign === null) {
      await markErased(r.msgId, r.idx);
      return;
    }
    const res = await redis.eraseRecipient(keys.msgMeta(r.msgId), keys.msgBody(r.msgId), keys.links(r.msgId), keys.trackMarks(r.msgId), keys.msgStats(r.msgId), r.idx, f.address, ERASED_ADDRESS, o.recordTtlMs);
    if (res > 0) messages++;
    // Counted on its message or campaign once, however often (the reaper may also come): the last of
    // a message's recipients frees its body, and keeps the others' references as long as its record
    // (the erased one is skipped: its address is gone from the record already).
    if (removed > 0) await countOwedCopy(redis, keys, r.domain, r, CANCELLED, now, { recordsMs: o.recordTtlMs, refsMs: o.refsTtlMs });
    if (r.campaign) await redis.multi().hdel(keys.campaignGone(r.msgId), String(r.idx), goneField(f.digest)).zrem(keys.campaignGoneAt(r.msgId), `${r.idx} ${f.digest}`).exec();
  };
  // From here on no event naming these copies reaches the stream (appendEvents-2.lua): an open or
  // click decided before their marks go, or a delivery outcome, is dropped rather than appended
  // after the walk below.
  await guardEvents(redis, keys, f.refs, now);
  for (const r of f.refs) await eraseRef(r);
  // A notice still queued goes on to its sender (who sent the message), with the address replaced.
  let notices = 0;
  for (const n of f.notices) notices += await redis.redactBody(keys.msgBody(n.id), f.address, ERASED_ADDRESS);
  // Events naming the recipients: walked after the queue, so an outcome applied meanwhile is in it.
  const { refs, index, events } = await withEvents(redis, keys, f, scope, now);
  await guardEvents(redis, keys, refs.slice(f.refs.length), now);
  for (const r of refs.slice(f.refs.length)) await eraseRef(r);
  // A copy whose record is gone and which no event names any more: a scoped erasure cannot tell it
  // was the scope's (it is left unmarked), an erasure everywhere need not. It was this address's copy
  // (its index entry or a suppression named it), so mail about it is about the erased person too.
  if (scope.all) {
    const owned = new Set(refs.map((r) => pairOf(r.msgId, r.idx)));
    for (const l of f.loose) if (!owned.has(pairOf(l.msgId, l.idx))) await markErased(l.msgId, l.idx);
  }
  // The index entries of other accounts stay, so their own erasure still finds their data.
  const dropped = index.filter((e) => e.drop).map((e) => e.member);
  if (dropped.length === index.length) await redis.del(keys.addressRefs(f.digest));
  else {
    // In slices, for an address that received tens of thousands of messages in the retention period:
    // one ZREM of them all would hold the server for its whole length, and ioredis spreads every
    // argument of a call onto the stack (a script call of ~50,000 overflowed it: ingress/persist.ts).
    for (let i = 0; i < dropped.length; i += ZREM_SLICE) await redis.zrem(keys.addressRefs(f.digest), ...dropped.slice(i, i + ZREM_SLICE));
  }

  // The events, and the raw feedback mail they (or its text) point to.
  const pairs = new Set(refs.map((r) => pairOf(r.msgId, r.idx)));
  const fb = await feedbackIds(redis, keys, f.address, events, scope, pairs);
  for (let i = 0; i < events.length; i += EVENTS_PAGE) await redis.xdel(keys.events(), ...events.slice(i, i + EVENTS_PAGE).map((e) => e.id));
  // Three slots ({f:<id>} and the two indexes): three commands, not a MULTI (refused across slots on
  // a cluster). A processing run that holds the mail already writes nothing back (its outcome is set
  // only on a record that exists) and drops the copy's data by its tombstones.
  for (const id of fb) await dropFeedback(redis, keys, id);

  const webhookBatches = await eraseFromWebhooks(redis, keys, scope.accounts, pairs, new Set(events.map((e) => e.id)));

  let contacts = 0;
  for (const c of f.contacts) if (await deleteContact(redis, keys, c.account, c.listId, c.email, now)) contacts++;
  for (const listId of f.deletedLists) await redis.hdel(keys.listEmails(listId), f.address);

  // Suppressions survive as the digest only; the evidence (event and message ids) goes, but for
  // another account's on the global list (its ids name no one once the address is a digest).
  let kept = 0;
  for (const s of await suppressions(redis, keys, f.address, f.digest, scope)) {
    if (s.erased) continue;
    const evidence = evidenceInScope(scope, pairs, s) ? { erased: now } : s.entry.evidence;
    const entry: SuppressionEntry = { reason: s.entry.reason, at: s.entry.at, evidence };
    await redis.multi().hset(keys.suppression(s.list), erasedField(f.digest), JSON.stringify(entry)).hdel(keys.suppression(s.list), f.address).exec();
    kept++;
  }
  if (scope.all) await redis.del(keys.softBounces(f.digest));
  else {
    const own = await softBouncesInScope(redis, keys, f.digest, scope, pairs);
    if (own.length > 0) await redis.zrem(keys.softBounces(f.digest), ...own.map((s) => s.member));
  }
  const idempotency = await eraseFromIdempotency(redis, keys, scope.accounts, f.address);

  const report: ErasureReport = { contacts, messages, queued, events: events.length, feedback: fb.length, notices, webhookBatches, suppressions: kept, idempotency };
  const touched = new Set([...f.contacts.map((c) => c.account), ...refs.map((r) => r.account), ...(scope.all ? [] : scope.accounts)]);
  for (const account of touched) {
    await appendEvent(redis, keys, 'erased', { account, ref: o.ref, contacts, messages, events: events.length }, o.eventsMaxLen);
  }
  return report;
}

/**
 * How long appendEvents-2.lua drops the events of an erased copy: far longer than any event takes
 * from its decision to its append (a held click ~2.5 s, a recorder's queue, a delivery outcome's
 * write), and short enough that the set holds only the last hour's erasures.
 */
export const EVENTS_GUARD_MS = 3_600_000;

/** Adds the copies to the stream's erased set (appendEvents-2.lua), dropping members past EVENTS_GUARD_MS. */
async function guardEvents(redis: RedisClient, keys: Keys, refs: readonly { readonly msgId: string; readonly idx: number }[], now: number): Promise<void> {
  if (refs.length === 0) return;
  const key = keys.eventsErased();
  const members = refs.flatMap((r) => [now, pairOf(r.msgId, r.idx)]);
  for (let i = 0; i < members.length; i += 2 * ZREM_SLICE) {
    await redis.multi().zremrangebyscore(key, '-inf', now - EVENTS_GUARD_MS).zadd(key, ...members.slice(i, i + 2 * ZREM_SLICE)).pexpire(key, EVENTS_GUARD_MS).exec();
  }
}

/**
 * Whether the copy was erased in the last EVENTS_GUARD_MS (its recipient asked for erasure while it
 * was in flight): what its outcome would write about the address (a suppression, a soft-bounce
 * history) must not bring the address back.
 */
export async function copyErased(redis: RedisClient, keys: Keys, msgId: string, idx: number): Promise<boolean> {
  return (await redis.zscore(keys.eventsErased(), pairOf(msgId, idx))) !== null;
}

/**
 * The webhook events not about a copy erased in the last EVENTS_GUARD_MS (the stream's erased set):
 * what a webhook dispatcher may still send. The erasure takes its recipients' events out of every
 * waiting batch (eraseFromWebhooks), but a batch being POSTed then, and put back after its walk
 * (a failed POST, a dead letter replayed), still holds them: checked again before each POST.
 */
export async function notErased<E extends Readonly<Record<string, unknown>>>(redis: RedisClient, keys: Keys, events: readonly E[]): Promise<E[]> {
  const pairs = events.map((e) => (typeof e['msgId'] === 'string' && e['idx'] !== undefined ? pairOf(e['msgId'], String(e['idx'])) : null));
  const asked = pairs.filter((p): p is string => p !== null);
  if (asked.length === 0) return [...events];
  const scores = await redis.zmscore(keys.eventsErased(), ...asked);
  const erased = new Set(asked.filter((_, i) => scores[i] !== null));
  return erased.size === 0 ? [...events] : events.filter((_, i) => pairs[i] === null || !erased.has(pairs[i] as string));
}

/** Events of a webhook batch that name an erased recipient (by stream id or by msgId/idx). */
function names(e: Record<string, unknown>, pairs: ReadonlySet<string>, ids: ReadonlySet<string>): boolean {
  if (typeof e['id'] === 'string' && ids.has(e['id'])) return true;
  return typeof e['msgId'] === 'string' && e['idx'] !== undefined && pairs.has(pairOf(e['msgId'], String(e['idx'])));
}

/**
 * Takes the erased recipients' events out of every batch waiting in an outbox (ZSET, rewritten with
 * its score) or a dead-letter list of the accounts' endpoints; a batch left empty goes. Returns the
 * batches changed.
 */
async function eraseFromWebhooks(redis: RedisClient, keys: Keys, accounts: readonly string[], pairs: ReadonlySet<string>, ids: ReadonlySet<string>): Promise<number> {
  if (pairs.size === 0 && ids.size === 0) return 0;
  let changed = 0;
  /** The batch without the erased events: undefined if unchanged, null if none is left. */
  const rewrite = (member: string): { id: unknown; next: string | null; oldest: number; removed: number } | undefined => {
    const batch = jsonOr<{ b?: unknown; e?: Record<string, unknown>[] } | undefined>(member, undefined);
    if (!batch || !Array.isArray(batch.e)) return undefined;
    const kept = batch.e.filter((e) => !names(e, pairs, ids));
    if (kept.length === batch.e.length) return undefined;
    const oldest = Math.min(...kept.map((e) => (typeof e['id'] === 'string' ? streamIdTime(e['id']) : Number.POSITIVE_INFINITY)));
    return { id: batch.b, next: kept.length === 0 ? null : JSON.stringify({ ...batch, e: kept }), oldest, removed: batch.e.length - kept.length };
  };
  for (const account of accounts) {
    for (const ep of await loadWebhooks(redis, keys, account)) {
      const outbox = keys.webhookOutbox(account, ep.id);
      const ages = keys.webhookAges(account, ep.id);
      // The outbox's event count (webhooks.maxOutbox), less the erased events.
      const held = keys.webhookOutboxEvents(account, ep.id);
      // In ZSCAN steps: a batch holds up to webhooks.batchSize events, so a whole outbox can be a big
      // reply. ZSCAN returns every batch there from start to end, whatever this walk changes; a
      // rewritten batch it may return again names no erased recipient any more and is left alone.
      let cursor = '0';
      do {
        const [next, flat] = await redis.zscan(outbox, cursor, 'COUNT', OUTBOX_PAGE);
        for (let i = 0; i + 1 < flat.length; i += 2) {
          const r = rewrite(flat[i] as string);
          if (r === undefined) continue;
          // Only if still there as read (rewriteBatch-3.lua): a batch settled or put back for a retry
          // meanwhile is not added again. The batch's oldest event for the lag gauge: gone with the
          // batch, or the oldest one kept. (One that moved on is checked again before it is sent:
          // housekeeping/webhooks.ts drops erased recipients' events before every POST.)
          const oldest = r.next === null || !Number.isFinite(r.oldest) ? '' : r.oldest;
          changed += await redis.rewriteBatch(outbox, ages, held, flat[i] as string, r.next ?? '', r.removed, typeof r.id === 'string' ? r.id : '', oldest);
        }
        cursor = next;
      } while (cursor !== '0');
      // In pages (a full list is 10,000 batches of up to 100 events: one read of it all stalled Redis
      // for a third of a second and took 450 MB here), each batch rewritten where it is (rewriteItem).
      // Walked from the tail by negative index: what moves a list meanwhile happens at its head
      // (retention's trim, a replay, the cap on dead letters) or appends at its tail, and neither
      // moves a batch the walk has still to read past it (an append makes it read one again, which
      // finds nothing left to take); a batch this walk removes moves those before it one up, which
      // the next page's start allows for.
      const dead = keys.webhookDead(account, ep.id);
      let end = -1;
      for (;;) {
        const start = end - DEAD_PAGE + 1;
        const page = await redis.lrange(dead, start, end);
        let gone = 0;
        for (const member of page) {
          const next = rewrite(member)?.next;
          if (next === undefined) continue;
          if ((await redis.rewriteItem(dead, member, next ?? '')) === 1) {
            changed++;
            if (next === null) gone++;
          }
        }
        if (page.length < DEAD_PAGE) break;
        end = start - 1 + gone;
      }
    }
  }
  return changed;
}

/**
 * Stored HTTP answers (Idempotency-Key) list the accepted recipients: the address is replaced in
 * those of the accounts. They are keyed by a hash of the client's key, so they are found with a SCAN
 * of each node (MATCH on the account's tag): O(keyspace) in steps of SCAN_COUNT, a cost paid per
 * erasure, not on any hot path. They expire by themselves after ingress.http.idempotencyTtl.
 */
async function eraseFromIdempotency(redis: RedisClient, keys: Keys, accounts: readonly string[], address: string): Promise<number> {
  let changed = 0;
  const nodes = await scanNodes(redis);
  for (const account of accounts) {
    const pattern = `${keys.idempotency(account, '').replace(/[*?[\]\\]/g, (c) => `\\${c}`)}*`;
    for (const { node } of nodes) {
      let cursor = '0';
      do {
        const [next, found] = await node.scan(cursor, 'MATCH', pattern, 'COUNT', SCAN_COUNT);
        cursor = next;
        for (const key of found) {
          const value = await redis.get(key);
          if (value === null || !value.toLowerCase().includes(address)) continue;
          await redis.set(key, replaceAll(value, address, ERASED_ADDRESS), 'KEEPTTL');
          changed++;
        }
      } while (cursor !== '0');
    }
  }
  return changed;
}

/** Every occurrence of `needle` (lower-case) in `text`, in any case, replaced. */
function replaceAll(text: string, needle: string, by: string): string {
  const lower = text.toLowerCase();
  let out = '';
  let from = 0;
  for (let at = lower.indexOf(needle); at !== -1; at = lower.indexOf(needle, from)) {
    out += text.slice(from, at) + by;
    from = at + needle.length;
  }
  return out + text.slice(from);
}
