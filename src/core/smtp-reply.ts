import type { SMTPServer } from 'smtp-server';
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

/** A reply text that starts with its own enhanced status code (RFC 3463), as smtpReply's do. */
const OWN_ENHANCED = /^[245]\.\d{1,3}\.\d{1,3} /;

/**
 * Gives every reply of `server` an enhanced status code, for a server created with
 * hideENHANCEDSTATUSCODES: false (so that EHLO advertises ENHANCEDSTATUSCODES, RFC 2034). smtp-server
 * derives the code from the reply code and the command (250 2.1.5 after RCPT, 501 5.5.4, 503 5.5.1,
 * 552 5.3.4 for SIZE= over the limit), which is right for its own replies but not for Sluice's
 * refusals (550 would read 5.1.1 for a From not owned, 5.7.1): a text that carries its own code
 * (smtpReply, the 250 after DATA, the guard's 421s) is sent as it is, without a second one.
 */
export function keepOwnEnhancedCodes(server: SMTPServer): void {
  // smtp-server has no hook for this: it rests on SMTPServer.connections (a Set every connection
  // joins before its first reply) and SMTPConnection.send(code, data, context). A version without
  // the Set fails here, at start-up; one whose send() changed shows in the tests' exact reply texts.
  const connections = (server as { connections?: unknown }).connections;
  if (!(connections instanceof Set)) throw new Error('smtp-server: SMTPServer.connections is not a Set; keepOwnEnhancedCodes needs updating');
  const add = connections.add.bind(connections);
  connections.add = (conn: Parameters<typeof server.connections.add>[0]) => {
    // Never throw here: this runs in the listening socket's 'connection' event.
    if (typeof conn?.send === 'function') {
      const send = conn.send.bind(conn);
      conn.send = (code, data, context) => send(code, data, typeof data === 'string' && OWN_ENHANCED.test(data) ? false : context);
    }
    return add(conn);
  };
}
