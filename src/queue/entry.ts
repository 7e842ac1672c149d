/**
 * A queue entry is a small reference, never a rendered message (DESIGN §2 "render late"):
 *
 *   ZSET member  "<msgId>:<idx>:<attempt>"   e.g. "01jb3k9x2m4n5p6q:17:0"
 *                  │       │      └ attempts made so far (0 when first queued)
 *                  │       └ recipient index within the message
 *                  └ message id (src/core/ids.ts)
 *
 * The member lives in the destination's ready set (scored by due time) or, while claimed, in its
 * lease set (scored by lease expiry). The domain is not in the member: it is the key's hash tag.
 */
export interface QueueEntry {
  msgId: string;
  idx: number;
  attempt: number;
  domain: string;
  /**
   * The lease token of the claim that took it (claim.ts; queue/lua/lib/lease.lua). Its outcome names
   * it, so a holder whose lease ran out and was claimed again cannot settle the other holder's copy.
   * Absent for an entry that was not claimed (a cancel, an erasure).
   */
  lease?: string;
}

export function entryMember(e: { msgId: string; idx: number; attempt: number }): string {
  return `${e.msgId}:${e.idx}:${e.attempt}`;
}

const MEMBER_RE = /^(.+):(\d{1,9}):(\d{1,9})$/;

/** member, token, member, token, … for the scripts that take claimed entries with their lease tokens. */
export function memberTokens(entries: readonly QueueEntry[]): string[] {
  const out: string[] = [];
  for (const e of entries) out.push(entryMember(e), e.lease ?? '');
  return out;
}

/** Parses a member read back from Redis; undefined for anything that is not an entry (never throws). */
export function parseMember(domain: string, member: string): QueueEntry | undefined {
  const m = MEMBER_RE.exec(member);
  if (!m) return undefined;
  return { msgId: m[1] as string, idx: Number(m[2]), attempt: Number(m[3]), domain };
}

/** Groups items by destination: a queue script touches one destination's keys only (one slot). */
export function byDomain<T extends { domain: string }>(items: readonly T[]): Map<string, T[]> {
  const out = new Map<string, T[]>();
  for (const it of items) {
    const list = out.get(it.domain);
    if (list) list.push(it);
    else out.set(it.domain, [it]);
  }
  return out;
}
