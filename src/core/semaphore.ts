/**
 * A counting semaphore with FIFO waiters that may take several permits at once. A waiter is let in
 * only when it is first in line and its permits are free, so a large request is never starved by a
 * stream of small ones.
 */
export class Semaphore {
  #free: number;
  readonly #waiters: { n: number; resolve: () => void }[] = [];

  constructor(readonly permits: number) {
    if (!Number.isInteger(permits) || permits < 1) throw new RangeError(`permits must be a positive integer, not ${permits}`);
    this.#free = permits;
  }

  /** Permits free now. */
  get free(): number {
    return this.#free;
  }

  /** Resolves once `n` permits (at most `permits`) are taken for the caller. */
  acquire(n = 1): Promise<void> {
    const want = Math.min(Math.max(1, n), this.permits);
    if (this.#waiters.length === 0 && this.#free >= want) {
      this.#free -= want;
      return Promise.resolve();
    }
    return new Promise((resolve) => this.#waiters.push({ n: want, resolve }));
  }

  /** Gives `n` permits back (as many as were acquired, capped as acquire capped them). */
  release(n = 1): void {
    this.#free = Math.min(this.permits, this.#free + Math.min(Math.max(1, n), this.permits));
    while (this.#waiters.length > 0 && this.#free >= (this.#waiters[0] as { n: number }).n) {
      const w = this.#waiters.shift() as { n: number; resolve: () => void };
      this.#free -= w.n;
      w.resolve();
    }
  }
}
