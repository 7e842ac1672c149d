import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { connect } from 'node:net';
import { connect as tlsConnect } from 'node:tls';
import { join } from 'node:path';
import { createTransport } from 'nodemailer';
import { startCapturePeer, type CapturePeer } from '../helpers/smtp-peer.js';
import { makeAccount, startSluiceWithPeer, type PeerSluice, type SluiceFixture } from '../helpers/sluice.js';
import { placeHolds, releaseHolds } from '../../src/queue/holds.js';
import { makeKey, txtTable, verifyWithDkimpy, verifyWithMailauth } from '../helpers/dkim-verify.js';
import { generateApiKey, hashSecret } from '../../src/accounts/secrets.js';
import { isSluiceError } from '../../src/core/errors.js';
import { metricValue } from '../helpers/sluice-process.js';
import { readAudit } from '../../src/store/audit.js';

/**
 * A configuration reload (RunningSluice.reload, what `sluice start` does on SIGHUP) on a running
 * Sluice with a capture peer: accounts and operators take effect without a restart, key files are
 * read again, a wrong file changes nothing, and what only a restart applies is named.
 */
const test = suite('e2e/reload');
let run: PeerSluice;
let peer: CapturePeer;
let s: SluiceFixture;
/** acme as configured now, and its API key: the rotation test changes both. */
let acme: Record<string, unknown>;
let key: string;

test.before(async () => {
  run = await startSluiceWithPeer();
  ({ peer, s } = run);
  acme = s.account;
  key = s.apiKey;
});
test.after(async () => {
  await run?.stop();
});

const as = (key: string) => ({ authorization: `Bearer ${key}` });
const metric = async (name: string, labels: Record<string, string> = {}) => metricValue(await s.app.metrics.registry.metrics(), name, labels);
/** Another account's key files in a folder of their own (makeAccount names files by selector). */
const another = (id: string, algorithms: ('rsa' | 'ed25519')[]) => makeAccount(mkdtempSync(join(s.dir, `${id}-`)), id, `${id}.example`, algorithms);
/** Asserts that `run` rejects with an error `check` accepts. */
async function rejects(run: () => Promise<unknown>, check: (e: unknown) => boolean): Promise<void> {
  const err = await run().then(() => null, (e: unknown) => e ?? new Error('rejected without a reason'));
  assert.ok(err !== null, 'expected a rejection');
  assert.ok(check(err), String(err));
}
/** Signature verdicts as [algorithm, pass], sorted by algorithm. */
const byAlgo = (vs: { algo: string; pass: boolean }[]) => vs.map((v) => [v.algo, v.pass]).sort();

/** Waits until message `id` (of the account whose key is `apiKey`) is delivered; its copy at the peer. */
async function delivered(id: string, apiKey = key): Promise<Buffer> {
  const deadline = Date.now() + 15_000;
  let state: unknown;
  for (;;) {
    state = (await s.api(`/v1/messages/${id}`, { headers: as(apiKey) })).body?.recipients?.[0]?.state;
    if (state === 'delivered' || Date.now() > deadline) break;
    await new Promise((r) => setTimeout(r, 50));
  }
  assert.is(state, 'delivered', `message ${id}`);
  const m = peer.messages.find((x) => x.raw.toString('latin1').includes(id));
  assert.ok(m, `the peer has message ${id}`);
  return m.raw;
}

test("an account added by a reload sends at once, signed with its own DKIM key; the render threads are replaced and acme's mail is still signed", async () => {
  const beta = await another('beta', ['ed25519']);
  const before = await s.api('/v1/messages', { headers: as(beta.apiKey), body: { from: 'news@beta.example', to: 'r1@one.test', subject: 'before', text: 'x' } });
  assert.is(before.status, 401, 'not configured yet');

  const result = await s.reloadWith({ accounts: [acme, beta.account] });
  assert.equal(result.accounts, { added: ['beta'], removed: [], changed: [] });
  assert.is(result.dkimKeysReplaced, true);
  assert.equal(result.restartNeeded, []);
  assert.is(s.app.config.accounts.length, 2, 'the configuration in force has both');

  const sent = await s.api('/v1/messages', { headers: as(beta.apiKey), body: { from: 'news@beta.example', to: 'r2@one.test', subject: 'after', text: 'hello from beta' } });
  assert.is(sent.status, 202, JSON.stringify(sent.body));
  const raw = await delivered(sent.body.id as string, beta.apiKey);
  const table = txtTable(beta.dkimKeys);
  const [mailauth, [dkimpy]] = await Promise.all([verifyWithMailauth(raw, table), verifyWithDkimpy([raw], table)]);
  assert.equal(mailauth.map((v) => [v.domain, v.selector, v.pass]), [['beta.example', beta.dkimKeys[0]?.selector, true]], JSON.stringify(mailauth));
  assert.equal(dkimpy?.map((v) => [v.domain, v.pass]), [['beta.example', true]], JSON.stringify(dkimpy));

  // acme, whose keys did not change, is signed by the new threads with both of its keys.
  const own = await s.api('/v1/messages', { body: { from: 'a@acme.example', to: 'r3@one.test', subject: 'acme', text: 'x' } });
  assert.is(own.status, 202);
  const acmeRaw = await delivered(own.body.id as string);
  const verdicts = await verifyWithMailauth(acmeRaw, s.txt);
  assert.equal(verdicts.map((v) => v.pass), [true, true], JSON.stringify(verdicts));
  assert.is(await metric('sluice_config_reloads_total', { result: 'applied' }), 1);
  // The audit log: the reload, and the account it added.
  const audit = await readAudit(s.app.redis.client, s.app.keys, { limit: 10 });
  assert.equal(
    audit.map((e) => [e.actor, e.action, e.account, e.target, e.from]).sort(),
    [['reload', 'account.config', 'beta', 'added', 'sighup'], ['reload', 'config.reload', '', 'accounts,dkim', 'sighup']],
  );
});

test('a reload that changes no DKIM key keeps the render threads; a key rotated in place (same file name) replaces them', async () => {
  const fewer = await s.reloadWith({});
  assert.equal(fewer.accounts, { added: [], removed: ['beta'], changed: [] }, 'beta is gone: the patch has acme only');
  assert.is(fewer.dkimKeysReplaced, true, "beta's key is no longer loaded");
  const same = await s.reloadWith({});
  assert.is(same.dkimKeysReplaced, false);
  assert.equal(same.accounts, { added: [], removed: [], changed: [] });

  // acme's RSA key file gets a new key: the same selector, the same path, new bytes.
  const rsa = s.dkimKeys.find((k) => k.algorithm === 'rsa');
  assert.ok(rsa);
  const rotated = makeKey('acme.example', rsa.selector, 'rsa');
  writeFileSync(join(s.dir, `${rsa.selector}.pem`), rotated.privateKeyPem);
  const r = await s.reloadWith({});
  assert.is(r.dkimKeysReplaced, true);
  assert.equal(r.accounts.changed, [], 'the configuration did not change, the file did');
  const sent = await s.api('/v1/messages', { headers: as(key), body: { from: 'a@acme.example', to: 'r4@one.test', subject: 'rotated', text: 'x' } });
  const raw = await delivered(sent.body.id as string);
  const ed = s.dkimKeys.find((k) => k.algorithm === 'ed25519');
  assert.ok(ed);
  const newTable = txtTable([rotated, ed]);
  const verdicts = await verifyWithMailauth(raw, newTable);
  assert.equal(byAlgo(verdicts), [['ed25519-sha256', true], ['rsa-sha256', true]], JSON.stringify(verdicts));
  // Against the key published before the rotation, the RSA signature fails: it was made with the new one.
  const old = await verifyWithMailauth(raw, s.txt);
  assert.equal(byAlgo(old), [['ed25519-sha256', true], ['rsa-sha256', false]]);
  s.dkimKeys.splice(s.dkimKeys.indexOf(rsa), 1, rotated);
  Object.assign(s.txt, newTable);
});

test("rotated credentials: the old API key gets 401 and the new one 202; an SMTP login whose password changed is refused at its next MAIL FROM, the new password logs in", async () => {
  const transport = (pass: string) => createTransport({ host: '127.0.0.1', port: s.app.ports.smtp, secure: false, requireTLS: true, tls: { rejectUnauthorized: false }, auth: { user: 'acme', pass }, pool: true, maxMessages: 10 });
  const oldSmtp = transport(s.smtpUser.pass);
  // A session logged in before the reload, kept open by the pool.
  const first = await oldSmtp.sendMail({ from: 'a@acme.example', to: 'r5@one.test', subject: 'before rotation', text: 'x' });
  assert.match(first.response, /^250 /);

  const newKey = generateApiKey('acme');
  const newPass = 'acme-new-password';
  const account = { ...acme, apiKeys: [await hashSecret(newKey)], smtpUsers: [{ username: 'acme', passwordHash: await hashSecret(newPass) }] };
  const r = await s.reloadWith({ accounts: [account] });
  assert.equal(r.accounts.changed, ['acme']);
  assert.is(r.dkimKeysReplaced, false);

  assert.is((await s.api('/v1/messages', { headers: as(key), body: { from: 'a@acme.example', to: 'r6@one.test', subject: 'old key', text: 'x' } })).status, 401);
  const ok = await s.api('/v1/messages', { headers: as(newKey), body: { from: 'a@acme.example', to: 'r6@one.test', subject: 'new key', text: 'x' } });
  assert.is(ok.status, 202);

  const err = await oldSmtp.sendMail({ from: 'a@acme.example', to: 'r7@one.test', subject: 'same session', text: 'x' }).then(
    () => null,
    (e: { responseCode?: number }) => e,
  );
  assert.is(err?.responseCode, 530, 'the login of the old password is over');
  oldSmtp.close();
  const fresh = transport(newPass);
  const sent = await fresh.sendMail({ from: 'a@acme.example', to: 'r8@one.test', subject: 'new password', text: 'x' });
  assert.match(sent.response, /^250 /);
  fresh.close();
  const wrong = transport(s.smtpUser.pass);
  const refused = await wrong.sendMail({ from: 'a@acme.example', to: 'r9@one.test', subject: 'old password', text: 'x' }).then(
    () => null,
    (e: { responseCode?: number }) => e,
  );
  assert.is(refused?.responseCode, 535);
  wrong.close();
  acme = account;
  key = newKey;
  s.apiKey = newKey;
});

test('a refused reload changes nothing: a missing DKIM key file, then a file that does not validate', async () => {
  const gamma = await another('gamma', ['rsa']);
  const broken = { ...gamma.account, domains: [{ domain: 'gamma.example', dkim: [{ selector: 'x', algorithm: 'rsa', keyFile: join(s.dir, 'missing.pem') }] }] };
  const refusedBefore = (await metric('sluice_config_reloads_total', { result: 'refused' })) ?? 0;
  await rejects(() => s.reloadWith({ accounts: [acme, broken] }), (e: unknown) => isSluiceError(e, 'SLUICE_DKIM_KEY_INVALID') && /missing\.pem/.test((e as Error).message));
  assert.is(await metric('sluice_config_last_reload_successful'), 0);
  assert.is((await s.api('/v1/messages', { headers: as(gamma.apiKey), body: { from: 'a@gamma.example', to: 'r@one.test', subject: 'x', text: 'x' } })).status, 401, 'gamma was not added');
  assert.is(s.app.config.accounts.length, 1);

  await rejects(() => s.reloadWith({ accounts: [acme], delivery: { claimBatch: 'many' } }), (e: unknown) => isSluiceError(e, 'SLUICE_CONFIG_INVALID'));
  assert.is(await metric('sluice_config_reloads_total', { result: 'refused' }), refusedBefore + 2);
  const still = await s.api('/v1/messages', { headers: as(key), body: { from: 'a@acme.example', to: 'r10@one.test', subject: 'still', text: 'x' } });
  assert.is(still.status, 202, 'the key in force still works');
  await delivered(still.body.id as string);

  await s.reloadWith({ accounts: [acme, gamma.account] });
  assert.is(await metric('sluice_config_last_reload_successful'), 1, 'a later good reload is applied');
});

test('shaping rules and the transport map apply to destinations served after the reload: a new rule sets its EHLO name, a new route reaches another peer; a rule whose source address is not on this host refuses the reload', async () => {
  const second = await startCapturePeer();
  try {
    await rejects(
      () => s.reloadWith({ accounts: [acme], shaping: { rules: [{ name: 'partner', match: { domains: ['partner.test'], mx: [] }, bindAddress: '192.0.2.1' }] } }),
      (e: unknown) => isSluiceError(e, 'SLUICE_CONFIG_INVALID') && /shaping\.rules\.0\.bindAddress: 192\.0\.2\.1/.test((e as Error).message),
    );
    const r = await s.reloadWith({
      accounts: [acme],
      shaping: { rules: [{ name: 'partner', match: { domains: ['partner.test'], mx: [] }, ehloName: 'partner-ehlo.example' }] },
      delivery: { transport: { 'moved.test': `127.0.0.1:${second.port}` } },
    });
    assert.equal([r.shapingChanged, r.transportChanged, r.restartNeeded], [true, true, []]);
    assert.is(s.app.config.shaping.rules[0]?.name, 'partner', 'in force');

    const toPartner = await s.api('/v1/messages', { headers: as(key), body: { from: 'a@acme.example', to: 'p@partner.test', subject: 'partner', text: 'x' } });
    await delivered(toPartner.body.id as string);
    assert.is(peer.messages.find((m) => m.envelope.to.includes('p@partner.test'))?.ehloName, 'partner-ehlo.example');
    const toOther = await s.api('/v1/messages', { headers: as(key), body: { from: 'a@acme.example', to: 'o@other.test', subject: 'other', text: 'x' } });
    await delivered(toOther.body.id as string);
    assert.is.not(peer.messages.find((m) => m.envelope.to.includes('o@other.test'))?.ehloName, 'partner-ehlo.example', 'the rule matches its domains only');

    const moved = await s.api('/v1/messages', { headers: as(key), body: { from: 'a@acme.example', to: 'm@moved.test', subject: 'moved', text: 'x' } });
    assert.is(moved.status, 202);
    const deadline = Date.now() + 15_000;
    while (second.messages.length === 0 && Date.now() < deadline) await new Promise((res) => setTimeout(res, 50));
    assert.equal(second.messages.map((m) => m.envelope.to), [['m@moved.test']], 'the new route');
    assert.not.ok(peer.messages.some((m) => m.envelope.to.includes('m@moved.test')));
  } finally {
    await second.close();
  }
});

test('a longer largest maxAge is not applied by a reload (references and records were sized by it at start): the shaping section stays and is named', async () => {
  const r = await s.reloadWith({ accounts: [acme], shaping: { default: { maxAge: '96h' } } });
  assert.is(r.shapingChanged, false);
  assert.ok(r.restartNeeded.includes('shaping.default.maxAge'), JSON.stringify(r.restartNeeded));
  assert.is(s.app.config.shaping.default.maxAge, 72 * 3600_000);
  const shorter = await s.reloadWith({ accounts: [acme], shaping: { default: { maxAge: '48h' } } });
  assert.is(shorter.shapingChanged, true, 'a shorter one is');
  assert.is(s.app.config.shaping.default.maxAge, 48 * 3600_000);
});

test('instance.dataDir takes a restart: a reload changing it applies the rest, keeps the generated STARTTLS pair where it was made, and names the key', async () => {
  const file = join(s.dir, 'a-file');
  writeFileSync(file, 'x');
  // Under a regular file: nothing can be made there, and nothing is tried.
  const r = await s.reloadWith({ accounts: [acme], instance: { dataDir: join(file, 'data') } });
  assert.ok(r.restartNeeded.includes('instance.dataDir'), JSON.stringify(r.restartNeeded));
  assert.equal(r.tlsReplaced, [], 'the STARTTLS pair in force is kept');
});

/** A recipient record's last remote or local answer, once it says `text` (or as it is after 10 s). */
async function responseOnceIt(record: string, text: string): Promise<string> {
  let response = '';
  for (let i = 0; i < 200 && !response.includes(text); i++) {
    await new Promise((res) => setTimeout(res, 50));
    response = (await s.app.redis.client.hget(record, 'response')) ?? '';
  }
  return response;
}

test("a removed account's queued mail is held, not sent unsigned and tracked by default as it was", async () => {
  const delta = await another('delta', ['ed25519']);
  await s.reloadWith({ accounts: [acme, delta.account] });
  const { client } = s.app.redis;
  const keys = s.app.keys;
  // Held at its destination while the account is removed, so that its copy is claimed after.
  await placeHolds(client, keys, [{ kind: 'domain', name: 'gone-account.test' }], { until: null, reason: 'test', by: 'test', now: Date.now() });
  const r = await s.api('/v1/messages', { headers: as(delta.apiKey), body: { from: 'news@delta.example', to: 'd@gone-account.test', subject: 'removed', html: '<p><a href="https://delta.example/x">x</a></p>' } });
  assert.is(r.status, 202, JSON.stringify(r.body));
  await s.reloadWith({ accounts: [acme] });
  await releaseHolds(client, keys, s.config.redis.scheduleShards, 'all', Date.now());
  const record = keys.rcptState('gone-account.test', r.body.id, 0);
  assert.match(await responseOnceIt(record, 'not in the configuration'), "held: account 'delta' is not in the configuration");
  assert.is(await client.hget(record, 'state'), 'deferred', 'held as a paused sender\'s copy is');
  assert.is(Number((await client.hget(record, 'attempts')) ?? 0), 0, 'no attempt spent');
  assert.not.ok(peer.messages.some((m) => m.raw.toString('latin1').includes(r.body.id)), 'nothing sent');
});

test("queued mail whose From domain a reload moved to another account is held, not signed with that account's key", async () => {
  const echo = await another('echo', ['ed25519']);
  const foxtrot = await another('foxtrot', ['rsa']);
  await s.reloadWith({ accounts: [acme, echo.account, foxtrot.account] });
  const { client } = s.app.redis;
  const keys = s.app.keys;
  await placeHolds(client, keys, [{ kind: 'domain', name: 'moved-domain.test' }], { until: null, reason: 'test', by: 'test', now: Date.now() });
  const r = await s.api('/v1/messages', { headers: as(echo.apiKey), body: { from: 'news@echo.example', to: 'm@moved-domain.test', subject: 'moved', text: 'x' } });
  assert.is(r.status, 202, JSON.stringify(r.body));
  // echo.example moves to foxtrot, with foxtrot's own key for it.
  const echoDomain = (echo.account['domains'] as { domain: string; dkim: unknown[] }[])[0] as { domain: string; dkim: unknown[] };
  const foxtrotDomains = foxtrot.account['domains'] as { domain: string; dkim: unknown[] }[];
  await s.reloadWith({ accounts: [acme, { ...echo.account, domains: [{ domain: 'echo-new.example', dkim: echoDomain.dkim }] }, { ...foxtrot.account, domains: [...foxtrotDomains, { domain: 'echo.example', dkim: foxtrotDomains[0]?.dkim }] }] });
  await releaseHolds(client, keys, s.config.redis.scheduleShards, 'all', Date.now());
  const record = keys.rcptState('moved-domain.test', r.body.id, 0);
  assert.match(await responseOnceIt(record, 'no longer has'), "held: account 'echo' no longer has the From domain echo.example");
  assert.is(await client.hget(record, 'state'), 'deferred');
  assert.is(Number((await client.hget(record, 'attempts')) ?? 0), 0, 'no attempt spent');
  assert.not.ok(peer.messages.some((m) => m.raw.toString('latin1').includes(r.body.id)), 'nothing sent');
});

test('reloads while mail flows lose nothing: 150 messages in batches while the DKIM key file changes and is reloaded 6 times; each copy arrives once, signed by a key that was published', async () => {
  const rsa = s.dkimKeys.find((k) => k.algorithm === 'rsa');
  const ed = s.dkimKeys.find((k) => k.algorithm === 'ed25519');
  assert.ok(rsa && ed);
  const file = join(s.dir, `${rsa.selector}.pem`);
  // Every key the RSA selector has had, by its public TXT record: a copy may be signed by any of them.
  const published: string[] = [txtTable([rsa])[`${rsa.selector}._domainkey.acme.example`] as string];
  const before = peer.messages.length;
  const ids: string[] = [];
  const submit = async (n: number) => {
    const messages = Array.from({ length: 25 }, (_, i) => ({ from: 'a@acme.example', to: `flow${n}-${i}@flow${i % 5}.test`, subject: `flow ${n}-${i}`, text: 'x' }));
    const r = await s.api('/v1/messages/batch', { headers: as(key), body: { messages } });
    assert.is(r.status, 202, JSON.stringify(r.body).slice(0, 300));
    for (const x of r.body.results as { id: string }[]) ids.push(x.id);
  };
  for (let round = 0; round < 6; round++) {
    await submit(round);
    const next = makeKey('acme.example', rsa.selector, 'rsa');
    writeFileSync(file, next.privateKeyPem);
    published.push(txtTable([next])[`${rsa.selector}._domainkey.acme.example`] as string);
    const r = await s.reloadWith({ accounts: [acme] });
    assert.is(r.dkimKeysReplaced, true);
  }
  const deadline = Date.now() + 30_000;
  while (peer.messages.length - before < ids.length && Date.now() < deadline) await new Promise((res) => setTimeout(res, 100));
  const arrived = peer.messages.slice(before);
  assert.is(arrived.length, ids.length, 'every copy arrived');
  const perRcpt = new Map<string, number>();
  for (const m of arrived) for (const t of m.envelope.to) perRcpt.set(t, (perRcpt.get(t) ?? 0) + 1);
  assert.is(perRcpt.size, ids.length, 'each recipient once');
  // Each copy's RSA signature verifies against one of the keys published for the selector.
  let verified = 0;
  for (const m of arrived) {
    let ok = false;
    for (const txt of published) {
      const v = await verifyWithMailauth(m.raw, { ...s.txt, [`${rsa.selector}._domainkey.acme.example`]: txt });
      if (v.every((x) => x.pass) && v.length === 2) {
        ok = true;
        break;
      }
    }
    if (ok) verified++;
  }
  assert.is(verified, arrived.length, 'every copy is signed by a published key (both signatures pass)');
  s.txt[`${rsa.selector}._domainkey.acme.example`] = published[published.length - 1] as string;
});

/** Generates a self-signed ECDSA pair with openssl; the paths of its key and certificate. */
function makePair(name: string): { key: string; cert: string } {
  const key = join(s.dir, `${name}-key.pem`);
  const cert = join(s.dir, `${name}-cert.pem`);
  execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '2', '-subj', `/CN=${name}.test`, '-keyout', key, '-out', cert], { stdio: 'ignore' });
  return { key, cert };
}

/** The subject CN of the certificate the submission port presents after STARTTLS. */
async function starttlsName(port: number): Promise<string> {
  const plain = connect(port, '127.0.0.1');
  let buffered = '';
  const reply = (code: string) =>
    new Promise<void>((resolve, reject) => {
      const onData = (d: Buffer) => {
        buffered += d.toString('latin1');
        if (new RegExp(`^${code} `, 'm').test(buffered)) {
          plain.off('data', onData);
          buffered = '';
          resolve();
        }
      };
      plain.on('data', onData);
      plain.once('error', reject);
    });
  await reply('220');
  plain.write('EHLO client.test\r\n');
  await reply('250');
  plain.write('STARTTLS\r\n');
  await reply('220');
  const secure = tlsConnect({ socket: plain, rejectUnauthorized: false, servername: 'sluice.test' });
  await new Promise<void>((resolve, reject) => secure.once('secureConnect', resolve).once('error', reject));
  const cn = String(secure.getPeerCertificate().subject?.CN ?? '');
  secure.destroy();
  return cn;
}

test('a renewed STARTTLS certificate is used from the next handshake; a key that does not match its certificate is refused', async () => {
  const first = makePair('renewed-one');
  const second = makePair('renewed-two');
  const port = s.app.ports.smtp as number;
  assert.is.not(await starttlsName(port), 'renewed-one.test', 'the generated pair first');
  await rejects(
    () => s.reloadWith({ accounts: [acme], ingress: { smtp: { tlsKey: first.key, tlsCert: second.cert } } }),
    (e: unknown) => isSluiceError(e, 'SLUICE_CONFIG_INVALID') && /ingress\.smtp: the STARTTLS key and certificate cannot be used together/.test((e as Error).message),
  );
  const r = await s.reloadWith({ accounts: [acme], ingress: { smtp: { tlsKey: first.key, tlsCert: first.cert } } });
  assert.equal([r.tlsReplaced, r.restartNeeded], [['submission'], []]);
  assert.is(await starttlsName(port), 'renewed-one.test');
  // Renewed in place (certbot rewrites the same files): the next reload picks the new bytes up.
  writeFileSync(first.key, readFileSync(second.key));
  writeFileSync(first.cert, readFileSync(second.cert));
  const again = await s.reloadWith({ accounts: [acme], ingress: { smtp: { tlsKey: first.key, tlsCert: first.cert } } });
  assert.equal(again.tlsReplaced, ['submission']);
  assert.is(await starttlsName(port), 'renewed-two.test');
  // Submission still works over the new certificate.
  const transport = createTransport({ host: '127.0.0.1', port, secure: false, requireTLS: true, tls: { rejectUnauthorized: false }, auth: { user: 'acme', pass: 'acme-new-password' } });
  const sent = await transport.sendMail({ from: 'a@acme.example', to: 'tls@one.test', subject: 'after renewal', text: 'x' });
  assert.match(sent.response, /^250 /);
  transport.close();
});

test('log.level: set on the root logger, and the children made at start follow it', async () => {
  const child = s.app.logger.child({ role: 'made-before' });
  const was = s.app.logger.level;
  assert.not.ok(child.isLevelEnabled('debug'));
  const r = await s.reloadWith({ accounts: [acme], log: { level: 'debug' } });
  assert.equal([r.logLevel, r.restartNeeded], ['debug', []]);
  assert.ok(child.isLevelEnabled('debug'), 'a child made before the reload logs at the new level');
  assert.is(s.app.config.log.level, 'debug');
  const back = await s.reloadWith({ accounts: [acme], log: { level: was } });
  assert.is(back.logLevel, was);
  assert.not.ok(child.isLevelEnabled('debug'));
});

test('settings only a restart applies are named, and not applied: also tracking keys where Sluice started with none', async () => {
  const pollBefore = s.app.config.delivery.pollInterval;
  const secret = join(s.dir, 'k1.key');
  writeFileSync(secret, Buffer.alloc(32, 7));
  const r = await s.reloadWith({ accounts: [acme], delivery: { pollInterval: '2s', claimBatch: 7 }, tracking: { keys: [{ id: 'k1', secretFile: secret, notAfter: null }], signWith: 'k1' } });
  assert.equal(r.restartNeeded, ['delivery.claimBatch', 'delivery.pollInterval', 'tracking.keys']);
  assert.is(r.tokenKeysChanged, false);
  assert.is(s.app.config.delivery.pollInterval, pollBefore);
  assert.equal(s.app.config.tracking.keys, []);
});

test.run();
