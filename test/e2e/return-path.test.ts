/**
 * A sending domain's own return path (accounts[].domains[].returnPath) through `sluice start`: its
 * mail goes out with MAIL FROM <b-…@bounces.brand.example> (SPF then aligns for DMARC), other
 * domains' with delivery.bounceDomain; a real MTA's bounce to that address is taken by the feedback
 * MX and acted on; a reload that gives acme a return path applies to its next mail and to the MX at
 * once; one outside the sending domain is refused, naming it.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { createTransport } from 'nodemailer';
import { request } from 'undici';
import { startRedis, type TestRedis } from '../helpers/redis.js';
import { startCapturePeer, type CapturePeer } from '../helpers/smtp-peer.js';
import { makeAccount, startSluiceFixture, type SluiceFixture } from '../helpers/sluice.js';
import { CORPUS_EMAILS } from '../helpers/corpus.js';
import { suppressionOf } from '../../src/store/suppression.js';

const test = suite('e2e/return-path');
let redis: TestRedis;
let sink: CapturePeer;
let s: SluiceFixture;
let dir: string;
let brandKey = '';

test.before(async () => {
  redis = await startRedis();
  sink = await startCapturePeer();
  dir = mkdtempSync(join(tmpdir(), 'sluice-return-path-'));
  const brand = await makeAccount(dir, 'brand', 'brand.example', ['ed25519']);
  brandKey = brand.apiKey;
  const domains = brand.account['domains'] as Record<string, unknown>[];
  brand.account['domains'] = [{ ...domains[0], returnPath: 'Bounces.Brand.Example' }];
  s = await startSluiceFixture(redis, {
    roles: ['ingress', 'delivery', 'feedback'],
    feedback: { host: '127.0.0.1', port: 0 },
    delivery: { transport: { 'one.test': `${sink.host}:${sink.port}` } },
  }, { extraAccounts: [brand.account] });
});

test.after(async () => {
  await s?.stop();
  await sink?.close();
  await redis?.stop();
  rmSync(dir, { recursive: true, force: true });
});

async function send(key: string, from: string, to: string): Promise<string> {
  const res = await request(`http://127.0.0.1:${s.app.ports.http}/v1/messages`, {
    method: 'POST', headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
    body: JSON.stringify({ from, to, subject: 'hello', text: 'x' }),
  });
  const body = (await res.body.json()) as { id: string };
  assert.is(res.statusCode, 202, JSON.stringify(body));
  // Delivered (read with the sender's own key: another account's message is a 404).
  for (let i = 0; i < 300; i++) {
    const st = await request(`http://127.0.0.1:${s.app.ports.http}/v1/messages/${body.id}`, { headers: { authorization: `Bearer ${key}` } });
    const status = (await st.body.json()) as { recipients?: { state: string }[] };
    if (status.recipients?.every((r) => r.state === 'delivered')) return body.id;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`message ${body.id} was not delivered`);
}

const envelopeOf = (to: string): string => sink.messages.filter((m) => m.envelope.to[0] === to).at(-1)?.envelope.from ?? '';

/** A real Courier bounce (5.1.1 user unknown) sent to `verp` at the feedback MX. */
async function bounceTo(verp: string): Promise<void> {
  const t = createTransport({ host: '127.0.0.1', port: s.app.ports.feedback, secure: false, ignoreTLS: true });
  try {
    await t.sendMail({ envelope: { from: '', to: [verp] }, raw: readFileSync(new URL('lhost-courier-01.eml', CORPUS_EMAILS)) });
  } finally {
    t.close();
  }
}

async function suppressedSoon(account: string, address: string): Promise<string | null> {
  for (let i = 0; i < 200; i++) {
    const entry = await suppressionOf(s.app.redis.client, s.app.keys, account, address);
    if (entry) return entry.reason;
    await new Promise((r) => setTimeout(r, 25));
  }
  return null;
}

test("a domain's mail goes out with its own return path, and a bounce to it is acted on; another domain's keeps the bounce domain", async () => {
  const id = await send(brandKey, 'news@brand.example', 'ann@one.test');
  const verp = envelopeOf('ann@one.test');
  assert.match(verp, new RegExp(`^b-${id}-0-[0-9a-z]{8}@bounces\\.brand\\.example$`));
  await send(s.apiKey, 'news@acme.example', 'bob@one.test');
  assert.match(envelopeOf('bob@one.test'), /@bounce\.localhost$/, 'delivery.bounceDomain');

  await bounceTo(verp);
  assert.is(await suppressedSoon('brand', 'ann@one.test'), 'hardbounce', 'the MX took the bounce at the return path and suppressed the recipient');
});

test('a reload that gives a domain a return path applies to its next mail and to the feedback MX; one outside the domain is refused', async () => {
  const acme = s.account as { domains: Record<string, unknown>[] };
  const withReturnPath = (returnPath: string) => ({ accounts: [{ ...acme, domains: [{ ...acme.domains[0], returnPath }] }, s.config.accounts.find((a) => a.id === 'brand')] });
  await s.reloadWith(withReturnPath('rp.acme.example'));
  await send(s.apiKey, 'news@acme.example', 'cy@one.test');
  const verp = envelopeOf('cy@one.test');
  assert.match(verp, /@rp\.acme\.example$/);
  await bounceTo(verp);
  assert.is(await suppressedSoon('acme', 'cy@one.test'), 'hardbounce');

  const refused = await s.reloadWith(withReturnPath('bounces.elsewhere.example')).then(() => null, (err: Error) => err.message);
  assert.match(refused ?? '', 'returnPath bounces.elsewhere.example of acme.example must be a subdomain of it');
  await send(s.apiKey, 'news@acme.example', 'dee@one.test');
  assert.match(envelopeOf('dee@one.test'), /@rp\.acme\.example$/, 'the configuration in force is kept');
});

test.run();
