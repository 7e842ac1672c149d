import { isDeepStrictEqual } from 'node:util';
import type { Logger } from 'pino';
import type { Config } from '../config/schema.js';
import { changedPaths } from '../config/diff.js';
import { AccountTable, type AccountRegistry, type DkimKeyMaterial } from '../accounts/registry.js';
import { OperatorRegistry } from '../accounts/operators.js';
import type { WorkerInit } from '../render/protocol.js';
import type { Dispatcher } from '../delivery/dispatcher.js';
import { trackingSettingsOf, type TrackingSettings } from '../tracking/deps.js';
import type { Metrics } from '../observability/metrics.js';
import { toSluiceError } from '../core/errors.js';

/**
 * A configuration reload (SIGHUP to `sluice start`): what an operator changes day to day takes
 * effect without a restart, which would close every SMTP session and make the dispatcher give its
 * connections up.
 *
 * Applied: `accounts` (domains, DKIM keys, API keys, SMTP users, quotas and rate limits, tracking
 * settings) and `operators`. DKIM key files are read again even when the file names did not change
 * (a key rotated in place); when any key differs, the render threads are replaced by new ones
 * started with the new keys (render/pool.ts replaceInit), and copies already handed to the old ones
 * are finished by them.
 *
 * All or nothing: the new accounts and operators are checked, and their key files read, before any
 * part is changed; a wrong one refuses the whole reload and the configuration in force stays.
 *
 * Every other setting differs only after a restart: the reload names the ones that changed
 * (restartNeeded) and applies the rest.
 */
export const RELOADABLE = ['accounts', 'operators'] as const;

export interface ReloadResult {
  /** Account ids added, removed and changed by the reload. */
  readonly accounts: { readonly added: string[]; readonly removed: string[]; readonly changed: string[] };
  readonly operatorsChanged: boolean;
  /** The render threads were replaced to sign with the DKIM keys read now. */
  readonly dkimKeysReplaced: boolean;
  /** Dotted paths of settings that changed but that only a restart applies (not applied). */
  readonly restartNeeded: string[];
}

export interface ReloadParts {
  /** The configuration Sluice started with. */
  readonly config: Config;
  readonly registry: AccountRegistry;
  readonly operators: OperatorRegistry;
  /** The render pool and what its threads were started with (role delivery). */
  readonly render: { readonly init: WorkerInit; replaceInit(init: WorkerInit): void } | null;
  readonly dispatcher: Pick<Dispatcher, 'setAccounts'> | null;
  readonly tracking: { updateSettings(settings: TrackingSettings): void } | null;
  readonly metrics: Pick<Metrics, 'configReloads' | 'configReloadSuccessful' | 'configLoadedAt'>;
  readonly logger: Logger;
}

function accountChanges(before: Config['accounts'], after: Config['accounts']): ReloadResult['accounts'] {
  const old = new Map(before.map((a) => [a.id, a]));
  const now = new Map(after.map((a) => [a.id, a]));
  return {
    added: [...now.keys()].filter((id) => !old.has(id)),
    removed: [...old.keys()].filter((id) => !now.has(id)),
    changed: [...now.keys()].filter((id) => old.has(id) && !isDeepStrictEqual(old.get(id), now.get(id))),
  };
}

export class ConfigReloader {
  readonly #p: ReloadParts;
  #inForce: Config;
  #keys: DkimKeyMaterial[];

  constructor(parts: ReloadParts) {
    this.#p = parts;
    this.#inForce = parts.config;
    this.#keys = parts.render?.init.keys ?? [];
    parts.metrics.configReloadSuccessful.set(1);
    parts.metrics.configLoadedAt.set(Math.floor(Date.now() / 1000));
  }

  /** The configuration in force: the start's, with the accounts and operators of the last reload applied. */
  get config(): Config {
    return this.#inForce;
  }

  /**
   * Applies `next` (loaded and validated as at start-up: config/load.ts loadConfig, or a function
   * that loads it, whose failure counts as a refused reload). Throws a
   * SluiceError, changing nothing, when an account, an operator or a DKIM key file is wrong.
   * Synchronous (key files are small): two reloads never interleave.
   */
  reload(next: Config | (() => Config)): ReloadResult {
    const { metrics, logger } = this.#p;
    try {
      // A file that does not load (YAML, an unknown key, a wrong value) is refused as a bad key file is.
      const result = this.#apply(typeof next === 'function' ? next() : next);
      metrics.configReloads.inc({ result: 'applied' });
      metrics.configReloadSuccessful.set(1);
      metrics.configLoadedAt.set(Math.floor(Date.now() / 1000));
      logger.info(result, result.restartNeeded.length > 0 ? 'configuration reloaded; some changed settings apply only after a restart' : 'configuration reloaded');
      return result;
    } catch (err) {
      metrics.configReloads.inc({ result: 'refused' });
      metrics.configReloadSuccessful.set(0);
      const e = toSluiceError(err);
      logger.error({ err: e, code: e.code }, 'configuration reload refused: the configuration in force is kept');
      throw e;
    }
  }

  #apply(next: Config): ReloadResult {
    const p = this.#p;
    const before = this.#inForce;
    // Everything is checked, and the key files read, before anything changes.
    const table = new AccountTable(next.accounts);
    const operators = OperatorRegistry.index(next.operators);
    const keys = p.render ? table.readDkimKeys() : [];
    const dkimKeysReplaced = p.render !== null && !isDeepStrictEqual(keys, this.#keys);
    const rest = (c: Config): Record<string, unknown> => {
      const copy: Record<string, unknown> = { ...c };
      for (const k of RELOADABLE) delete copy[k];
      return copy;
    };
    const result: ReloadResult = {
      accounts: accountChanges(before.accounts, next.accounts),
      operatorsChanged: !isDeepStrictEqual(before.operators, next.operators),
      dkimKeysReplaced,
      restartNeeded: changedPaths(rest(p.config), rest(next)),
    };

    p.registry.replace(table);
    p.operators.replace(operators);
    if (p.render && dkimKeysReplaced) {
      p.render.replaceInit({ ...p.render.init, keys });
      this.#keys = keys;
    }
    p.dispatcher?.setAccounts(next.accounts);
    p.tracking?.updateSettings(trackingSettingsOf(next.accounts));
    this.#inForce = Object.freeze({ ...before, accounts: next.accounts, operators: next.operators });
    return result;
  }
}
