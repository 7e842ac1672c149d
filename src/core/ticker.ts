/**
 * Runs a background job's step again and again: one step at a time, `intervalMs` apart, or at once
 * when the step says there is more to do or someone calls wake() (the run in progress ends first).
 * A step that throws is reported and the ticking goes on. stop() waits for the step in progress.
 */
export class Ticker {
  #timer: NodeJS.Timeout | undefined;
  #running: Promise<void> | undefined;
  #stopped = false;
  #again = false;

  /** `step` resolves to true when it left work it could do at once. */
  constructor(
    private readonly step: () => Promise<boolean | unknown>,
    private readonly intervalMs: number,
    private readonly onError: (err: unknown) => void,
  ) {}

  /** The first step runs after `delayMs` (default: one interval). */
  start(delayMs = this.intervalMs): void {
    this.#schedule(delayMs);
  }

  /** Run a step now, or right after the one in progress. */
  wake(): void {
    if (this.#stopped) return;
    if (this.#running) this.#again = true;
    else this.#schedule(0);
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    if (this.#timer) clearTimeout(this.#timer);
    await this.#running;
  }

  #schedule(delayMs: number): void {
    if (this.#stopped) return;
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = setTimeout(() => {
      this.#running = Promise.resolve()
        .then(() => this.step())
        .then(
          (more) => more === true,
          (err: unknown) => {
            this.onError(err);
            return false;
          },
        )
        .then((more) => {
          this.#running = undefined;
          const now = more || this.#again;
          this.#again = false;
          this.#schedule(now ? 0 : this.intervalMs);
        });
    }, delayMs);
  }
}
