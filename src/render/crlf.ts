/**
 * SMTP (RFC 5321 §2.3.8) carries lines ended by CRLF only, and a DKIM body hash is computed over
 * CRLF-terminated lines (RFC 6376 §3.4). A message submitted with bare LF endings would be rewritten
 * by some hop after we signed it, so we fix the endings first and sign exactly what goes on the wire.
 */

const CR = 0x0d;
const LF = 0x0a;

/** Returns `message` itself when it has no bare LF (the common case: no copy), else a CRLF copy. */
export function toCrlf(message: Buffer): Buffer {
  let bare = 0;
  for (let i = message.indexOf(LF); i !== -1; i = message.indexOf(LF, i + 1)) {
    if (i === 0 || message[i - 1] !== CR) bare++;
  }
  if (bare === 0) return message;

  const out = Buffer.allocUnsafeSlow(message.length + bare);
  let from = 0;
  let at = 0;
  for (let i = message.indexOf(LF); i !== -1; i = message.indexOf(LF, i + 1)) {
    if (i !== 0 && message[i - 1] === CR) continue;
    at += message.copy(out, at, from, i);
    out[at++] = CR;
    from = i; // the LF itself is copied with the next segment
  }
  message.copy(out, at, from);
  return out;
}
