/**
 * GET /v1/campaigns over a real HTTP server and Redis: every campaign is reached by following
 * `cursor` (newest first, none twice, campaigns of one millisecond included), a campaign created
 * between pages does not shift them, and a bad limit or cursor is a 400 naming it. A schedule's
 * body is read whether its length is declared or it comes chunked. Without token keys (this fixture
 * has none) no campaign is taken: its copies could not carry their unsubscribe links.
 */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { Readable } from 'node:stream';
import { request } from 'undici';
import { createCampaign } from '../../src/store/campaigns.js';
import { createList } from '../../src/store/contacts.js';
import { newId } from '../../src/core/ids.js';
import { apiCall, withFixtureApi, type IngressFixture } from './fixture.js';

const test = suite('ingress/campaigns');
let fx: IngressFixture;
let base = '';
withFixtureApi(test, (f, b) => {
  fx = f;
  base = b;
});

/** A draft campaign of `account` created at `at`. */
async function campaign(account: string, at: number): Promise<string> {
  const list = await createList(fx.client, fx.keys, account, `l ${newId()}`);
  const id = newId(at);
  await createCampaign(fx.client, fx.keys, {
    id, account, name: `c ${id}`, listId: list.id, from: 'news@acme.example', fromDomain: 'acme.example', subject: 'Hi',
    tracking: { opens: true, clicks: true }, tags: [], throttlePerHour: null, createdAt: at, sendAt: null, body: '{}', links: [],
  });
  return id;
}

type Page = { campaigns: { id: string }[]; cursor: string | null };

test('GET /v1/campaigns: pages follow cursor to the last (null), newest first, ties and later campaigns included once', async () => {
  const t0 = Date.now() - 60_000;
  // Three campaigns share one millisecond: a page may end among them.
  const made: { id: string; at: number }[] = [];
  for (const at of [t0, t0 + 1, t0 + 2, t0 + 2, t0 + 2, t0 + 3, t0 + 4]) made.push({ id: await campaign('acme', at), at });
  const expected = [...made].sort((a, b) => b.at - a.at || (a.id < b.id ? 1 : -1)).map((c) => c.id);

  const whole = await apiCall<Page>(base, 'GET', '/v1/campaigns', { key: fx.apiKeys.acme });
  assert.is(whole.status, 200, whole.text);
  assert.equal(whole.json.campaigns.map((c) => c.id), expected, 'without paging: all of them, as before');
  assert.is(whole.json.cursor, null);

  const seen: string[] = [];
  let cursor: string | null = null;
  let pages = 0;
  do {
    const r: { status: number; text: string; json: Page } = await apiCall<Page>(base, 'GET', `/v1/campaigns?limit=2${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`, { key: fx.apiKeys.acme });
    assert.is(r.status, 200, r.text);
    assert.ok(r.json.campaigns.length <= 2);
    seen.push(...r.json.campaigns.map((c) => c.id));
    // A campaign created after the first page is newer: it does not shift the pages that follow.
    if (pages === 0) await campaign('acme', Date.now());
    cursor = r.json.cursor;
    pages++;
  } while (cursor !== null);
  assert.equal(seen, expected);
  assert.is(pages, 4);
});

test('GET /v1/campaigns: a bad limit or cursor is 400 with the field; another account sees none', async () => {
  for (const [query, path] of [['limit=0', 'limit'], ['limit=1001', 'limit'], ['limit=x', 'limit'], ['cursor=nope', 'cursor'], ['cursor=0', 'cursor']] as const) {
    const r = await apiCall(base, 'GET', `/v1/campaigns?${query}`, { key: fx.apiKeys.acme });
    assert.is(r.status, 400, query);
    assert.is(r.json['code'], 'SLUICE_INGRESS_BAD_REQUEST');
    assert.equal(r.json['errors'].map((e: { path: string }) => e.path), [path], query);
  }
  const other = await apiCall<Page>(base, 'GET', '/v1/campaigns?limit=1000', { key: fx.apiKeys.other });
  assert.equal([other.status, other.json.campaigns, other.json.cursor], [200, [], null]);
});

test('POST /v1/campaigns/:id/schedule: a chunked body (no Content-Length) is read: the campaign waits for its sendAt', async () => {
  const id = await campaign('acme', Date.now());
  const sendAt = '2031-05-01T09:00:00.000Z';
  // A body of unknown length, as a client streaming it sends it: Transfer-Encoding: chunked.
  const res = await request(`${base}/v1/campaigns/${id}/schedule`, {
    method: 'POST',
    headers: { authorization: `Bearer ${fx.apiKeys.acme}`, 'content-type': 'application/json' },
    body: Readable.from([JSON.stringify({ sendAt })]),
  });
  const text = await res.body.text();
  assert.is(res.statusCode, 200, text);
  const c = JSON.parse(text) as { state: string; sendAt: string };
  assert.equal([c.state, c.sendAt], ['scheduled', sendAt], 'scheduled for its sendAt, not now');
  assert.is(Number(await fx.client.zscore(fx.keys.campaignsDue(), id)), Date.parse(sendAt), 'the enqueuer looks at it then');
  // Without a body at all it is still due now.
  const now = await campaign('acme', Date.now());
  const r = await apiCall(base, 'POST', `/v1/campaigns/${now}/schedule`, { key: fx.apiKeys.acme });
  assert.is(r.status, 200, r.text);
  assert.ok(Date.parse(r.json['sendAt']) <= Date.now());
});

test('POST /v1/campaigns without tracking keys is refused before anything is written: no copy could carry its unsubscribe link', async () => {
  const before = await fx.client.zcard(fx.keys.accountCampaigns('other'));
  const due = await fx.client.zcard(fx.keys.campaignsDue());
  const r = await apiCall(base, 'POST', '/v1/campaigns', { key: fx.apiKeys.other, body: { from: 'news@other.example', subject: 'Hi', text: 'Hello', recipients: [{ email: 'reader@d0.test' }], sendAt: 'now' } });
  assert.is(r.status, 500, r.text);
  assert.is(r.json['code'], 'SLUICE_CONFIG_INVALID');
  assert.match(r.json['message'], 'tracking.keys');
  assert.is(await fx.client.zcard(fx.keys.accountCampaigns('other')), before, 'no campaign');
  const lists = await apiCall(base, 'GET', '/v1/lists', { key: fx.apiKeys.other });
  assert.equal(lists.json['lists'], [], 'no list of uploaded recipients');
  assert.is(await fx.client.zcard(fx.keys.campaignsDue()), due, 'nothing due');
});

test.run();
