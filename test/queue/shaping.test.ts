import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { loadConfig } from '../../src/config/load.js';
import { resolveRecordedShaping, resolveShaping, retryDelay } from '../../src/queue/shaping.js';
import { MINUTE, HOUR } from '../../src/core/time.js';

const test = suite('queue/shaping');

// The shipped defaults (google, microsoft, yahoo rules) plus two rules of our own.
const config = loadConfig({
  env: {},
  overrides: {
    shaping: {
      rules: [
        { name: 'google', match: { domains: ['gmail.com', 'googlemail.com'], mx: ['*.google.com', '*.googlemail.com'] }, scope: 'provider', connections: 20 },
        { name: 'corp', match: { domains: ['*.corp.example'], mx: [] }, connections: 2, rate: { perSecond: 5, perMinute: null, perHour: 1000 }, retry: ['10s', '2m'], maxAge: '1h' },
        { name: 'mimecast', match: { domains: [], mx: ['*.mimecast.com'] }, scope: 'provider', messagesPerConnection: 10 },
      ],
    },
  },
});
const shaping = config.shaping;

test('a domain listed by a provider rule shares the provider scope and keeps unset keys from the default', () => {
  const s = resolveShaping(shaping, 'GMail.com', []);
  assert.equal(
    { rule: s.rule, provider: s.provider, scope: s.scope, connections: s.connections, messagesPerConnection: s.messagesPerConnection },
    { rule: 'google', provider: 'google', scope: 'google', connections: 20, messagesPerConnection: shaping.default.messagesPerConnection },
  );
  assert.equal(s.rate, shaping.default.rate);
  assert.equal(s.retry, shaping.default.retry);
  assert.is(s.maxAge, shaping.default.maxAge);
});

test('a domain hosted on a provider MX matches by MX host, case and trailing dot ignored', () => {
  const s = resolveShaping(shaping, 'acme.example', ['ASPMX.L.Google.com.', 'alt1.aspmx.l.google.com']);
  assert.is(s.rule, 'google');
  assert.is(s.scope, 'google', 'every Google-hosted domain spends the same budget');
  assert.is(resolveShaping(shaping, 'other.example', ['mx1.eu.mimecast.com']).messagesPerConnection, 10);
});

test('a per-domain rule gives each matching domain its own scope', () => {
  const a = resolveShaping(shaping, 'mail.corp.example', []);
  const b = resolveShaping(shaping, 'hr.corp.example', []);
  assert.is(a.rule, 'corp');
  assert.is(a.scope, 'corp:mail.corp.example');
  assert.is(b.scope, 'corp:hr.corp.example');
  assert.equal(a.rate, { perSecond: 5, perMinute: null, perHour: 1000 });
  assert.equal(a.retry, [10_000, 2 * MINUTE]);
  assert.is(a.maxAge, HOUR);
  assert.not.ok(resolveShaping(shaping, 'corp.example', []).rule === 'corp', "'*.corp.example' needs a label before the suffix");
});

test('rules are tried in order: the first match wins', () => {
  // matches google by MX and mimecast by MX: google comes first
  assert.is(resolveShaping(shaping, 'both.example', ['mx.mimecast.com', 'aspmx.l.google.com']).rule, 'google');
});

test('an unmatched domain falls back to the default with its own scope', () => {
  const s = resolveShaping(shaping, 'Example.ORG', ['mx.example.org']);
  assert.equal({ rule: s.rule, provider: s.provider, scope: s.scope }, { rule: 'default', provider: 'default', scope: 'default:example.org' });
  assert.is(s.connections, shaping.default.connections);
  // glob characters in patterns are literal dots, not regex wildcards
  assert.is(resolveShaping(shaping, 'gmailxcom', []).rule, 'default');
});

test('a provider-scoped default shares one budget among all unmatched domains', () => {
  const s = resolveShaping({ ...shaping, default: { ...shaping.default, scope: 'provider' } }, 'x.example', []);
  assert.is(s.scope, 'default');
});

test('retryDelay walks the schedule and repeats its last step', () => {
  const s = resolveShaping(shaping, 'nowhere.example', []);
  assert.equal(shaping.default.retry, [MINUTE, 5 * MINUTE, 15 * MINUTE, 30 * MINUTE, HOUR, 2 * HOUR, 4 * HOUR]);
  assert.is(retryDelay(s, 1), MINUTE);
  assert.is(retryDelay(s, 2), 5 * MINUTE);
  assert.is(retryDelay(s, 7), 4 * HOUR);
  assert.is(retryDelay(s, 50), 4 * HOUR);
  assert.is(retryDelay(s, 0), MINUTE, 'no attempt made yet counts as the first');
  const corp = resolveShaping(shaping, 'a.corp.example', []);
  assert.is(retryDelay(corp, 3), 2 * MINUTE);
});

test('the returned shaping is a copy: changing it does not change the frozen config', () => {
  const s = resolveShaping(shaping, 'gmail.com', []);
  s.retry.push(1 as never);
  s.rate.perSecond = 99;
  assert.is(resolveShaping(shaping, 'gmail.com', []).retry.length, shaping.default.retry.length);
  assert.is(resolveShaping(shaping, 'gmail.com', []).rate.perSecond, null);
});

test('a recorded rule (the one the dispatcher resolved with the MX hosts) is what readers without MX hosts get', () => {
  const mx = resolveShaping(shaping, 'acme.example', ['aspmx.l.google.com']);
  assert.is(resolveShaping(shaping, 'acme.example', []).rule, 'default', 'by domain alone it is not google');
  assert.equal(resolveRecordedShaping(shaping, 'acme.example', mx.rule), mx, 'the same shaping as the dispatcher had: rule, scope, limits');
  assert.equal(resolveRecordedShaping(shaping, 'acme.example', null), resolveShaping(shaping, 'acme.example', []), 'nothing recorded: by domain');
  assert.is(resolveRecordedShaping(shaping, 'x.example', 'mimecast').scope, 'mimecast');
  assert.is(resolveRecordedShaping(shaping, 'x.example', 'default').rule, 'default');
});

test('a recorded rule gives way to the config: an unknown name is ignored, an earlier rule matching the domain wins', () => {
  assert.is(resolveRecordedShaping(shaping, 'acme.example', 'renamed').rule, 'default', 'a rule the config no longer has');
  assert.is(resolveRecordedShaping(shaping, 'gmail.com', 'renamed').rule, 'google');
  // corp (2nd) matches a.corp.example by domain: a record of mimecast (3rd) is from an older config
  assert.is(resolveRecordedShaping(shaping, 'a.corp.example', 'mimecast').rule, 'corp');
  // google (1st) matched by MX before corp: the dispatcher found it first, so it stands
  assert.is(resolveRecordedShaping(shaping, 'a.corp.example', 'google').rule, 'google');
  assert.is(resolveShaping(shaping, 'a.corp.example', ['alt1.aspmx.l.google.com']).rule, 'google');
  assert.is(resolveRecordedShaping(shaping, 'A.Corp.Example.', 'corp').scope, 'corp:a.corp.example', 'the domain is normalized as resolveShaping does');
});

test.run();
