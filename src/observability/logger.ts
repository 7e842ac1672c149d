import { pino, type Logger, type LoggerOptions, type DestinationStream } from 'pino';

/**
 * The root logger is made once by app/. Children carry a fixed set of binding keys:
 * role, sessionId, msgId, domain (a destination domain is needed to operate; recipients never are).
 * Secrets are redacted wherever they might appear.
 */
export const REDACT_PATHS = [
  // credentials as clients send them
  'password', '*.password', 'pass', '*.pass', 'auth.password', 'auth.pass', 'apiKey', '*.apiKey',
  'authorization', '*.authorization', 'req.headers.authorization', 'headers.authorization', 'headers.cookie',
  // stored secrets and key material: webhook signing secrets, token (HMAC) keys, the VERP key
  'secret', '*.secret', 'secretKey', '*.secretKey', 'webhookSecretKey', '*.webhookSecretKey', 'verpKey', '*.verpKey',
  'token', '*.token', 'apiKeys', '*.apiKeys', 'passwordHash', '*.passwordHash', 'privateKeyPem', '*.privateKeyPem',
];

export function createLogger(level: string, destination?: DestinationStream): Logger {
  const opts: LoggerOptions = {
    level,
    base: { pid: process.pid },
    redact: { paths: REDACT_PATHS, censor: '[redacted]' },
    timestamp: pino.stdTimeFunctions.isoTime,
    formatters: { level: (label) => ({ level: label }) },
  };
  return destination ? pino(opts, destination) : pino(opts);
}

export type { Logger };
