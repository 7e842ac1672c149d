import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium, type Browser, type BrowserContext, type Page } from 'playwright-core';
import { startRedis, type TestRedis } from '../helpers/redis.js';
import type { RedisClient } from '../../src/redis/client.js';
import type { Keys } from '../../src/redis/keys.js';
import { createLogger } from '../../src/observability/logger.js';
import { createTokenCodec, tokenUrl } from '../../src/core/tokens.js';
import { newId } from '../../src/core/ids.js';
import { storeMessage } from '../../src/store/messages.js';
import { suppressionOf } from '../../src/store/suppression.js';
import { startTrackingServer, type TrackingServer } from '../../src/tracking/server.js';

/**
 * The unsubscribe page as a recipient meets it: rendered by a real browser (Debian's chromium,
 * driven over CDP by playwright-core), its button clicked, the contact suppressed. What this adds to
 * server.test.ts: the browser really submits the form under the page's Content-Security-Policy
 * (form-action), the accessible names a screen reader announces, keyboard reach, and that the page
 * works with JavaScript switched off.
 *
 * Keep a screenshot of each page: SLUICE_KEEP_SCREENSHOTS=1 (their paths are printed).
 */
const test = suite('tracking/browser');
const CHROMIUM = '/usr/bin/chromium';
const FROM = 'Acme News <news@acme.example>';
const RCPTS = ['ann@example.org', 'bob<b>@example.org'];
const codec = createTokenCodec({ keys: [{ id: 'k1', secret: 'browser-test-secret-0123456789ab' }], signWith: 'k1' });
const logger = createLogger('silent');
/**
 * This machine has no network: without these Chromium spends its time on refused connections
 * (component updates, sync, field trials, QUIC probes). --headless, and a fresh --user-data-dir in a
 * temporary folder removed on close, are added by playwright-core's launch() itself (it refuses a
 * --user-data-dir argument and offers launchPersistentContext instead, which allows one context only).
 */
const CHROMIUM_ARGS = [
  '--no-sandbox', // tests run as root in CI, where Chromium's sandbox cannot start
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];
/** Every wait of the browser is bounded: a hung page fails the test instead of the runner's 300 s. */
const BROWSER_TIMEOUT_MS = 20_000;

let redis: TestRedis;
let client: RedisClient;
let keys: Keys;
let server: TrackingServer;
let browser: Browser;
let shots: string;
const contexts: BrowserContext[] = [];

test.before(async () => {
  redis = await startRedis();
  client = redis.client();
  keys = redis.fresh().keys;
  // The real clock: the tokens below are issued an hour ago, as for a mail read later.
  server = await startTrackingServer(
    { redis: client, keys, codec, logger, connect: { url: redis.url } },
    { host: '127.0.0.1', port: 0, publicBaseUrl: 'https://t.example.com' },
  );
  browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS, timeout: BROWSER_TIMEOUT_MS });
  shots = mkdtempSync(join(tmpdir(), 'sluice-unsubscribe-'));
});
test.after(async () => {
  for (const c of contexts) await c.close().catch(() => undefined);
  await browser?.close();
  await server?.close();
  await redis?.stop();
  if (process.env['SLUICE_KEEP_SCREENSHOTS']) console.log(`screenshots kept in ${shots}`);
  else if (shots) rmSync(shots, { recursive: true, force: true });
});

/** A stored message to both recipients, and the public unsubscribe URL of recipient `idx`. */
async function unsubscribeUrl(idx: number): Promise<string> {
  const msgId = newId();
  await storeMessage(client, keys, {
    id: msgId, account: 'acme', source: 'http', kind: 'raw', from: FROM, fromDomain: 'acme.example',
    rcpts: RCPTS.map((address) => ({ address, domain: 'example.org' })),
    acceptedAt: Date.now(), tags: [], metadata: {}, body: 'x',
  });
  const token = codec.sign({ kind: 'u', account: 'acme', msgId, idx, issuedAt: Math.floor(Date.now() / 1000) - 3600 });
  return tokenUrl(`http://127.0.0.1:${server.port}`, 'u', token);
}

/** A page in a new context whose console errors (a CSP refusal shows up there) are collected. */
async function openPage(javaScriptEnabled: boolean): Promise<{ page: Page; consoleErrors: string[] }> {
  const context = await browser.newContext({ javaScriptEnabled, viewport: { width: 800, height: 600 } });
  contexts.push(context);
  context.setDefaultTimeout(BROWSER_TIMEOUT_MS);
  const page = await context.newPage();
  const consoleErrors: string[] = [];
  page.on('console', (m) => {
    if (m.type() === 'error') consoleErrors.push(m.text());
  });
  return { page, consoleErrors };
}

async function screenshot(page: Page, name: string): Promise<void> {
  const path = join(shots, `${name}.png`);
  await page.screenshot({ path, fullPage: true });
  const png = readFileSync(path);
  assert.equal(png.subarray(0, 8), Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]), `${name}: a PNG`);
  // IHDR width and height: the page rendered to a real size, not an empty frame.
  assert.ok(png.readUInt32BE(16) >= 320 && png.readUInt32BE(20) >= 200, `${name}: ${png.readUInt32BE(16)}×${png.readUInt32BE(20)}`);
  if (process.env['SLUICE_KEEP_SCREENSHOTS']) console.log(`screenshot: ${path}`);
}

async function unsubscribedEvents(): Promise<Record<string, string>[]> {
  await server.idle();
  const entries = await client.xrange(keys.events(), '-', '+');
  return entries
    .map(([, flat]) => Object.fromEntries(Array.from({ length: flat.length / 2 }, (_, i) => [flat[2 * i], flat[2 * i + 1]])) as Record<string, string>)
    .filter((e) => e['type'] === 'unsubscribed');
}

test('the page shows address and sender, is reachable by keyboard, and its button unsubscribes', async () => {
  const url = await unsubscribeUrl(0);
  const { page, consoleErrors } = await openPage(true);
  const res = await page.goto(url);
  assert.is(res?.status(), 200);
  assert.is(await page.title(), 'Unsubscribe');
  assert.is(await page.locator('html').getAttribute('lang'), 'en');
  assert.is(await page.getByRole('heading', { level: 1 }).innerText(), 'Unsubscribe');
  const text = await page.locator('main').innerText();
  assert.match(text, 'ann@example.org');
  assert.match(text, FROM, 'the sender, display name and address, as the mail showed it');
  await screenshot(page, 'unsubscribe-form');
  assert.is(await suppressionOf(client, keys, 'acme', RCPTS[0] as string), null, 'showing the page unsubscribes nobody');

  // The only control, reached with the first Tab, and announced by its name.
  await page.keyboard.press('Tab');
  assert.is((await page.locator(':focus').textContent())?.trim(), 'Unsubscribe');
  const button = page.getByRole('button', { name: 'Unsubscribe' });
  assert.is(await button.count(), 1);

  const [answer] = await Promise.all([page.waitForResponse((r) => r.request().method() === 'POST'), button.click()]);
  assert.is(answer.status(), 200);
  await page.waitForLoadState('domcontentloaded');
  assert.is(await page.title(), 'You are unsubscribed');
  const status = page.getByRole('status');
  assert.match(await status.innerText(), 'ann@example.org will no longer receive mail from ' + FROM);
  await screenshot(page, 'unsubscribed');

  const s = await suppressionOf(client, keys, 'acme', RCPTS[0] as string);
  assert.is(s?.reason, 'unsubscribe');
  assert.is(s?.evidence['via'], 'http');
  const evs = await unsubscribedEvents();
  assert.is(evs.length, 1);
  assert.is(evs[0]?.['idx'], '0');
  assert.match(evs[0]?.['ua'] ?? '', /Chrome\//, 'the browser posted it');
  assert.equal(consoleErrors, [], 'no CSP refusal or other error in the console');
});

test('without JavaScript the page works the same: the button unsubscribes another recipient', async () => {
  const url = await unsubscribeUrl(1);
  const { page, consoleErrors } = await openPage(false);
  assert.is((await page.goto(url))?.status(), 200);
  const text = await page.locator('main').innerText();
  assert.match(text, 'bob<b>@example.org', 'an address with markup characters is shown as text');
  assert.match(text, FROM);
  assert.is(await page.locator('main b').count(), 0, 'and never becomes markup');
  await screenshot(page, 'unsubscribe-form-nojs');
  assert.is(await suppressionOf(client, keys, 'acme', RCPTS[1] as string), null);

  const [answer] = await Promise.all([
    page.waitForResponse((r) => r.request().method() === 'POST'),
    page.getByRole('button', { name: 'Unsubscribe' }).click(),
  ]);
  assert.is(answer.status(), 200);
  assert.is(answer.request().postData(), 'List-Unsubscribe=One-Click', 'the RFC 8058 field, form-encoded');
  await page.waitForLoadState('domcontentloaded');
  assert.match(await page.getByRole('status').innerText(), 'bob<b>@example.org will no longer receive mail');

  assert.is((await suppressionOf(client, keys, 'acme', RCPTS[1] as string))?.reason, 'unsubscribe');
  const evs = await unsubscribedEvents();
  assert.equal(evs.map((e) => e['idx']), ['0', '1'], 'one event per click, for the recipient of each token');
  assert.equal(consoleErrors, []);
});

test('a changed token shows the invalid-link page, with no button, and writes nothing', async () => {
  const url = await unsubscribeUrl(0);
  const forged = url.slice(0, -1) + (url.endsWith('A') ? 'B' : 'A');
  const { page } = await openPage(false);
  assert.is((await page.goto(forged))?.status(), 404);
  assert.is(await page.getByRole('heading', { level: 1 }).innerText(), 'This link is not valid');
  assert.is(await page.getByRole('button').count(), 0);
  assert.is((await unsubscribedEvents()).length, 2, 'only the two clicks above');
});

test.run();
