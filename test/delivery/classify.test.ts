import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { classifyReply, parseEnhancedCode } from '../../src/delivery/classify.js';
import { toChunk, toDataBlock } from '../../src/render/data-block.js';
import { ReplyParser } from '../../src/delivery/reply-parser.js';

const test = suite('delivery/classify');

const table: [number | null, string, string, string | null, boolean][] = [
  // code, response, result, enhanced, throttled
  [250, '250 2.0.0 Ok: queued as 4Xyz', 'delivered', '2.0.0', false],
  [250, '250 OK id=1t2', 'delivered', null, false],
  [550, '550 5.1.1 <bob@example.com>: Recipient address rejected: User unknown', 'bounced', '5.1.1', false],
  [550, '550-5.1.1 The email account that you tried to reach does not exist.\n550 5.1.1 https://support.google.com/mail/?p=NoSuchUser', 'bounced', '5.1.1', false],
  [554, '554 5.7.1 Service unavailable; Client host [192.0.2.1] blocked', 'bounced', '5.7.1', false],
  [552, '552 message size exceeds fixed maximum', 'bounced', null, false],
  [451, '451 4.3.0 Temporary local problem, try later', 'deferred', '4.3.0', false],
  [452, '452 4.2.2 Mailbox full', 'deferred', '4.2.2', false],
  [421, '421 4.7.0 [TSS04] Messages from 192.0.2.1 temporarily deferred due to unexpected volume', 'deferred', '4.7.0', true],
  [421, '421 Service not available, closing transmission channel', 'deferred', null, true],
  [451, '451 4.7.500 Server busy. Please try again later from [192.0.2.1]', 'deferred', '4.7.500', true],
  [450, '450 4.7.1 Too many connections from your IP', 'deferred', '4.7.1', true],
  [451, '451 Rate limit exceeded, slow down', 'deferred', null, true],
  [454, '454 4.7.0 TLS not available due to local problem', 'deferred', '4.7.0', false],
  [450, '450 4.2.1 Mailbox unavailable', 'deferred', '4.2.1', false],
  [550, '550 5.7.1 Rate limit exceeded', 'bounced', '5.7.1', false], // a 5xx never slows us down, it bounces
  // 5.x.x with a 4xx basic code: the basic code decides, the class is rewritten to match it
  [451, '451 5.7.1 Please try again later', 'deferred', '4.7.1', true],
  [550, '550 4.1.1 confused server', 'bounced', '5.1.1', false],
  // no code: a drop or a timeout
  [null, 'connection closed by the remote host (during DATA)', 'deferred', null, false],
  [null, 'timeout after 300 ms waiting for the reply to RCPT TO', 'deferred', null, false],
  // out-of-protocol codes are retried, never delivered
  [354, '354 go ahead', 'deferred', null, false],
  [199, '199 odd', 'deferred', null, false],
  [650, '650 6.1.1 nonsense', 'deferred', null, false],
];

for (const [code, response, result, enhanced, throttled] of table) {
  test(`${code ?? 'no code'} "${response.slice(0, 50)}" → ${result}${throttled ? ', throttled' : ''}`, () => {
    const c = classifyReply(code, response);
    assert.equal(c, { result, enhanced, throttled });
  });
}

test('the enhanced code is read only at the start of the text, not from an IP address later on', () => {
  assert.is(parseEnhancedCode('550 rejected by 5.5.5.5 because'), null);
  assert.is(parseEnhancedCode('550 5.1.10 no'), '5.1.10');
  assert.is(parseEnhancedCode('550 5.1.1000 no'), null);
  assert.is(parseEnhancedCode('5.2.2 mailbox full'), '5.2.2');
  assert.is(parseEnhancedCode(''), null);
});

test('DATA framing: CRLF everywhere, leading dots doubled, terminator added', () => {
  const cases: [string, string][] = [
    ['a\r\nb\r\n', 'a\r\nb\r\n.\r\n'],
    ['a\n.b\r\nc', 'a\r\n..b\r\nc\r\n.\r\n'],
    ['.\r\n..x\r\n', '..\r\n...x\r\n.\r\n'],
    ['', '.\r\n'],
    ['x.\r\n.', 'x.\r\n..\r\n.\r\n'],
  ];
  for (const [input, expected] of cases) assert.is(toDataBlock(Buffer.from(input)).bytes.toString(), expected, JSON.stringify(input));
  assert.is(toDataBlock(Buffer.from('plain')).eightBit, false);
  assert.is(toDataBlock(Buffer.from('é')).eightBit, true);
});

test('BDAT chunk: CRLF line ends and an ended last line, no dot-stuffing, no terminator; a CRLF message is not copied', () => {
  const cases: [string, string][] = [
    ['a\r\nb\r\n', 'a\r\nb\r\n'],
    ['a\n.b\r\nc', 'a\r\n.b\r\nc\r\n'],
    ['.\r\n..x\r\n', '.\r\n..x\r\n'],
    ['', ''],
    ['\n\n', '\r\n\r\n'],
    ['x\r', 'x\r\r\n'],
  ];
  for (const [input, expected] of cases) {
    const c = toChunk(Buffer.from(input));
    assert.is(c.bytes.toString(), expected, JSON.stringify(input));
    assert.is(c.chunked, true);
  }
  const canonical = Buffer.from('Subject: x\r\n\r\n.body\r\n');
  assert.is(toChunk(canonical).bytes, canonical, 'the same buffer');
  assert.is(toChunk(Buffer.from('plain\r\n')).eightBit, false);
  assert.is(toChunk(Buffer.from('é\r\n')).eightBit, true);
});

test('reply parser: multi-line replies across chunks (mixed codes take the last line\'s), then a protocol error on garbage', () => {
  const p = new ReplyParser();
  assert.equal(p.push(Buffer.from('250-mx.test Hello\r\n250-PIPE')), []);
  assert.equal(p.push(Buffer.from('LINING\r\n250 SIZE 10\r\n220 ')), [{ code: 250, lines: ['250-mx.test Hello', '250-PIPELINING', '250 SIZE 10'] }]);
  assert.equal(p.push(Buffer.from('ready\n')), [{ code: 220, lines: ['220 ready'] }]);
  assert.equal(p.push(Buffer.from('hello there\r\n250 ok\r\n')), []);
  assert.ok(p.error?.includes('invalid reply line'));
  const q = new ReplyParser();
  assert.equal(q.push(Buffer.from('250-a\r\n550 b\r\n220 c\r\n')), [{ code: 550, lines: ['250-a', '550 b'] }, { code: 220, lines: ['220 c'] }], 'mixed codes: the last line\'s, every line kept, in step');
  assert.is(q.error, null);
  const r = new ReplyParser();
  r.push(Buffer.alloc(10_000, 0x41));
  assert.ok(r.error?.includes('longer than'), 'an endless line is refused, not buffered forever');
});

test('reply parser: UTF-8 reply text arrives as UTF-8, even split inside a character; other 8-bit text as latin1', () => {
  const p = new ReplyParser();
  const utf8 = Buffer.from('550 5.1.1 Empfänger unbekannt ✓\r\n', 'utf8');
  const cut = utf8.indexOf(0xc3) + 1; // between the two bytes of 'ä'
  assert.equal(p.push(utf8.subarray(0, cut)), []);
  assert.equal(p.push(utf8.subarray(cut)), [{ code: 550, lines: ['550 5.1.1 Empfänger unbekannt ✓'] }]);
  assert.equal(p.push(Buffer.from('550 5.1.1 Empf\xe4nger unbekannt\r\n', 'latin1')), [{ code: 550, lines: ['550 5.1.1 Empfänger unbekannt'] }]);
});

test.run();
