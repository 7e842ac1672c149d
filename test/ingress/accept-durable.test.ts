import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { acceptMessage, WITHDRAWN_RESPONSE, type AcceptDeps } from '../../src/ingress/accept.js';
import { messageStatus } from '../../src/ingress/message-status.js';
import { SluiceError } from '../../src/core/errors.js';
import type { Account } from '../../src/accounts/registry.js';
import { ingressFixture, type IngressFixture } from './fixture.js';

/**
 * Strict durability refuses a submission whose write WAITAOF could not confirm on disk in time. The
 * message is persisted and queued by then: refused, it must not be delivered as well (the client's
 * retry would send it twice, and the quota given back would not count either copy).
 */
const test = suite('ingress/accept-durable');
let fx: IngressFixture;

test.before(async () => {
  fx = await ingressFixture();
});
test.after(() => fx.stop());

const refusingDisk = async (): Promise<void> => {
  throw new SluiceError('SLUICE_REDIS_UNAVAILABLE', 'the write could not be confirmed on disk in time (strict durability)');
};

test('a submission whose write is not confirmed on disk is refused, and none of its copies stays queued; the quota is given back', async () => {
  const tiny = fx.registry.get('tiny') as Account;
  const deps = (confirmDurable?: () => Promise<void>): AcceptDeps => ({ redis: fx.client, keys: fx.keys, config: fx.config, registry: fx.registry, logger: fx.logger, confirmDurable });
  const submission = (to: string[]) => ({ account: tiny, source: 'smtp' as const, kind: 'raw' as const, from: 'a@tiny.example', recipients: to, body: Buffer.from('From: a@tiny.example\r\nSubject: s\r\n\r\nbody\r\n') });
  const readyBefore = await fx.client.zcard(fx.keys.ready('refused.test'));

  const err = await acceptMessage(deps(refusingDisk), submission(['x@refused.test', 'y@refused.test'])).then(() => null, (e: unknown) => e);
  assert.instance(err, SluiceError);
  assert.is((err as SluiceError).code, 'SLUICE_REDIS_UNAVAILABLE');
  assert.is(await fx.client.zcard(fx.keys.ready('refused.test')), readyBefore, 'nothing of the refused message waits in the queue');
  // The refused message's copies say why they were not sent.
  const ids = (await fx.client.xrange(fx.keys.events(), '-', '+')).filter(([, f]) => f.includes('cancelled')).map(([, f]) => f[f.indexOf('msgId') + 1] as string);
  assert.is(new Set(ids).size, 1);
  const status = await messageStatus(fx.client, fx.keys, ids[0] as string, 'tiny');
  assert.equal(status?.recipients.map((r) => [r.state, r.response]), [['cancelled', WITHDRAWN_RESPONSE], ['cancelled', WITHDRAWN_RESPONSE]]);

  // tiny's daily quota is 3 recipients: the refused 2 were given back, so 3 more go and a 4th does not.
  await acceptMessage(deps(), submission(['a@ok.test', 'b@ok.test', 'c@ok.test']));
  const over = await acceptMessage(deps(), submission(['d@ok.test'])).then(() => null, (e: unknown) => e);
  assert.is((over as SluiceError | null)?.code, 'SLUICE_INGRESS_QUOTA_EXCEEDED');
});

test.run();
