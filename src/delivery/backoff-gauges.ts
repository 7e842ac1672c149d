/**
 * What `sluice_backoff_active{provider}` and `sluice_backoff_level{provider}` show: the throttle
 * scopes of each provider (one per domain for a rule scoped by domain), as the dispatcher last saw
 * them. A provider is active while any of its scopes is suspended, and its level is the highest of
 * its scopes'; one scope served at full speed does not hide another's suspension. Read at scrape time,
 * so a suspension that ended without a visit (nothing more queued there) stops counting by itself.
 */
export class BackoffGauges {
  private readonly byProvider = new Map<string, Map<string, { level: number; suspendedUntil: number; goneAt: number }>>();

  /**
   * `keepMs`: how long a scope's backoff state lives in Redis after its last change (queue/backoff.ts
   * backoffKeepMs); a scope not seen for that long is at full speed again, and leaves the gauges
   * (a domain that stopped getting mail is never visited to say so).
   */
  constructor(private readonly keepMs: number) {}

  /** The scope's state as just read or changed: level (0 = full speed) and suspension end (ms), if any. */
  note(provider: string, scope: string, level: number, suspendedUntil: number | null, now: number): void {
    // A provider stays listed (at 0) once seen: its series reads 0 after a suspension, not "no data".
    let scopes = this.byProvider.get(provider);
    if (!scopes) this.byProvider.set(provider, (scopes = new Map()));
    if (level <= 0 && suspendedUntil === null) scopes.delete(scope);
    else scopes.set(scope, { level, suspendedUntil: suspendedUntil ?? 0, goneAt: now + this.keepMs });
  }

  /** Per provider seen: suspended scopes now (active = 1 when any) and the highest level. */
  read(now: number): { provider: string; active: 0 | 1; level: number }[] {
    const out: { provider: string; active: 0 | 1; level: number }[] = [];
    for (const [provider, scopes] of this.byProvider) {
      let active: 0 | 1 = 0;
      let level = 0;
      for (const [scope, s] of scopes) {
        if (s.goneAt <= now) {
          scopes.delete(scope);
          continue;
        }
        if (s.suspendedUntil > now) active = 1;
        if (s.level > level) level = s.level;
      }
      out.push({ provider, active, level });
    }
    return out;
  }
}
