/**
 * Render worker entry (piscina). Imports only the pure render modules and core; no Redis, logger,
 * metrics or config. The renderer — parsed DKIM keys and the message cache — lives at module level,
 * so it is built once per thread from `workerData` (a WorkerInit).
 */
import { workerData } from 'node:worker_threads';
import { move, transferableSymbol, valueSymbol } from 'piscina';
import { lowerThreadPriority } from '../core/thread-priority.js';
import { createRenderer } from './renderer.js';
import type { RenderResult, RenderTask, WorkerInit } from './protocol.js';

const init = workerData as WorkerInit;
// delivery.pool.nice: this thread yields to the main thread, which serves every connection.
if (init.nice !== undefined) lowerThreadPriority(init.nice);
const render = createRenderer(init);

/**
 * The message goes back as a transfer, not a structured-clone copy. It is copied once into an
 * ArrayBuffer of its own first: the cached original must stay usable here, and transferring a
 * buffer detaches it (a pooled Buffer would even take its neighbours along).
 */
export default async function renderTask(task: RenderTask): Promise<unknown> {
  const result: RenderResult = await render(task);
  if (!result.ok) return result;
  const own = ownMemory(result.message, result.owned === true);
  const moved: RenderResult = { ...result, message: own };
  return move({ [transferableSymbol]: [own.buffer], [valueSymbol]: moved });
}

/**
 * Several tasks in one message each way: a claimed batch of recipients costs one postMessage and
 * one structured clone rather than one per recipient (the per-task cost was ~10 % of the delivery
 * thread in bench/e2e.ts).
 */
export async function renderBatch(tasks: RenderTask[]): Promise<unknown> {
  const results: RenderResult[] = [];
  const transfer: ArrayBuffer[] = [];
  for (const r of await render.many(tasks)) {
    if (r.ok) {
      const own = ownMemory(r.message, r.owned === true);
      transfer.push(own.buffer as ArrayBuffer);
      results.push({ ...r, message: own });
    } else results.push(r);
  }
  return move({ [transferableSymbol]: transfer, [valueSymbol]: results });
}

/**
 * Memory that can be transferred: what the renderer says is the result's own (a DATA block, a copy
 * nobody caches) moves as it is when it fills its ArrayBuffer; anything else (the cached signed
 * message, a pooled small Buffer) is copied first, since transferring detaches the whole ArrayBuffer.
 */
function ownMemory(m: Uint8Array, owned: boolean): Uint8Array {
  if (owned && m.byteOffset === 0 && m.byteLength === m.buffer.byteLength) return m;
  const own = new Uint8Array(m.byteLength);
  own.set(m);
  return own;
}
