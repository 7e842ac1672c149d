/**
 * One error type for the whole program. Every failure that crosses a boundary carries a `code` from
 * the closed union below; the table maps each code to its text, its HTTP status and its SMTP reply.
 * Errors are converted once, at the edge (HTTP handler, SMTP callback, CLI).
 */

export interface ErrorSpec {
  readonly message: string;
  readonly http: number;
  /** SMTP reply code and enhanced status code (RFC 3463). */
  readonly smtp: readonly [number, string];
}

export const ERRORS = {
  SLUICE_INTERNAL: { message: 'Internal error', http: 500, smtp: [451, '4.3.0'] },
  SLUICE_CONFIG_INVALID: { message: 'Configuration is invalid', http: 500, smtp: [451, '4.3.5'] },
  SLUICE_REDIS_UNAVAILABLE: { message: 'Storage is unavailable, try again later', http: 503, smtp: [451, '4.3.0'] },
  SLUICE_REDIS_VERSION: { message: 'Redis server is too old (need 6.2 or newer)', http: 500, smtp: [451, '4.3.5'] },
  SLUICE_REDIS_NOT_INSTALLED: { message: 'redis-server was not found on PATH', http: 500, smtp: [451, '4.3.5'] },
  SLUICE_SHUTTING_DOWN: { message: 'Server is shutting down, try again later', http: 503, smtp: [421, '4.3.2'] },

  SLUICE_AUTH_REQUIRED: { message: 'Authentication required', http: 401, smtp: [530, '5.7.0'] },
  SLUICE_AUTH_FAILED: { message: 'Invalid credentials', http: 401, smtp: [535, '5.7.8'] },
  SLUICE_AUTH_THROTTLED: { message: 'Too many failed authentication attempts, try again later', http: 429, smtp: [454, '4.7.0'] },
  SLUICE_INGRESS_BUSY: { message: 'Too much mail is being received at once, try again later', http: 503, smtp: [452, '4.3.1'] },
  SLUICE_TOO_MANY_CONNECTIONS: { message: 'Too many connections from your address, try again later', http: 503, smtp: [421, '4.7.0'] },
  // SMTP only (the submission server and the feedback MX); the HTTP status is never sent.
  SLUICE_SMTP_PARAM_UNSUPPORTED: { message: 'A MAIL FROM or RCPT TO parameter is not supported here', http: 400, smtp: [555, '5.5.4'] },
  SLUICE_SMTP_PARAM_INVALID: { message: 'A MAIL FROM or RCPT TO parameter is malformed', http: 400, smtp: [501, '5.5.4'] },
  SLUICE_SMTP_UTF8_REQUIRED: { message: 'A non-ASCII address needs the SMTPUTF8 parameter on MAIL FROM', http: 400, smtp: [553, '5.6.7'] },

  SLUICE_INGRESS_BAD_REQUEST: { message: 'The request is invalid', http: 400, smtp: [501, '5.5.4'] },
  SLUICE_INGRESS_BAD_JSON: { message: 'The request body is not valid JSON', http: 400, smtp: [501, '5.5.4'] },
  SLUICE_INGRESS_BAD_ADDRESS: { message: 'The address is not valid', http: 400, smtp: [553, '5.1.3'] },
  SLUICE_INGRESS_BAD_MESSAGE: { message: 'The message is malformed', http: 400, smtp: [554, '5.6.0'] },
  SLUICE_INGRESS_FROM_NOT_OWNED: { message: 'The From domain is not owned by this account', http: 403, smtp: [550, '5.7.1'] },
  SLUICE_INGRESS_TOO_LARGE: { message: 'The message exceeds the size limit', http: 413, smtp: [552, '5.3.4'] },
  SLUICE_INGRESS_TOO_MANY_RECIPIENTS: { message: 'Too many recipients', http: 400, smtp: [452, '4.5.3'] },
  SLUICE_INGRESS_NO_RECIPIENTS: { message: 'The message has no recipients', http: 400, smtp: [554, '5.5.1'] },
  SLUICE_INGRESS_QUOTA_EXCEEDED: { message: 'Daily sending quota exceeded', http: 429, smtp: [452, '4.5.3'] },
  SLUICE_INGRESS_RATE_LIMITED: { message: 'Sending rate limit exceeded, slow down', http: 429, smtp: [451, '4.7.1'] },
  SLUICE_INGRESS_IDEMPOTENCY_CONFLICT: { message: 'A request with this Idempotency-Key is still in progress', http: 409, smtp: [451, '4.3.0'] },
  SLUICE_INGRESS_IDEMPOTENCY_MISMATCH: { message: 'This Idempotency-Key was already used with a different request', http: 422, smtp: [554, '5.5.4'] },
  SLUICE_INGRESS_NOT_FOUND: { message: 'Not found', http: 404, smtp: [550, '5.1.1'] },
  SLUICE_INGRESS_METHOD_NOT_ALLOWED: { message: 'Method not allowed', http: 405, smtp: [502, '5.5.1'] },
  SLUICE_INGRESS_UNSUPPORTED_MEDIA: { message: 'Content-Type must be application/json', http: 415, smtp: [554, '5.6.0'] },

  SLUICE_TEMPLATE_INVALID: { message: 'The campaign template is invalid', http: 400, smtp: [554, '5.6.0'] },
  SLUICE_RENDER_FAILED: { message: 'The message could not be rendered', http: 500, smtp: [554, '5.6.0'] },
  SLUICE_DKIM_KEY_INVALID: { message: 'The DKIM key cannot be loaded', http: 500, smtp: [451, '4.7.5'] },
  SLUICE_DELIVERY_CONNECT_FAILED: { message: 'No SMTP session could be opened with the remote host', http: 502, smtp: [451, '4.4.1'] },
  SLUICE_FEEDBACK_NO_SUCH_RECIPIENT: { message: 'No such recipient here: this server accepts only bounces and feedback', http: 404, smtp: [550, '5.1.1'] },
  SLUICE_FEEDBACK_TOO_LARGE: { message: 'The message exceeds the size limit for bounces and feedback', http: 413, smtp: [552, '5.3.4'] },
  SLUICE_FEEDBACK_GUESSING: { message: 'Too many unknown recipients on this connection', http: 429, smtp: [421, '4.7.0'] },
  SLUICE_FEEDBACK_BUSY: { message: 'Too much feedback mail in progress, try again later', http: 503, smtp: [452, '4.3.1'] },
  SLUICE_FEEDBACK_STORAGE_FULL: { message: 'Too much feedback mail stored, try again later', http: 507, smtp: [452, '4.3.1'] },
  SLUICE_ACCOUNT_CLOSED: { message: 'The account is closed: it cannot send', http: 403, smtp: [554, '5.7.1'] },
  SLUICE_ACCOUNT_UNKNOWN: { message: 'No such account in the configuration', http: 404, smtp: [550, '5.7.1'] },
  SLUICE_ADMIN_ACCOUNT_REQUIRED: { message: 'An operator key must name the account it acts on: add ?account=ID', http: 400, smtp: [501, '5.5.4'] },
  SLUICE_ADMIN_REQUIRED: { message: 'This route needs an operator key', http: 403, smtp: [550, '5.7.1'] },
  SLUICE_SENDER_PAUSED_BY_OPERATOR: { message: 'An operator paused this sender: only an operator resumes it', http: 403, smtp: [550, '5.7.1'] },
  SLUICE_LIST_NOT_FOUND: { message: 'No such contact list', http: 404, smtp: [550, '5.1.1'] },
  SLUICE_LIST_IMPORT_TOO_LARGE: { message: 'The import exceeds the size or row limit', http: 413, smtp: [552, '5.3.4'] },
  SLUICE_LIST_IMPORT_BAD_FORMAT: { message: 'The import cannot be read as CSV or NDJSON', http: 400, smtp: [554, '5.6.0'] },
  SLUICE_CAMPAIGN_STATE: { message: "The campaign's state does not allow this", http: 409, smtp: [550, '5.5.1'] },
  SLUICE_LIST_IN_USE: { message: 'Campaigns that have not queued the list yet use it: cancel them first', http: 409, smtp: [550, '5.5.1'] },
  SLUICE_LIST_CONTACT_SUPPRESSED: { message: 'The address is suppressed: remove the suppression before subscribing it again', http: 409, smtp: [550, '5.7.1'] },
  SLUICE_SUPPRESSION_GLOBAL_READ_ONLY: { message: 'The address is on the global suppression list (it does not exist), which accounts cannot change', http: 403, smtp: [550, '5.7.1'] },
} as const satisfies Record<string, ErrorSpec>;

export type ErrorCode = keyof typeof ERRORS;

export interface FieldError {
  /** Dotted path of the offending field, e.g. `to.2` or `attachments.0.content`. */
  readonly path: string;
  readonly message: string;
  /** Templates: where in the field's text the problem is (1-based line and column). */
  readonly line?: number;
  readonly column?: number;
}

export class SluiceError extends Error {
  readonly code: ErrorCode;
  readonly errors: readonly FieldError[];
  override readonly cause?: unknown;

  constructor(code: ErrorCode, message?: string, opts: { cause?: unknown; errors?: readonly FieldError[] } = {}) {
    super(message ?? ERRORS[code].message);
    this.name = 'SluiceError';
    this.code = code;
    this.errors = opts.errors ?? [];
    if (opts.cause !== undefined) this.cause = opts.cause;
  }

  get http(): number {
    return ERRORS[this.code].http;
  }

  get smtp(): readonly [number, string] {
    return ERRORS[this.code].smtp;
  }

  /** JSON body for an HTTP answer: `{ code, message, errors[] }`. */
  toJSON(): { code: ErrorCode; message: string; errors: readonly FieldError[] } {
    return { code: this.code, message: this.message, errors: this.errors };
  }
}

/** Anything thrown that is not a SluiceError becomes SLUICE_INTERNAL (its cause is kept for the log). */
export function toSluiceError(err: unknown): SluiceError {
  if (err instanceof SluiceError) return err;
  return new SluiceError('SLUICE_INTERNAL', undefined, { cause: err });
}

export function isSluiceError(err: unknown, code?: ErrorCode): err is SluiceError {
  return err instanceof SluiceError && (code === undefined || err.code === code);
}
