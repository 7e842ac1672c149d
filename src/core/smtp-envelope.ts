import type { SMTPServerAddress } from 'smtp-server';
import { SluiceError } from './errors.js';
import { NON_ASCII } from './utf8.js';

/**
 * The MAIL FROM and RCPT TO parameters an inbound server takes, and the SMTPUTF8 rule for addresses.
 *
 * smtp-server checks the syntax of the parameters it knows (SIZE, BODY, SMTPUTF8 and, advertised or
 * not, REQUIRETLS and the DSN ones) and stores any other in `args` without a word, so the client is
 * answered 250 for a promise the server does not keep (NOTIFY=NEVER, REQUIRETLS). RFC 5321 §4.1.1.11:
 * a parameter of an extension the server did not advertise gets 555. Sluice advertises SIZE,
 * 8BITMIME and SMTPUTF8; on submission AUTH and DSN (RFC 3461: its failure notices go to the
 * envelope sender and honour NOTIFY, RET, ENVID and ORCPT), the feedback MX neither; no REQUIRETLS
 * (delivery does not hold a message to verified TLS).
 */

/** esmtp-keyword (RFC 5321 §4.1.2). */
const KEYWORD = /^[A-Z0-9][A-Z0-9-]*$/;

/** MAIL FROM parameters of the advertised extensions whose values smtp-server has checked. */
const MAIL_PARAMS = new Set(['SIZE', 'BODY', 'SMTPUTF8']);

export interface MailParamOptions {
  /** AUTH is advertised: MAIL FROM may carry AUTH=<mailbox> (RFC 4954 §5), taken and not used. */
  readonly auth: boolean;
  /** DSN is advertised (smtp-server's hideDSN: false, which checks RET's and NOTIFY's values). */
  readonly dsn: boolean;
}

/**
 * The longest ENVID and ORCPT (RFC 3461 §4.4: 100 characters; §4.2: 500), counted once decoded from
 * xtext: they are stored with the message and go into its notices.
 */
const MAX_ENVID = 100;
const MAX_ORCPT = 500;
/** A decoded ENVID or ORCPT: printable ASCII (RFC 3461 §4: xtext stands for US-ASCII). */
const PRINTABLE = /^[\x20-\x7e]+$/;

/** Refuses a parameter of an extension not advertised (555 5.5.4), or malformed (501 5.5.4). */
export function checkMailParams(from: SMTPServerAddress, opts: MailParamOptions): void {
  for (const [key, value] of Object.entries(from.args || {})) {
    if (MAIL_PARAMS.has(key) || (key === 'RET' && opts.dsn)) continue;
    if (key === 'AUTH' && opts.auth) {
      if (typeof value !== 'string' || value === '') throw new SluiceError('SLUICE_SMTP_PARAM_INVALID', 'The AUTH parameter needs a value: AUTH=<> or AUTH=mailbox');
      continue;
    }
    if (key === 'ENVID' && opts.dsn) {
      if (typeof value !== 'string' || value.length > MAX_ENVID || !PRINTABLE.test(value)) throw new SluiceError('SLUICE_SMTP_PARAM_INVALID', `The ENVID parameter must be 1 to ${MAX_ENVID} printable ASCII characters once decoded from xtext`);
      continue;
    }
    throw unsupported('MAIL FROM', key);
  }
}

/**
 * With DSN advertised, NOTIFY (its values checked by smtp-server) and ORCPT (addr-type;address,
 * its syntax checked by smtp-server); any other parameter, or these without DSN, gets 555 5.5.4.
 */
export function checkRcptParams(to: SMTPServerAddress, opts: { readonly dsn: boolean }): void {
  for (const [key, value] of Object.entries(to.args || {})) {
    if (key === 'NOTIFY' && opts.dsn) continue;
    if (key === 'ORCPT' && opts.dsn) {
      if (typeof value !== 'string' || value.length > MAX_ORCPT || !PRINTABLE.test(value)) throw new SluiceError('SLUICE_SMTP_PARAM_INVALID', `The ORCPT parameter must be 1 to ${MAX_ORCPT} printable ASCII characters once decoded from xtext`);
      continue;
    }
    throw unsupported('RCPT TO', key);
  }
}

function unsupported(command: string, key: string): SluiceError {
  // Echo the keyword only when it is one; anything else is a syntax error, not an unknown extension.
  if (!KEYWORD.test(key) || key.length > 32) return new SluiceError('SLUICE_SMTP_PARAM_INVALID', `Bad ${command} parameter syntax`);
  return new SluiceError('SLUICE_SMTP_PARAM_UNSUPPORTED', `The ${command} parameter ${key} is not supported here`);
}

/**
 * RFC 6531 §3.5: an address that is not ASCII needs SMTPUTF8 on the transaction's MAIL FROM, else
 * 553 5.6.7. Read from MAIL FROM's own parameters: smtp-server's session.envelope.smtpUtf8 stays set
 * from an earlier MAIL FROM it refused. Only the local part is looked at: smtp-server hands over the
 * domain in Unicode whether the client sent it so or as an A-label (xn--), which needs no SMTPUTF8;
 * Sluice routes on the A-label either way. Bytes that are not UTF-8 (U+FFFD once decoded) make no
 * UTF-8 address: the caller refuses those as it refuses any bad address.
 */
export function checkUtf8Address(address: SMTPServerAddress, mailFrom: SMTPServerAddress | false, command: 'MAIL FROM' | 'RCPT TO'): void {
  const at = address.address.lastIndexOf('@');
  const local = at === -1 ? address.address : address.address.slice(0, at);
  if (!NON_ASCII.test(local) || local.includes('\uFFFD')) return;
  if (mailFrom && mailFrom.args && mailFrom.args['SMTPUTF8'] === true) return;
  const whose = command === 'MAIL FROM' ? 'sender' : 'recipient';
  throw new SluiceError('SLUICE_SMTP_UTF8_REQUIRED', `The ${whose} address is not ASCII: MAIL FROM needs the SMTPUTF8 parameter`);
}
