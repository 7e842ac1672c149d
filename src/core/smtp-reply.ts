import { toSluiceError } from './errors.js';

/** What smtp-server sends for an error passed to a handler callback: `responseCode` and the text. */
export interface SmtpReplyError extends Error {
  responseCode: number;
}

/**
 * The reply for a refusal: "<enhanced> <text> [<session>]", the SMTP code from the error table on the
 * side, the session id echoed so an operator can find the log lines. An internal error never shows
 * its message to the client.
 */
export function smtpReply(err: unknown, sessionId: string): SmtpReplyError {
  const e = toSluiceError(err);
  const [code, enhanced] = e.smtp;
  const text = e.code === 'SLUICE_INTERNAL' ? 'Internal error, try again later' : e.message;
  const out = new Error(`${enhanced} ${text.replace(/[\r\n]+/g, ' ')} [${sessionId}]`) as SmtpReplyError;
  out.responseCode = code;
  return out;
}
