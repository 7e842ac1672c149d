/**
 * Shape checks of the JSON records a render worker reads back (an API message spec, a campaign
 * template). Ingress or campaign preparation wrote them; these guard the worker against a corrupt or
 * foreign record, which becomes SLUICE_RENDER_FAILED instead of a crash.
 */
import { SluiceError } from '../core/errors.js';
import type { MailboxSpec } from './protocol.js';

export function renderFailed(message: string): SluiceError {
  return new SluiceError('SLUICE_RENDER_FAILED', message);
}

export function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

export function isMailbox(v: unknown): v is MailboxSpec {
  return isObject(v) && typeof v['address'] === 'string' && (v['name'] === undefined || typeof v['name'] === 'string');
}
