/**
 * What a notice means for its recipient, on mail that looked like something else: delay warnings
 * in words (no machine-readable report), out-of-office replies that quote a failure's subject, and a
 * provider's "address couldn't be found" said of the envelope sender. Each of these used to suppress
 * a good address after a few mails.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { classifyMessage } from '../../src/bounces/index.js';
import { verdictOf } from '../../src/bounces/verdict.js';
import { CORPUS_DIR } from './corpus-eval.js';

const test = suite('bounces/verdicts');
const corpus = (name: string) => readFileSync(join(CORPUS_DIR, 'emails', name));
const verdicts = async (raw: Buffer | string) => (await classifyMessage(Buffer.from(raw))).map((r) => [r.recipient, verdictOf(r)]);

test('a Postfix delay warning whose report part was lost (plain text) is a delay, not a bounce', async () => {
  assert.equal(await verdicts(corpus('rfc3464-34.eml')), [['kijitora@example.com', 'delayed']]);
});

test('delay warnings in words from Exim and Sendmail are delays; a failure in words stays a failure', async () => {
  const notice = (subject: string, body: string) =>
    `From: Mail Delivery System <MAILER-DAEMON@mx.example.net>\r\nTo: b-x@bounce.acme.example\r\nSubject: ${subject}\r\n\r\n${body}\r\n`;
  const exim = notice('Warning: message 1abc-000 delayed 24 hours', 'A message that you sent has not yet been delivered to one or more of its\r\nrecipients after more than 24 hours on the queue on mx.example.net.\r\n\r\n  ann@example.org\r\n    host mx.example.org [192.0.2.1]: 451 4.4.1 try later\r\n\r\nNo action is required on your part. Delivery attempts will continue for\r\nsome time, and this warning may be repeated at intervals.');
  const sendmail = notice('Warning: could not send message for past 4 hours', '    **********************************************\r\n    **      THIS IS A WARNING MESSAGE ONLY      **\r\n    **  YOU DO NOT NEED TO RESEND YOUR MESSAGE  **\r\n    **********************************************\r\n\r\nThe original message was received at Mon, 1 Jun 2026 10:00:00\r\n\r\n   ----- Transcript of session follows -----\r\n<ann@example.org>... Deferred: Connection timed out with mx.example.org.');
  const failure = notice('Mail delivery failed: returning message to sender', 'This message was created automatically by mail delivery software.\r\n\r\nA message that you sent could not be delivered to one or more of its\r\nrecipients. This is a permanent error. The following address(es) failed:\r\n\r\n  ann@example.org\r\n    host mx.example.org [192.0.2.1]: 550 5.1.1 <ann@example.org>: Recipient address rejected: User unknown');
  assert.equal(await verdicts(exim), [['ann@example.org', 'delayed']]);
  assert.equal(await verdicts(sendmail), [['ann@example.org', 'delayed']]);
  assert.equal(await verdicts(failure), [['ann@example.org', 'hard']]);
});

test('an out-of-office reply quoting a failure notice\'s subject is an auto-reply, not a bounce', async () => {
  for (const [subject, marks] of [
    ['Automatic reply: Your parcel could not be delivered', 'Auto-Submitted: auto-replied\r\nX-Auto-Response-Suppress: All\r\n'],
    ['Abwesenheitsnotiz: Paket nicht zustellbar', 'Auto-Submitted: auto-replied\r\n'],
  ] as const) {
    const reply = `From: Ann Person <ann@example.org>\r\nTo: b-x@bounce.acme.example\r\nSubject: ${subject}\r\n${marks}Content-Type: text/plain\r\n\r\nI am out of the office until Monday and will reply when I am back.\r\n`;
    assert.equal(await verdicts(reply), [['ann@example.org', 'autoreply']], subject);
  }
});

test('"address couldn\'t be found" said with 5.1.8 (the sender\'s address, RFC 3463) is the sender\'s problem', async () => {
  const recs = await classifyMessage(corpus('rhost-gsuite-11.eml'));
  assert.equal(recs.map((r) => [r.status, r.reason, verdictOf(r)]), [['5.1.8', 'rejected', 'sender']]);
});

test.run();
