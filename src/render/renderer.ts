/**
 * What a render worker does with one task, as a plain function (worker.ts only binds it to
 * piscina), so it can also be exercised in-process. Keys are parsed once when the renderer is
 * created; finished messages are kept in a small LRU per msgId, so a message sent to many
 * recipients is composed and signed once per worker rather than once per recipient.
 */
import { toDataBlock } from './data-block.js';
import { performance } from 'node:perf_hooks';
import { normaliseDomain } from '../core/address.js';
import { isSluiceError } from '../core/errors.js';
import { composeSpec, parseSpec } from './compose.js';
import { prepareSigner, signMessage, type DkimSigner } from './dkim.js';
import { ByteLru } from '../core/lru.js';
import { prepareRaw } from './raw.js';
import type { DkimAlgorithm, RenderResult, RenderTask, WorkerInit } from './protocol.js';

export interface RendererOptions {
  /** Finished messages kept per worker. 128 covers the messages a busy dispatcher interleaves. */
  cacheEntries?: number;
  /** Byte bound of that cache: 32 MiB per worker keeps even 16 workers well under 1 GiB. */
  cacheBytes?: number;
}

export type RenderFn = (task: RenderTask) => Promise<RenderResult>;

interface Finished {
  readonly message: Buffer;
  readonly signatures: DkimAlgorithm[];
  readonly byteLength: number;
}

export function createRenderer(init: WorkerInit, opts: RendererOptions = {}): RenderFn {
  const signers = new Map<string, DkimSigner[]>();
  const badKeys = new Map<string, string>();
  for (const k of init.keys) {
    const domain = normaliseDomain(k.domain) ?? k.domain.toLowerCase();
    try {
      const s = prepareSigner(k);
      signers.set(domain, [...(signers.get(domain) ?? []), s]);
    } catch (err) {
      // Remembered per domain: its mail fails with SLUICE_DKIM_KEY_INVALID (a 4xx, so it is retried
      // once the operator fixes the key) instead of going out unsigned or signed with fewer keys than
      // configured — unsigned mail from a domain with a DMARC policy would be rejected or junked.
      badKeys.set(domain, (err as Error).message);
    }
  }
  const cache = new ByteLru<Finished>(opts.cacheEntries ?? 128, opts.cacheBytes ?? 32 * 1024 * 1024);

  return async (task) => {
    const started = performance.now();
    try {
      if (!isTask(task)) return { ok: false, code: 'SLUICE_RENDER_FAILED', message: 'malformed render task' };
      const domain = task.signingDomain === null ? null : (normaliseDomain(task.signingDomain) ?? null);
      if (domain !== null) {
        const bad = badKeys.get(domain);
        if (bad !== undefined) return { ok: false, code: 'SLUICE_DKIM_KEY_INVALID', message: bad };
      }
      const cacheKey = `${task.kind}\0${task.msgId}\0${domain ?? ''}`;
      const hit = cache.get(cacheKey);
      if (hit) {
        return { ok: true, ...frameIf(task.frame === true, hit.message), signatures: hit.signatures, signMs: 0, renderMs: performance.now() - started };
      }

      const unsigned =
        task.kind === 'raw'
          ? prepareRaw(toBuffer(task.source), task.msgId, init.hostname, task.acceptedAt)
          : await composeSpec(parseSpec(typeof task.source === 'string' ? task.source : toBuffer(task.source).toString('utf8')), task.acceptedAt);
      const rendered = performance.now();
      const { signed, algorithms } = signMessage(unsigned, (domain !== null && signers.get(domain)) || []);
      const done = performance.now();
      cache.set(cacheKey, { message: signed, signatures: algorithms, byteLength: signed.length });
      return {
        ok: true,
        ...frameIf(task.frame === true, signed),
        signatures: algorithms,
        signMs: algorithms.length > 0 ? done - rendered : 0,
        renderMs: rendered - started,
      };
    } catch (err) {
      if (isSluiceError(err, 'SLUICE_DKIM_KEY_INVALID')) return { ok: false, code: 'SLUICE_DKIM_KEY_INVALID', message: err.message };
      return { ok: false, code: 'SLUICE_RENDER_FAILED', message: err instanceof Error ? err.message : String(err) };
    }
  };
}

function frameIf(frame: boolean, message: Buffer): { message: Uint8Array; framed: boolean; eightBit: boolean | null } {
  if (!frame) return { message, framed: false, eightBit: null };
  const block = toDataBlock(message);
  return { message: block.bytes, framed: true, eightBit: block.eightBit };
}

function toBuffer(source: Uint8Array | string): Buffer {
  if (typeof source === 'string') return Buffer.from(source, 'utf8');
  // A Uint8Array that crossed postMessage is not a Buffer; view the same memory instead of copying.
  return Buffer.isBuffer(source) ? source : Buffer.from(source.buffer, source.byteOffset, source.byteLength);
}

// The id becomes the left side of a Message-ID, so it must be a plain dot-atom-ish token.
const MSG_ID_RE = /^[A-Za-z0-9._+-]{1,128}$/;

function isTask(t: unknown): t is RenderTask {
  if (typeof t !== 'object' || t === null) return false;
  const r = t as Record<string, unknown>;
  return (
    typeof r['msgId'] === 'string' &&
    MSG_ID_RE.test(r['msgId']) &&
    (r['kind'] === 'raw' || r['kind'] === 'spec') &&
    (typeof r['source'] === 'string' || r['source'] instanceof Uint8Array) &&
    (r['signingDomain'] === null || typeof r['signingDomain'] === 'string') &&
    typeof r['acceptedAt'] === 'number' &&
    Number.isFinite(r['acceptedAt'])
  );
}
