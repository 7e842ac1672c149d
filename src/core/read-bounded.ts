import type { Readable } from 'node:stream';

/**
 * Bytes that several readers may hold in memory together (e.g. every session of an SMTP server):
 * take() reserves, give() returns. A reader that cannot reserve its next chunk stops keeping bytes.
 */
export class ByteBudget {
  #used = 0;
  constructor(readonly limit: number) {}
  get used(): number {
    return this.#used;
  }
  take(n: number): boolean {
    if (this.#used + n > this.limit) return false;
    this.#used += n;
    return true;
  }
  give(n: number): void {
    this.#used = Math.max(0, this.#used - n);
  }
}

/**
 * Reads a stream to its end, keeping at most `max` bytes. Past the limit, bytes are counted and
 * dropped — the stream must still be drained (an SMTP DATA stream, for one, has to reach its end
 * before the server can answer). `data` is null when the limit was passed, or when the stream
 * reports `sizeExceeded` (smtp-server's own SIZE check). With a `budget`, the bytes kept are taken
 * from it as they arrive: when it runs out, nothing more is kept, what was taken is given back, and
 * `data` is null with `overBudget`. When `data` is returned, its `size` bytes stay taken: the caller
 * gives them back once it lets go of the data.
 */
export function readBounded(stream: Readable & { sizeExceeded?: boolean }, max: number, budget?: ByteBudget): Promise<{ data: Buffer | null; size: number; overBudget?: true }> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    let taken = 0;
    let dropped = false;
    let overBudget = false;
    const drop = (): void => {
      chunks.length = 0;
      dropped = true;
      budget?.give(taken);
      taken = 0;
    };
    stream.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (dropped) return;
      if (size > max) return drop();
      if (budget && !budget.take(chunk.length)) {
        overBudget = true;
        return drop();
      }
      taken += chunk.length;
      chunks.push(chunk);
    });
    stream.once('error', (err) => {
      drop();
      reject(err);
    });
    stream.once('end', () => {
      if (dropped || stream.sizeExceeded) {
        drop();
        resolve({ data: null, size, ...(overBudget ? { overBudget: true as const } : {}) });
      } else {
        // The bytes are the caller's to give back now: a late 'error' must not give them too.
        taken = 0;
        resolve({ data: Buffer.concat(chunks, size), size });
      }
    });
  });
}

/** Wraps a node-style callback so only its first call counts (a stream may end and error both). */
export function callOnce<E>(cb: (err: E | null, text?: string) => void): (err: E | null, text?: string) => void {
  let called = false;
  return (err, text) => {
    if (called) return;
    called = true;
    if (err) cb(err);
    else cb(null, text);
  };
}
