/**
 * The lines of a byte stream, split on LF (a CR before it is left in: callers trim), numbered from 1,
 * a UTF-8 BOM dropped from the first. A line longer than `maxBytes` is not buffered: it comes as
 * `bytes: null` (the caller reports it). The last line, when the stream does not end with LF, comes
 * with `last: true`: a caller whose input was cut short (a size limit) may leave it unread.
 */
export async function* byteLines(source: AsyncIterable<Buffer | string>, maxBytes: number): AsyncGenerator<{ line: number; bytes: Buffer | null; last: boolean }> {
  let line = 0;
  let parts: Buffer[] = [];
  let size = 0;
  const finish = (last: boolean) => {
    line++;
    let bytes = size > maxBytes ? null : Buffer.concat(parts, size);
    if (bytes && line === 1 && bytes[0] === 0xef && bytes[1] === 0xbb && bytes[2] === 0xbf) bytes = bytes.subarray(3);
    parts = [];
    size = 0;
    return { line, bytes, last };
  };
  const take = (piece: Buffer) => {
    size += piece.length;
    if (size <= maxBytes && piece.length > 0) parts.push(piece);
  };
  for await (const c of source) {
    const chunk = typeof c === 'string' ? Buffer.from(c, 'utf8') : c;
    let start = 0;
    for (let nl = chunk.indexOf(0x0a); nl !== -1; nl = chunk.indexOf(0x0a, start)) {
      take(chunk.subarray(start, nl));
      start = nl + 1;
      yield finish(false);
    }
    take(chunk.subarray(start));
  }
  if (size > 0) yield finish(true);
}
