import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { SecretVerifier, apiKeyAccount, generateApiKey, hashSecret, parseSecretHash, verifySecret } from '../../src/accounts/secrets.js';

const test = suite('accounts/secrets');

test('hash format is scrypt$N$r$p$salt$hash and round-trips', async () => {
  const h = await hashSecret('correct horse');
  assert.match(h, /^scrypt\$16384\$8\$1\$[A-Za-z0-9+/]+=*\$[A-Za-z0-9+/]+=*$/);
  const p = parseSecretHash(h);
  assert.ok(p);
  assert.is(p.salt.length, 16);
  assert.is(p.hash.length, 32);
  assert.ok(await verifySecret('correct horse', h));
  assert.not.ok(await verifySecret('correct horsf', h));
  assert.not.ok(await verifySecret('', h));
});

test('equal secrets hash differently (random salt)', async () => {
  assert.is.not(await hashSecret('x'), await hashSecret('x'));
});

test('malformed hashes are refused, never thrown', async () => {
  const good = await hashSecret('pw');
  const parts = good.split('$');
  const bad = [
    '', 'scrypt$', 'bcrypt$16384$8$1$AAAA$AAAA', `scrypt$16383$8$1$${parts[4]}$${parts[5]}`,
    `scrypt$${2 ** 24}$8$1$${parts[4]}$${parts[5]}`, `scrypt$16384$8$1$${parts[4]}`, `scrypt$16384$8$1$!!$${parts[5]}`,
    `scrypt$16384$8$1$${parts[4]}$AAAA`, `${good}$extra`,
  ];
  for (const h of bad) {
    assert.is(parseSecretHash(h), undefined, h);
    assert.is(await verifySecret('pw', h), false, h);
  }
});

test('API keys name their account and carry 32 base62 characters', () => {
  const k = generateApiKey('acme_eu-1');
  assert.match(k, /^sk_acme_eu-1_[0-9A-Za-z]{32}$/);
  assert.is(apiKeyAccount(k), 'acme_eu-1');
  assert.is.not(generateApiKey('acme'), generateApiKey('acme'));
  assert.is(apiKeyAccount('sk_acme_short'), undefined);
  assert.is(apiKeyAccount('Bearer whatever'), undefined);
});

test('the verifier caches successes only, bound to the hash, and expires them', async () => {
  let now = 1_000;
  const v = new SecretVerifier({ ttlMs: 1000, maxEntries: 2, now: () => now });
  const h1 = await hashSecret('one');
  const h2 = await hashSecret('two');
  assert.is(await v.verifyAny('two', [h1, h2]), 1);
  assert.is(v.size, 1);
  assert.is(await v.verifyAny('nope', [h1, h2]), -1);
  assert.is(v.size, 1, 'a failure is not cached');
  assert.is(await v.verifyAny('two', [h2]), 0, 'cache hit finds the hash index');
  assert.is(await v.verifyAny('two', [h1]), -1, 'a cached success does not apply to another hash');
  assert.is(await v.verifyAny('two', [h2]), 0);
  now += 5000;
  assert.is(await v.verifyAny('two', [h2]), 0, 'expired entry re-verified with scrypt');
  await v.verifyAny('one', [h1]);
  await v.verifyAny('three', [await hashSecret('three')]);
  assert.is(v.size, 2, 'bounded LRU');
});

test.run();
