/**
 * classifySmtpReply: synchronous SMTP answers seen during delivery → reason, hard/soft, status.
 */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { classifySmtpReply } from '../../src/bounces/index.js';

const test = suite('bounces/smtp-reply');

const TABLE: readonly [number | null, string | null, string, string, boolean, string][] = [
  // code, enhanced, text → reason, hard, status
  [550, '5.1.1', "The email account that you tried to reach does not exist.", 'userunknown', true, '5.1.1'],
  [550, null, '5.1.1 <x@example.org>: Recipient address rejected: User unknown in local recipient table', 'userunknown', true, '5.1.1'],
  [552, '5.2.2', 'Mailbox full', 'mailboxfull', false, '5.2.2'],
  [452, '4.2.2', 'The email account that you tried to reach is over quota.', 'mailboxfull', false, '4.2.2'],
  [550, '5.1.2', 'Host unknown', 'hostunknown', true, '5.1.2'],
  [556, '5.1.10', 'Recipient address has null MX', 'notaccept', true, '5.1.10'],
  [554, '5.7.1', 'Service unavailable; Client host [192.0.2.1] blocked using zen.spamhaus.org', 'blocked', false, '5.7.1'],
  [550, '5.7.1', 'Message rejected as spam by Content Filtering.', 'spamdetected', false, '5.7.1'],
  [550, '5.7.26', 'Unauthenticated email from example.com is not accepted due to domain\'s DMARC policy.', 'authfailure', false, '5.7.26'],
  [421, '4.7.0', 'Try again later, closing connection. (EHLO) too many connections', 'toomanyconn', false, '4.7.0'],
  [451, '4.7.1', 'Client host rejected: Please try again slower', 'speeding', false, '4.7.1'],
  [552, '5.3.4', 'Message size exceeds fixed maximum message size', 'mesgtoobig', false, '5.3.4'],
  [550, '5.7.25', 'The IP address sending this message does not have a PTR record setup', 'requireptr', false, '5.7.25'],
  [554, '5.7.1', 'Relay access denied', 'norelaying', false, '5.7.1'],
  [550, null, 'Mailbox disabled, not accepting messages', 'suspend', false, '5.0.921'],
  [451, null, 'Temporary local problem - please try later', 'systemerror', false, '4.0.930'],
  [250, '2.0.0', 'OK queued as 12345', 'delivered', false, '2.0.0'],
  // A 4xx is never hard, even when the words say the user is unknown.
  [450, '4.1.1', 'Recipient address rejected: User unknown in virtual alias table', 'userunknown', false, '4.1.1'],
];

for (const [code, enhanced, text, reason, hard, status] of TABLE) {
  test(`${code} ${enhanced ?? '-'} "${text.slice(0, 50)}" → ${reason}/${hard ? 'hard' : 'soft'}`, () => {
    const got = classifySmtpReply(code, enhanced, text);
    assert.equal(got, { reason, hardbounce: hard, status });
  });
}

test('no code and no text still gives an answer without throwing', () => {
  const got = classifySmtpReply(null, null, '');
  assert.type(got.reason, 'string');
  assert.is(got.hardbounce, false);
});

test('an enhanced code whose class contradicts the reply code follows the reply code', () => {
  assert.is(classifySmtpReply(450, '5.2.2', 'mailbox full').status, '4.2.2');
});

test.run();
