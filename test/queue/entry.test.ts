import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { entryMember, parseMember } from '../../src/queue/entry.js';
import { newId } from '../../src/core/ids.js';

const test = suite('queue/entry');

test('a member round-trips through entryMember and parseMember', () => {
  const msgId = newId(1_700_000_000_000);
  const member = entryMember({ msgId, idx: 42, attempt: 3 });
  assert.is(member, `${msgId}:42:3`);
  assert.equal(parseMember('example.com', member), { msgId, idx: 42, attempt: 3, domain: 'example.com' });
});

test('ids and attempt counts are read from the right, so an id with a colon still parses', () => {
  assert.equal(parseMember('d.test', 'camp:7:12:0'), { msgId: 'camp:7', idx: 12, attempt: 0, domain: 'd.test' });
});

test('anything that is not an entry parses to undefined instead of throwing', () => {
  for (const bad of ['', 'abc', 'm:1', 'm:x:0', 'm:1:-1', ':1:0', 'm:1:0 ', 'm:1:99999999999']) {
    assert.is(parseMember('d.test', bad), undefined, JSON.stringify(bad));
  }
});

test.run();
