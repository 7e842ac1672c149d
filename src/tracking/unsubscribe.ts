import type { TokenPayload } from '../core/tokens.js';
import { liveAddress, messageFor, unsubscribeRecipient, type MessageView } from '../store/recipients.js';
import { addSuppression, attachEvidence, erasedSuppression } from '../store/suppression.js';
import { deletionDue } from '../store/account-state.js';
import { mark, appendTrackingEvent, storedIp } from './record.js';
import { modeOf, type TrackingDeps } from './deps.js';

export type UnsubscribeResult =
  | { readonly ok: true; readonly account: string; readonly address: string; readonly from: string | null; readonly first: boolean; readonly eventId: string }
  | { readonly ok: false; readonly reason: 'invalid-token' | 'unknown-recipient' };

/**
 * Who an unsubscribe token is about: its recipient's address and the message's sender, read from
 * the message's record; or, once the record is purged (retention.records), the address the token
 * carries itself (core/tokens.ts), with no record (`view` null) and no sender to name.
 */
export interface UnsubscribeTarget {
  readonly address: string;
  readonly from: string | null;
  readonly view: MessageView | null;
}

export async function unsubscribeTarget(deps: TrackingDeps, p: TokenPayload): Promise<UnsubscribeTarget | null> {
  if (p.kind !== 'u') return null;
  const [view, gone] = await Promise.all([messageFor(deps.redis, deps.keys, p.msgId, p.idx), deletionDue(deps.redis, deps.keys, p.account, (deps.now ?? Date.now)())]);
  // Once an account's deletion is due, a suppression written through a record the retention walk has
  // not reached yet would outlive the deletion (store/account-state.ts). Until then a closed
  // account's recipient may still opt out (its mail is held, and goes out again if the account is
  // reopened); what that writes goes with the account's data.
  if (gone) return null;
  if (!view) {
    if (p.address === undefined) return null;
    // Erased, its suppression kept as a digest: the address written again in clear beside it would
    // undo the erasure, for an opt-out already honoured. An erasure that kept no suppression leaves
    // nothing to tell by: then the click is the person's own opt-out, and written as one.
    if (await erasedSuppression(deps.redis, deps.keys, p.account, p.address)) return null;
    return { address: p.address, from: null, view: null };
  }
  // The account inside the signed token must be the message's: a token never acts across accounts.
  if (view.meta.account !== p.account) return null;
  // An erased recipient has no page and cannot be unsubscribed again: there is nobody left to name.
  const address = liveAddress(view.meta, p.idx);
  return address !== undefined ? { address, from: view.meta.from, view } : null;
}

/**
 * Unsubscribes the recipient a token names: the address goes on the account's suppression list at
 * once (a later send is refused at claim time), then an `unsubscribed` event is appended. Called by
 * the tracking server (RFC 8058 one-click POST, the page's form) with the token text or a payload it
 * has verified itself, and with the `target` it resolved for that payload, if any, so the message is
 * read once. (The inbound MX records a mailto unsubscribe itself, in feedback/process.ts: roles do
 * not import each other.)
 * Idempotent: a repeat writes the suppression again (an operator may have lifted it) and records an
 * event with first = 0.
 */
export async function unsubscribe(
  deps: TrackingDeps,
  token: string | TokenPayload,
  ctx: { via?: 'http' | 'mail'; userAgent?: string; ip?: string; target?: UnsubscribeTarget } = {},
): Promise<UnsubscribeResult> {
  const now = (deps.now ?? Date.now)();
  const p = typeof token === 'string' ? deps.codec.verify(token, now, 'u') : token;
  if (!p || p.kind !== 'u') return { ok: false, reason: 'invalid-token' };
  const target = ctx.target ?? (await unsubscribeTarget(deps, p));
  if (!target) return { ok: false, reason: 'unknown-recipient' };
  const mode = modeOf(deps.settings, p.account);
  const evidence = { msgId: p.msgId, idx: p.idx, via: ctx.via ?? 'http' };
  let first: boolean;
  if (target.view === null) {
    // A purged message keeps no marks (they would outlive its record): first is whether this
    // unsubscribe put the address on the account's list.
    first = await addSuppression(deps.redis, deps.keys, p.account, target.address, { reason: 'unsubscribe', at: now, evidence });
  } else {
    first = (await mark(deps, p, mode, now)).first;
    // The view's account is the token's (unsubscribeTarget checked it).
    await unsubscribeRecipient(deps.redis, deps.keys, target.view, p.idx, target.address, { now, evidence });
  }
  const eventId = await appendTrackingEvent(deps, p, {
    now, mode, first, machine: null, userAgent: ctx.userAgent ?? '', ip: storedIp(deps.settings, p.account, ctx.ip ?? ''), via: ctx.via ?? 'http',
  });
  // Then given the event's id as evidence, as the mailto path and bounces and complaints do
  // (feedback/process.ts): the suppression is written before the event that says so, and names it after.
  // No id: the copy is being erased (store/privacy.ts), which keeps the suppression as a digest only.
  // Only while still listed: an erasure that ran meanwhile keeps the address as its digest alone.
  if (eventId !== '') await attachEvidence(deps.redis, deps.keys, p.account, target.address, { reason: 'unsubscribe', at: now, evidence: { event: eventId, ...evidence } });
  // Counted as the unsubscribe by mail is (feedback/process.ts).
  deps.metrics?.suppressed?.inc({ list: 'account', reason: 'unsubscribe' });
  return { ok: true, account: p.account, address: target.address, from: target.from, first, eventId };
}
