/**
 * Render worker entry (piscina). Imports only the pure render modules and core; no Redis, logger,
 * metrics or config. The renderer — parsed DKIM keys and the message cache — lives at module level,
 * so it is built once per thread from `workerData` (a WorkerInit).
 */
import { workerData } from 'node:worker_threads';
import { move, transferableSymbol, valueSymbol } from 'piscina';
import { createRenderer } from './renderer.js';
import type { RenderResult, RenderTask, WorkerInit } from './protocol.js';

const render = createRenderer(workerData as WorkerInit);

/**
 * The message goes back as a transfer, not a structured-clone copy. It is copied once into an
 * ArrayBuffer of its own first: the cached original must stay usable here, and transferring a
 * buffer detaches it (a pooled Buffer would even take its neighbours along).
 */
export default async function renderTask(task: RenderTask): Promise<unknown> {
  const result: RenderResult = await render(task);
  if (!result.ok) return result;
  const own = new Uint8Array(result.message.byteLength);
  own.set(result.message);
  const moved: RenderResult = { ...result, message: own };
  return move({ [transferableSymbol]: [own.buffer], [valueSymbol]: moved });
}
