/**
 * Campaign preparation worker entry (piscina; prepare-pool.ts is its main-thread side). Imports only
 * the pure render modules and core: validating and compiling a campaign's templates is CPU work of
 * up to most of a second at the template limits, which the ingress thread must not do itself.
 */
import { isSluiceError } from '../core/errors.js';
import { prepareCampaign, type CampaignInput } from './campaign.js';
import type { PrepareResult } from './protocol.js';

export default function prepareTask(input: CampaignInput): PrepareResult {
  try {
    const { template, links } = prepareCampaign(input);
    return { ok: true, template, links };
  } catch (err) {
    if (isSluiceError(err)) return { ok: false, code: err.code, message: err.message, errors: [...err.errors] };
    // Anything else is a defect: piscina rejects the task with it, and the pool answers it as a failure.
    throw err;
  }
}
