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

/** A serialized error's own fields that hold a command (ioredis puts { name, args } on a ReplyError). */
type Serialized = Record<string, unknown> & { command?: unknown; previousErrors?: unknown };

/**
 * pino's error serializer, without the arguments of the Redis commands an error carries: ioredis
 * puts the failed command's on a ReplyError (`command.args`), and on an EXECABORT those of every
 * command of the transaction (`previousErrors`). Those are a message's recipients and its whole
 * body: a Redis refusing writes (maxmemory, MISCONF) made each submission's error line hold the
 * message, 25 MB as a JSON array of bytes. The command's name and Redis's answer are kept.
 */
function serializeError(err: unknown): unknown {
  const out = pino.stdSerializers.err(err as Error) as unknown;
  if (typeof out !== 'object' || out === null) return out;
  const e = out as Serialized;
  const nameOnly = (command: unknown): unknown =>
    typeof command === 'object' && command !== null && 'args' in command ? { name: (command as { name?: unknown }).name } : command;
  if (e.command !== undefined) e.command = nameOnly(e.command);
  if (Array.isArray(e.previousErrors)) {
    e.previousErrors = e.previousErrors.map((p: unknown) => {
      const prev = p as { message?: unknown; command?: unknown } | null;
      return { message: prev?.message, command: nameOnly(prev?.command) };
    });
  }
  return e;
}

/** An address in free text: the local part goes, the domain (needed to operate) stays. */
const ADDRESS_IN_TEXT = /[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@([A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+)/g;

/**
 * A remote server's answer as logged (`response`, `reason`, `error` when text): servers quote the
 * recipient ("550 5.1.1 <bob@example.com>: user unknown"), and a log line outlives an erasure of the
 * address (store/privacy.ts), so the local part is masked: "550 5.1.1 <*@example.com>: …".
 */
export function maskAddresses(value: unknown): unknown {
  return typeof value === 'string' && value.includes('@') ? value.replace(ADDRESS_IN_TEXT, '*@$1') : value;
}

export function createLogger(level: string, destination?: DestinationStream): Logger {
  const opts: LoggerOptions = {
    level,
    base: { pid: process.pid },
    redact: { paths: REDACT_PATHS, censor: '[redacted]' },
    serializers: { err: serializeError, response: maskAddresses, reason: maskAddresses, error: maskAddresses },
    timestamp: pino.stdTimeFunctions.isoTime,
    formatters: { level: (label) => ({ level: label }) },
  };
  return destination ? pino(opts, destination) : pino(opts);
}

export type { Logger };
