import { pino, type Logger, type LoggerOptions, type DestinationStream } from 'pino';

/**
 * The root logger is made once by app/. Children carry a fixed set of binding keys:
 * role, sessionId, msgId, domain (a destination domain is needed to operate; recipients never are).
 * Secrets are redacted wherever they might appear.
 */
export const REDACT_PATHS = [
  'password', '*.password', 'pass', '*.pass', 'apiKey', '*.apiKey', 'authorization', '*.authorization',
  'req.headers.authorization', 'headers.authorization', 'secret', '*.secret', 'auth.password', 'auth.pass',
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
