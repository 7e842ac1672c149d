import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { freePort, startRedis, type TestRedis } from '../helpers/redis.js';
import { ensurePostfix, startPostfix, type PrivatePostfix } from '../helpers/postfix.js';
import { startSluiceFixture, type SluiceFixture } from '../helpers/sluice.js';
import { GLOBAL_LIST, suppressionOf } from '../../src/store/suppression.js';
import { loadFeedback } from '../../src/feedback/raw-store.js';
import { classifyMessage } from '../../src/bounces/index.js';

/**
 * Interoperability with a real MTA: Debian's Postfix as the receiving MX on loopback.
 *
 *   Sluice ──SMTP──► Postfix (127.0.0.1:<free>)  250 queued: it accepts for pfx.test …
 *                      │ local(8): no such user ─► bounce(8) writes a real RFC 3464 DSN
 *                      └──SMTP (transport map: bounce.test) ──► Sluice inbound MX
 *                                                  classify ─► suppress globally ─► next send 'suppressed'
 *
 * Nothing here imitates Postfix: the DSN is whatever Postfix's bounce daemon writes. The instance
 * is private (own config, queue and data directories under a temp folder, its own log file), so it
 * neither touches nor needs the system's Postfix, and it can send mail nowhere but to Sluice.
 * Postfix's master must start as root (it drops to the `postfix` user); CI runs as root. If Postfix
 * is missing it is installed with apt-get; only if that is impossible is the test skipped.
 */
const test = suite('feedback/postfix');

const BOUNCE_DOMAIN = 'bounce.test';
const PFX_DOMAIN = 'pfx.test';
/**
 * An address Postfix accepts at RCPT (the domain is its own and it does not check local users at
 * the door) but cannot deliver: no such Unix account and no alias table. Not "nobody": that account
 * exists on Debian, and local(8) would happily deliver to /var/mail/nobody.
 */
const UNKNOWN = `no-such-user@${PFX_DOMAIN}`;
/** Postfix answers within a second on loopback; 20 s absorbs a loaded shared machine. */
const DSN_TIMEOUT_MS = 20_000;

const available = await ensurePostfix();
let redis: TestRedis | undefined;
let s: SluiceFixture | undefined;
let postfix: PrivatePostfix | undefined;
/** uvu drops an error thrown by a `before` hook without a word: keep it and fail the test with it. */
let setupError: unknown;

test.before(async () => {
  if (!available.ok) return;
  try {
    redis = await startRedis();
    const postfixPort = await freePort();
    s = await startSluiceFixture(redis, {
      roles: ['ingress', 'delivery', 'feedback'],
      feedback: { host: '127.0.0.1', port: 0 },
      delivery: { bounceDomain: BOUNCE_DOMAIN, transport: { [PFX_DOMAIN]: `127.0.0.1:${postfixPort}` } },
    });
    postfix = await startPostfix({ port: postfixPort, domain: PFX_DOMAIN, routes: { [BOUNCE_DOMAIN]: `127.0.0.1:${s.app.ports.feedback as number}` } });
  } catch (err) {
    setupError = err;
  }
});

test.after(async () => {
  await postfix?.stop();
  await s?.stop();
  await redis?.stop();
});

/** Sessions Postfix's smtpd accepted mail in (one "client=" line per queued message) in `log`. */
function postfixIntake(log = postfix!.log()): number {
  return (log.match(/postfix\/smtpd\[\d+\]: [0-9A-F]+: client=/g) ?? []).length;
}

/**
 * Postfix's log once `done` holds of it, or after 10 s (the caller asserts): its daemons log through
 * postlogd(8), which writes the file a moment after the event, so a line may lag what Sluice saw.
 */
async function logUntil(done: (log: string) => boolean): Promise<string> {
  const deadline = Date.now() + 10_000;
  let log = postfix!.log();
  while (!done(log) && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 50));
    log = postfix!.log();
  }
  return log;
}

const postfixTest = available.ok ? test : test.skip;
if (!available.ok) console.log(`SKIP feedback/postfix: ${available.why}`);

postfixTest('Postfix accepts, bounces with its own DSN to the VERP address; Sluice classifies it and suppresses the recipient', async () => {
  if (setupError) throw setupError;
  const fx = s!;
  const first = await fx.api('/v1/messages', { body: { from: 'news@acme.example', to: UNKNOWN, subject: 'hello', text: 'x' } });
  assert.is(first.status, 202, JSON.stringify(first.body));
  const final = await fx.waitFinal(first.body.id);
  assert.is(final.recipients[0].state, 'delivered', 'Postfix answered 250 to the message');
  const intake = await logUntil((log) => postfixIntake(log) > 0);
  assert.is(postfixIntake(intake), 1, intake);

  let entry = null;
  for (const deadline = Date.now() + DSN_TIMEOUT_MS; !entry && Date.now() < deadline;) {
    entry = await suppressionOf(fx.app.redis.client, fx.app.keys, 'acme', UNKNOWN);
    if (!entry) await new Promise((r) => setTimeout(r, 100));
  }
  assert.ok(entry, `not suppressed; postfix log:\n${postfix!.log()}`);
  assert.is(entry!.list, GLOBAL_LIST, 'an unknown user goes on the global list');
  assert.is(entry!.reason, 'hardbounce');
  assert.is(entry!.evidence['status'], '5.1.1');

  // The evidence leads to the stored mail: Postfix's own DSN, as its bounce daemon wrote it.
  const stored = await loadFeedback(fx.app.redis.client, fx.app.keys, String(entry!.evidence['feedbackId']));
  assert.ok(stored, 'the DSN is kept raw');
  assert.is(stored!.mailFrom, '', 'a DSN has the null return path');
  assert.is(stored!.rcpts.length, 1);
  assert.match(stored!.rcpts[0]!, new RegExp(`^b-[0-9a-z]+-0-[0-9a-z]{8}@${BOUNCE_DOMAIN.replace('.', '\\.')}$`), 'sent to the VERP address');
  const raw = stored!.raw.toString('latin1');
  assert.match(raw, /report-type=delivery-status/);
  assert.match(raw, new RegExp(`Reporting-MTA: dns; mx\\.${PFX_DOMAIN.replace('.', '\\.')}`));
  assert.match(raw, /X-Postfix-Queue-ID: [0-9A-F]+/);
  assert.match(await logUntil((log) => /sender non-delivery notification/.test(log)), /sender non-delivery notification/);

  const records = await classifyMessage(stored!.raw);
  assert.is(records.length, 1, JSON.stringify(records));
  assert.is(records[0]!.recipient, UNKNOWN);
  assert.is(records[0]!.reason, 'userunknown');
  assert.is(records[0]!.status, '5.1.1');
  assert.is(records[0]!.hardbounce, true);

  // The next message to the address is dropped before it costs anything: Postfix never sees it.
  const second = await fx.api('/v1/messages', { body: { from: 'news@acme.example', to: UNKNOWN, subject: 'again', text: 'x' } });
  const again = await fx.waitFinal(second.body.id);
  assert.is(again.recipients[0].state, 'suppressed');
  assert.is(postfixIntake(), 1, 'no second message reached Postfix');
});

test.run();
