import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { classifyClick, classifyOpen } from '../../src/tracking/classify.js';
import { anonymizeIp } from '../../src/tracking/anonymize-ip.js';
import { isOneClickBody } from '../../src/tracking/one-click.js';

const test = suite('tracking/classify');
const BROWSER = 'Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36';
const req = (userAgent: string, ip = '192.0.2.1', method = 'GET') => ({ method, userAgent, ip });

test('opens: Apple MPP by bare user agent or Apple network, HEAD, scanners, empty agents', () => {
  assert.is(classifyOpen(req(BROWSER)), null);
  assert.is(classifyOpen(req('Mozilla/5.0')), 'apple-mpp');
  assert.is(classifyOpen(req(BROWSER, '17.58.1.2')), 'apple-mpp');
  assert.is(classifyOpen(req(BROWSER, '::ffff:17.58.1.2')), 'apple-mpp');
  assert.is(classifyOpen(req(BROWSER, '18.0.0.1')), null);
  assert.is(classifyOpen(req(BROWSER, '192.0.2.1', 'HEAD')), 'head');
  assert.is(classifyOpen(req('')), 'no-user-agent');
  assert.is(classifyOpen(req('python-requests/2.31')), 'scanner');
  // Gmail's image proxy fetches when a person opens the mail: that is a human open.
  assert.is(classifyOpen(req('Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)')), null);
});

test('clicks: too fast after sending, bursts, scanners', () => {
  const ctx = { nowS: 1_000_000, issuedAt: 1_000_000 - 3600, burst: 1 };
  assert.is(classifyClick(req(BROWSER), ctx), null);
  assert.is(classifyClick(req(BROWSER), { ...ctx, issuedAt: ctx.nowS - 3 }), 'too-fast');
  assert.is(classifyClick(req(BROWSER), { ...ctx, burst: 3 }), 'burst');
  assert.is(classifyClick(req('Mozilla/5.0 Mimecast'), ctx), 'scanner');
  for (const bot of ['Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)', 'Mozilla/5.0 (compatible; bingbot/2.0)', 'Mozilla/5.0 (compatible; AhrefsBot/7.0)', 'Slackbot-LinkExpanding 1.0', 'facebookexternalhit/1.1 Twitterbot']) {
    assert.is(classifyClick(req(bot), ctx), 'scanner', bot);
  }
  // A phone whose model name ends in "BOT" is a person's browser.
  const cubot = 'Mozilla/5.0 (Linux; Android 12; CUBOT X30 Build/SP1A.210812.016) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/118.0 Mobile Safari/537.36';
  assert.is(classifyClick(req(cubot), ctx), null);
  assert.is(classifyOpen(req(cubot)), null);
});

test('IP anonymisation', () => {
  assert.is(anonymizeIp('203.0.113.77', 'none'), '203.0.113.77');
  assert.is(anonymizeIp('203.0.113.77', 'truncate'), '203.0.113.0');
  assert.is(anonymizeIp('::ffff:203.0.113.77', 'truncate'), '203.0.113.0');
  assert.is(anonymizeIp('2001:db8:aaaa:bbbb:cccc::1', 'truncate'), '2001:db8:aaaa::');
  assert.is(anonymizeIp('::1', 'truncate'), '0:0:0::');
  assert.is(anonymizeIp('2001:db8::', 'truncate'), '2001:db8:0::');
  assert.is(anonymizeIp('203.0.113.77', 'drop'), '');
  assert.is(anonymizeIp('not an ip', 'truncate'), '');
});

test('one-click bodies: urlencoded, multipart, nothing else', () => {
  const b = (s: string) => Buffer.from(s);
  assert.ok(isOneClickBody('application/x-www-form-urlencoded', b('List-Unsubscribe=One-Click')));
  assert.ok(isOneClickBody('', b('List-Unsubscribe=One-Click\r\n')));
  assert.not.ok(isOneClickBody('application/x-www-form-urlencoded', b('List-Unsubscribe=one-click-please')));
  assert.not.ok(isOneClickBody('application/json', b('{"List-Unsubscribe":"One-Click"}')));
  const mp = '--B\r\nContent-Disposition: form-data; name="List-Unsubscribe"\r\n\r\nOne-Click\r\n--B--\r\n';
  assert.ok(isOneClickBody('multipart/form-data; boundary=B', b(mp)));
  assert.ok(isOneClickBody('multipart/form-data; boundary="B"', b(mp)));
  assert.not.ok(isOneClickBody('multipart/form-data; boundary=B', b(mp.replace('One-Click', 'Nope'))));
  assert.not.ok(isOneClickBody('multipart/form-data', b(mp)));
});

test.run();
