import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { randomBytes, randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { connect } from 'node:net';
import { join } from 'node:path';
import { startRedis, type TestRedis } from '../helpers/redis.js';
import type { RedisClient } from '../../src/redis/client.js';
import {
  writeSluiceConfig, startSluiceProcess, killAllSluiceProcesses, adminGet, sleep, type SluiceInstance, type SluiceProcess,
} from '../helpers/sluice-process.js';
import { recordFigures } from '../helpers/fault-figures.js';

/**
 * Fault: bad input on the HTTP API and the tracking server of a real Sluice process — malformed
 * JSON, huge bodies, invalid UTF-8, path traversal, header floods — sent as raw bytes over a socket
 * (an HTTP library would fix or refuse most of them before sending). Each gets a clear 4xx (on the
 * API with a JSON { code, message, errors }), and nothing is written to Redis: every key and its
 * size are compared before and after. The one write a bad API request may cause, the per-IP auth
 * failure counter, is avoided by sending a valid key: here the key is never what is wrong.
 */
const test = suite('faults/http-input');

const MAX_BODY = 1024 * 1024;

let redis: TestRedis;
let inspector: RedisClient;
let inst: SluiceInstance | undefined;
let keyDir: string | undefined;
let sluice: SluiceProcess;
let prefix: string;
let apiPort = 0;
let trackingPort = 0;
const tally = { tried: 0, refused: 0, changedKeys: 0 };

test.before(async () => {
  redis = await startRedis();
  inspector = redis.client();
  prefix = `t${randomUUID().slice(0, 8)}:`;
  keyDir = mkdtempSync(join(tmpdir(), 'sluice-fault-keys-'));
  const secretFile = join(keyDir, 'tracking.key');
  writeFileSync(secretFile, randomBytes(32));
  inst = await writeSluiceConfig({
    redisUrl: redis.url,
    prefix,
    transport: {},
    overrides: {
      roles: ['ingress', 'tracking'],
      ingress: { http: { maxBodySize: MAX_BODY } },
      tracking: { host: '127.0.0.1', port: 0, publicBaseUrl: 'http://t.acme.example', keys: [{ id: 'k1', secretFile, notAfter: null }], signWith: 'k1' },
    },
  });
  sluice = await startSluiceProcess(inst);
  const ports = sluice.logs.find((l) => l.msg === 'sluice started')?.['ports'] as { http: number; tracking: number };
  apiPort = ports.http;
  trackingPort = ports.tracking;
});

test.after(async () => {
  await killAllSluiceProcesses();
  await redis?.stop();
  inst?.remove();
  if (keyDir) rmSync(keyDir, { recursive: true, force: true });
});

interface RawAnswer {
  status: number;
  headers: string;
  body: string;
}

/** Sends the bytes as they are and reads the answer up to the close (every request asks for one). */
function raw(port: number, request: Buffer | string, timeoutMs = 10_000): Promise<RawAnswer> {
  return new Promise((resolve, reject) => {
    const socket = connect({ port, host: '127.0.0.1' });
    const chunks: Buffer[] = [];
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`no answer within ${timeoutMs} ms`));
    }, timeoutMs);
    socket.on('data', (d: Buffer) => chunks.push(d));
    // The server may close while the request is still being written (413 on a huge body).
    socket.on('error', () => undefined);
    socket.on('close', () => {
      clearTimeout(timer);
      const text = Buffer.concat(chunks).toString('utf8');
      const split = text.indexOf('\r\n\r\n');
      const m = /^HTTP\/1\.1 (\d{3})/.exec(text);
      resolve({ status: m ? Number(m[1]) : 0, headers: text.slice(0, split), body: split === -1 ? '' : text.slice(split + 4) });
    });
    socket.write(request);
  });
}

function post(path: string, body: Buffer | string, headers: Record<string, string> = {}): Buffer {
  const b = Buffer.isBuffer(body) ? body : Buffer.from(body, 'utf8');
  const h = { host: 'api.test', authorization: `Bearer ${(inst as SluiceInstance).account.apiKey}`, 'content-type': 'application/json', 'content-length': String(b.length), connection: 'close', ...headers };
  return Buffer.concat([Buffer.from(`POST ${path} HTTP/1.1\r\n${Object.entries(h).map(([k, v]) => `${k}: ${v}`).join('\r\n')}\r\n\r\n`), b]);
}

const get = (path: string | Buffer, extra = '') =>
  Buffer.concat([Buffer.from('GET '), Buffer.isBuffer(path) ? path : Buffer.from(path), Buffer.from(` HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${(inst as SluiceInstance).account.apiKey}\r\n${extra}Connection: close\r\n\r\n`)]);

/** Every key with its type-specific size: any write (new key, longer stream, changed hash) shows. */
async function snapshot(): Promise<{ dbsize: number; keys: Record<string, string> }> {
  const keys: Record<string, string> = {};
  for (const k of (await inspector.keys('*')).sort()) {
    const type = await inspector.type(k);
    const size = type === 'string' ? await inspector.strlen(k) : type === 'hash' ? await inspector.hlen(k) : type === 'zset' ? await inspector.zcard(k) : type === 'stream' ? await inspector.xlen(k) : type === 'set' ? await inspector.scard(k) : type === 'list' ? await inspector.llen(k) : -1;
    keys[k] = `${type}:${size}`;
  }
  return { dbsize: await inspector.dbsize(), keys };
}

/** A 4xx with a JSON { code, message, errors[] } body. */
function apiRefusal(a: RawAnswer, status: number, code: string | null, what: string): void {
  tally.tried++;
  assert.is(a.status, status, `${what}: ${a.status} ${a.body.slice(0, 200)}`);
  assert.match(a.headers, /content-type: application\/json/i, `${what}: JSON answer`);
  const body = JSON.parse(a.body) as { code: string; message: string; errors: unknown[] };
  if (code) assert.is(body.code, code, `${what}: code`);
  assert.type(body.message, 'string');
  assert.ok(Array.isArray(body.errors), `${what}: errors[]`);
  tally.refused++;
}

/** Keys added, removed or resized between two snapshots. */
function changed(a: Awaited<ReturnType<typeof snapshot>>, b: Awaited<ReturnType<typeof snapshot>>): string[] {
  const names = new Set([...Object.keys(a.keys), ...Object.keys(b.keys)]);
  return [...names].filter((k) => a.keys[k] !== b.keys[k]);
}

function trackingRefusal(a: RawAnswer, status: number, what: string): void {
  tally.tried++;
  assert.is(a.status, status, `${what}: ${a.status} ${a.body.slice(0, 200)}`);
  tally.refused++;
}

const message = { from: 'news@acme.example', to: 'someone@example.net', subject: 'hi', text: 'hello' };

test('HTTP API: malformed JSON, huge bodies, invalid UTF-8, traversal and header floods get a clear JSON 4xx, and nothing is written', async () => {
  const before = await snapshot();

  apiRefusal(await raw(apiPort, post('/v1/messages', '{"from": "news@acme.example", "to": ')), 400, 'SLUICE_INGRESS_BAD_JSON', 'truncated JSON');
  apiRefusal(await raw(apiPort, post('/v1/messages', '{from: news}')), 400, 'SLUICE_INGRESS_BAD_JSON', 'not JSON');
  apiRefusal(await raw(apiPort, post('/v1/messages', '[1,2,3]')), 400, 'SLUICE_INGRESS_BAD_REQUEST', 'JSON of the wrong shape');
  apiRefusal(await raw(apiPort, post('/v1/messages', '"' + '['.repeat(100_000))), 400, 'SLUICE_INGRESS_BAD_JSON', 'deeply nested garbage');
  apiRefusal(await raw(apiPort, post('/v1/messages/batch', JSON.stringify({ messages: [] }))), 400, 'SLUICE_INGRESS_BAD_REQUEST', 'empty batch');
  apiRefusal(await raw(apiPort, post('/v1/messages', JSON.stringify(message), { 'content-type': 'text/plain' })), 415, 'SLUICE_INGRESS_UNSUPPORTED_MEDIA', 'wrong content type');
  // Invalid UTF-8 inside a JSON string: refused, not decoded into U+FFFD and accepted.
  const badUtf8 = Buffer.concat([Buffer.from('{"from":"news@acme.example","to":"someone@example.net","subject":"caf'), Buffer.from([0xc3, 0x28, 0xff]), Buffer.from('","text":"x"}')]);
  apiRefusal(await raw(apiPort, post('/v1/messages', badUtf8)), 400, 'SLUICE_INGRESS_BAD_JSON', 'invalid UTF-8 in JSON');
  // Huge bodies: declared too large (refused before reading), and streamed chunked past the limit.
  apiRefusal(await raw(apiPort, post('/v1/messages', JSON.stringify(message), { 'content-length': String(50 * 1024 * 1024) })), 413, 'SLUICE_INGRESS_TOO_LARGE', 'declared 50 MB');
  const chunk = Buffer.alloc(256 * 1024, 0x20);
  const chunked = Buffer.concat([
    Buffer.from(`POST /v1/messages HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${(inst as SluiceInstance).account.apiKey}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n`),
    ...Array.from({ length: 8 }, () => Buffer.concat([Buffer.from(`${chunk.length.toString(16)}\r\n`), chunk, Buffer.from('\r\n')])),
    Buffer.from('0\r\n\r\n'),
  ]);
  apiRefusal(await raw(apiPort, chunked), 413, 'SLUICE_INGRESS_TOO_LARGE', '2 MB streamed chunked');
  // Path traversal, raw and encoded: nothing but 404.
  apiRefusal(await raw(apiPort, get('/v1/messages/../../../../etc/passwd')), 404, 'SLUICE_INGRESS_NOT_FOUND', 'raw ../ traversal');
  apiRefusal(await raw(apiPort, get('/v1/messages/..%2f..%2f..%2fetc%2fpasswd')), 404, 'SLUICE_INGRESS_NOT_FOUND', 'encoded traversal');
  apiRefusal(await raw(apiPort, get('/v1/messages/%2e%2e')), 404, 'SLUICE_INGRESS_NOT_FOUND', 'encoded ..');
  apiRefusal(await raw(apiPort, get(Buffer.concat([Buffer.from('/v1/messages/'), Buffer.from([0xff, 0xfe, 0x00])]))), 400, 'SLUICE_INGRESS_BAD_REQUEST', 'raw invalid bytes in the path');
  apiRefusal(await raw(apiPort, get('/v1/messages/%ff%fe')), 404, 'SLUICE_INGRESS_NOT_FOUND', 'encoded invalid UTF-8 id');
  // Header floods: many headers, and one huge header.
  const many = Array.from({ length: 5_000 }, (_, i) => `X-Flood-${i}: ${'v'.repeat(20)}\r\n`).join('');
  apiRefusal(await raw(apiPort, get('/v1/messages/x', many)), 431, 'SLUICE_INGRESS_BAD_REQUEST', '5,000 headers');
  apiRefusal(await raw(apiPort, get('/v1/messages/x', `X-Big: ${'b'.repeat(64 * 1024)}\r\n`)), 431, 'SLUICE_INGRESS_BAD_REQUEST', 'one 64 KB header');
  apiRefusal(await raw(apiPort, Buffer.from('THIS IS NOT HTTP\r\n\r\n')), 400, 'SLUICE_INGRESS_BAD_REQUEST', 'not HTTP at all');

  const after = await snapshot();
  tally.changedKeys += changed(before, after).length;
  assert.equal(changed(before, after), [], 'no key was written');
  assert.is(after.dbsize, before.dbsize, 'DBSIZE unchanged');
  // The server is still serving well-formed requests.
  const ok = await raw(apiPort, post('/v1/messages', JSON.stringify(message)));
  assert.is(ok.status, 202, `a well-formed request is accepted afterwards: ${ok.body}`);
});

test('tracking server: bad tokens, traversal, huge bodies, invalid bytes and header floods get a clear 4xx, and nothing is written', async () => {
  const before = await snapshot();
  const req = (line: Buffer | string, extra = '', body: Buffer | string = '') => {
    const b = Buffer.isBuffer(body) ? body : Buffer.from(body);
    return Buffer.concat([Buffer.isBuffer(line) ? line : Buffer.from(line), Buffer.from(` HTTP/1.1\r\nHost: t\r\n${extra}${b.length ? `Content-Length: ${b.length}\r\n` : ''}Connection: close\r\n\r\n`), b]);
  };
  trackingRefusal(await raw(trackingPort, req('GET /c/not-a-token')), 404, 'forged click token');
  trackingRefusal(await raw(trackingPort, req('GET /c/../../../etc/passwd')), 404, 'raw traversal on /c');
  trackingRefusal(await raw(trackingPort, req('GET /c/..%2f..%2fetc%2fpasswd')), 404, 'encoded traversal on /c');
  trackingRefusal(await raw(trackingPort, req('GET /u/%2e%2e%2f%2e%2e')), 404, 'encoded traversal on /u');
  trackingRefusal(await raw(trackingPort, req('GET /../../etc/passwd')), 404, 'traversal at the root');
  trackingRefusal(await raw(trackingPort, req('GET /c/%ff%fe%00')), 404, 'encoded invalid UTF-8 and NUL token');
  trackingRefusal(await raw(trackingPort, req(Buffer.concat([Buffer.from('GET /c/'), Buffer.from([0xff, 0xfe])]))), 400, 'raw invalid bytes in the path');
  trackingRefusal(await raw(trackingPort, req('POST /u/not-a-token', 'Content-Type: application/x-www-form-urlencoded\r\n', 'List-Unsubscribe=One-Click')), 404, 'one-click with a forged token');
  trackingRefusal(await raw(trackingPort, req('POST /u/not-a-token', 'Content-Type: application/x-www-form-urlencoded\r\n', Buffer.alloc(2 * 1024 * 1024, 0x61))), 404, '2 MB one-click body with a forged token');
  trackingRefusal(await raw(trackingPort, req('DELETE /c/x')), 405, 'method not allowed');
  const many = Array.from({ length: 5_000 }, (_, i) => `X-Flood-${i}: ${'v'.repeat(20)}\r\n`).join('');
  trackingRefusal(await raw(trackingPort, req('GET /c/x', many)), 431, '5,000 headers');
  trackingRefusal(await raw(trackingPort, req('GET /c/x', `Cookie: ${'c'.repeat(64 * 1024)}\r\n`)), 431, 'one 64 KB header');
  trackingRefusal(await raw(trackingPort, Buffer.from('\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 tls hello on plain http\r\n\r\n')), 400, 'a TLS hello on plain HTTP');
  // The pixel never fails (a broken image in a reader's mail is worse than a lost open), but a bad
  // token records nothing: the snapshot below shows it.
  const pixel = await raw(trackingPort, req('GET /o/%ff%fe.gif'));
  assert.is(pixel.status, 200, 'the pixel is served even for a bad token');
  await sleep(300); // opens are recorded after their answer, in batches

  const after = await snapshot();
  tally.changedKeys += changed(before, after).length;
  assert.equal(changed(before, after), [], 'no key was written');
  assert.is(after.dbsize, before.dbsize, 'DBSIZE unchanged');
  const health = await raw(trackingPort, req('GET /healthz'));
  assert.is(health.status, 200, 'the tracking server still serves');
});

test('afterwards: both servers healthy, the process exits cleanly', async () => {
  assert.is((await adminGet(sluice.ports.admin, '/healthz')).status, 200);
  await recordFigures('http_input', { bad_inputs_tried: tally.tried, refused_4xx: tally.refused, redis_keys_changed: tally.changedKeys });
  sluice.signal('SIGTERM');
  const exit = await sluice.waitExit(15_000);
  assert.is(exit.code, 0, `clean exit: ${sluice.stderr().slice(-500)}`);
});

test.run();
