import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { eventFlat, packTrackingEvent, storedIp, TYPES, type EventContext } from '../../src/tracking/record.js';
import type { TokenPayload } from '../../src/core/tokens.js';
import { modeOf, trackingSettingsOf, type TrackingMode, type TrackingSettings } from '../../src/tracking/deps.js';
import type { MachineReason } from '../../src/tracking/classify.js';

/** packTrackingEvent writes the JSON by hand for speed: it must be exactly the JSON of eventFlat. */
const test = suite('tracking/record');

test('packTrackingEvent equals the JSON of eventFlat for every kind, mode, class and client', () => {
  const accounts = ['acme', 'ünï "quoted" \\ back', 'a'.repeat(64)];
  const agents = ['', 'Mozilla/5.0', 'x'.repeat(300), 'quote " back \\ tab \t latin1 \u00e9\u00ff ctrl \u0001'];
  const ips = ['127.0.0.1', '::ffff:192.0.2.7', '2001:db8::1', ''];
  const settings: TrackingSettings[] = [{ anonymizeIp: 'none' }, { anonymizeIp: 'truncate' }, { anonymizeIp: 'drop' }];
  const payloads: TokenPayload[] = [];
  for (const account of accounts) {
    payloads.push({ kind: 'o', account, msgId: '01kjmma2g04hhptz', idx: 3, issuedAt: 1 });
    payloads.push({ kind: 'c', account, msgId: '01kjmma2g04hhptz', idx: 0, link: 7, issuedAt: 1 });
    payloads.push({ kind: 'u', account, msgId: '01kjmma2g04hhptz', idx: 2 ** 40, issuedAt: 1 });
  }
  let n = 0;
  for (const p of payloads)
    for (const mode of ['full', 'anonymous', 'off'] as TrackingMode[])
      for (const machine of [null, 'apple-mpp', 'scanner'] as (MachineReason | null)[])
        for (const userAgent of agents)
          for (const ip of ips)
            for (const s of settings)
              for (const [first, via] of [[true, undefined], [false, 'mail']] as const) {
                const ctx: EventContext = { now: 1772366400123, mode, first, machine, userAgent, ip: storedIp(s, p.account, ip), ...(via ? { via } : {}) };
                const expected = JSON.stringify(['type', TYPES[p.kind], ...eventFlat(p, ctx)]);
                assert.is(packTrackingEvent(p, ctx), expected, `${p.kind} ${mode} ${machine} ${JSON.stringify(userAgent).slice(0, 20)} ${ip} ${s.anonymizeIp}`);
                n++;
              }
  assert.ok(n > 5000);
});

test('storedIp: the address an account may keep (none, truncate, drop; an IPv4-mapped client as its IPv4 address)', () => {
  const settings: TrackingSettings = { anonymizeIp: 'none', accounts: new Map([['cut', { mode: 'full', anonymizeIp: 'truncate' }], ['nil', { mode: 'full', anonymizeIp: 'drop' }]]) };
  assert.is(storedIp(settings, 'acme', '::ffff:192.0.2.7'), '192.0.2.7');
  assert.is(storedIp(settings, 'cut', '192.0.2.7'), '192.0.2.0');
  assert.is(storedIp(settings, 'cut', '2001:db8:1:2:3:4:5:6'), '2001:db8:1::');
  assert.is(storedIp(settings, 'nil', '192.0.2.7'), '');
  assert.is(storedIp(undefined, 'acme', '192.0.2.7'), '192.0.2.7');
  // The configuration's settings (no default): an account it does not name keeps nothing.
  const configured = trackingSettingsOf([{ id: 'cut', tracking: { mode: 'full', anonymizeIp: 'none' } }]);
  assert.is(storedIp(configured, 'removed', '192.0.2.7'), '');
  assert.is(modeOf(configured, 'removed'), 'off');
  assert.is(modeOf(configured, 'cut'), 'full');
});

test.run();
