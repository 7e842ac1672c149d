import type { Readable } from 'node:stream';

/**
 * Reads a stream to its end, keeping at most `max` bytes. Past the limit, bytes are counted and
 * dropped — the stream must still be drained (an SMTP DATA stream, for one, has to reach its end
 * before the server can answer). `data` is null when the limit was passed, or when the stream
 * reports `sizeExceeded` (smtp-server's own SIZE check).
 */
export function readBounded(stream: Readable & { sizeExceeded?: boolean }, max: number): Promise<{ data: Buffer | null; size: number }> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    stream.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size > max) chunks.length = 0;
      else chunks.push(chunk);
    });
    stream.once('error', reject);
    stream.once('end', () => resolve({ data: size > max || stream.sizeExceeded ? null : Buffer.concat(chunks, size), size }));
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
