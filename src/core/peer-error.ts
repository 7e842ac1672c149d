/**
 * A connection's error that its peer caused: a reset, a broken pipe, a timeout, a TLS handshake it
 * broke (bytes that are not TLS, a certificate it refused). Routine on a port open to the internet,
 * where scanners do this all day: the SMTP servers log these at info, and anything else (EMFILE, a
 * defect) at warn, so that a warning is worth reading.
 */
const PEER_CODES = new Set(['ECONNRESET', 'EPIPE', 'ETIMEDOUT', 'ECONNABORTED', 'ECONNREFUSED', 'EHOSTUNREACH']);

export function isPeerError(err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === 'string' && (PEER_CODES.has(code) || code.startsWith('ERR_SSL_') || code.startsWith('ERR_TLS_'));
}
