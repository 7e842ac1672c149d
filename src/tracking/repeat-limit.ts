/**
 * Opens and clicks recorded per recipient (a token's message and recipient index) and minute, at
 * most: anyone holding one copy's pixel or link (the recipient, whoever they forward it to, a
 * script) could otherwise write an event into the stream per request, thousands a second from one
 * URL, inflating the copy's figures and pushing other events out of the stream (its length is
 * bounded: retention.eventsMaxLen) before webhooks route them. Past the limit a request is answered
 * as any other (the pixel, the redirect) and recorded nowhere (result 'throttled'). A recipient's
 * first open or click of a minute is always recorded, so a first open is never lost to it.
 *
 * Per process and in memory (fixed one-minute windows, forgotten at each window's end), so several
 * tracking processes each allow the limit. Recipients tracked per window are bounded (maxKeys):
 * beyond, new ones are not limited that minute, rather than the map growing without bound.
 */
export class RepeatLimit {
  #window = -1;
  #counts = new Map<string, number>();

  constructor(
    private readonly max: number,
    private readonly windowMs = 60_000,
    private readonly maxKeys = 200_000,
  ) {}

  /** Counts one request of `key` at `now` (ms); true when it is over the limit (not to be recorded). */
  over(key: string, now: number): boolean {
    const w = Math.floor(now / this.windowMs);
    if (w !== this.#window) {
      this.#window = w;
      this.#counts = new Map();
    }
    const n = (this.#counts.get(key) ?? 0) + 1;
    if (n === 1 && this.#counts.size >= this.maxKeys) return false;
    this.#counts.set(key, n);
    return n > this.max;
  }
}

/** Opens of one recipient recorded per minute (per tracking process). */
export const OPENS_PER_RECIPIENT_MINUTE = 60;
/** Clicks of one recipient recorded per minute (per tracking process): a link scanner's burst of every link of a mail fits. */
export const CLICKS_PER_RECIPIENT_MINUTE = 60;
