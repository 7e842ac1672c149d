import { isDeepStrictEqual } from 'node:util';
import type { Logger } from 'pino';
import type { Config } from '../config/schema.js';
import { changedPaths } from '../config/diff.js';
import { AccountTable, bounceDomainsOf, type AccountRegistry, type DkimKeyMaterial } from '../accounts/registry.js';
import { OperatorRegistry } from '../accounts/operators.js';
import type { WorkerInit } from '../render/protocol.js';
import { bindAddressesOf, checkBindable } from '../delivery/bind.js';
import { queueMaxAgeMs } from '../ingress/persist.js';
import { trackingSettingsOf, type TrackingSettings } from '../tracking/deps.js';
import type { Metrics } from '../observability/metrics.js';
import { toSluiceError } from '../core/errors.js';
import { createTokenCodec, type TokenCodec } from '../core/tokens.js';
import { readTokenKeys, workerTracking, type TokenKeys } from './token-keys.js';
import type { AuditEntry } from '../store/audit.js';
import { checkTlsPair, loadOrCreateTls } from '../ingress/tls.js';
import type { TlsMaterial } from '../core/tls-material.js';

/**
 * A configuration reload (SIGHUP to `sluice start`): what an operator changes day to day takes
 * effect without a restart, which would close every SMTP session and make the dispatcher give its
 * connections up.
 *
 * Applied:
 * - `accounts` (domains, DKIM keys, API keys, SMTP users, quotas and rate limits, tracking settings).
 *   DKIM key files are read again even when the file names did not change (a key rotated in place);
 *   when any key differs, the render threads are replaced by new ones started with the new keys
 *   (render/pool.ts replaceInit), and copies already handed to the old ones are finished by them.
 * - `operators`.
 * - `shaping`: destinations served from then on are matched and limited by the new rules; an open
 *   connection keeps its limits until it ends. Not when the largest maxAge grows: how long address
 *   references and queued messages' records are kept was sized by it at start-up (ingress/persist.ts),
 *   so mail could outlive them; the section then stays as it was and is listed as restartNeeded.
 * - `delivery.transport`: routes are looked up again (the resolver's cache is dropped).
 * - `tracking.keys` and `tracking.signWith` (key files read again, as DKIM's): the tracking server
 *   and its recorder thread verify with the new keys from the next request, the inbound MX the
 *   mailto unsubscribe tokens, and the render threads sign with the new signWith key (replaced as
 *   for DKIM). Not from none to some or back: publicBaseUrl and the tracking role were set up at
 *   start for them; that is named as restartNeeded.
 * - `log.level`: set on the root logger, whose children (made without a level of their own) take
 *   it at once.
 * - STARTTLS key and certificate of submission and of the feedback MX (`ingress.smtp.tlsKey/tlsCert`,
 *   `feedback.tlsKey/tlsCert`), read again: a renewed certificate is used from the next handshake.
 *
 * All or nothing: the new accounts and operators are checked, their key files read and the new
 * rules' source addresses tried (with the delivery role) before any part is changed; a wrong one
 * refuses the whole reload and the configuration in force stays.
 *
 * Every other setting differs only after a restart: the reload names the ones that changed
 * (restartNeeded) and applies the rest.
 */
export interface ReloadResult {
  /** Account ids added, removed and changed by the reload. */
  readonly accounts: { readonly added: string[]; readonly removed: string[]; readonly changed: string[] };
  readonly operatorsChanged: boolean;
  /** The render threads were replaced to sign with the DKIM keys read now. */
  readonly dkimKeysReplaced: boolean;
  /** The shaping rules changed and are in force. */
  readonly shapingChanged: boolean;
  /** The transport map changed and is in force. */
  readonly transportChanged: boolean;
  /** Token keys (or the signing key) changed and are in force. */
  readonly tokenKeysChanged: boolean;
  /** The new log level, when it changed. */
  readonly logLevel: string | null;
  /** The servers whose STARTTLS key and certificate changed and are in force. */
  readonly tlsReplaced: ('submission' | 'feedback')[];
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
  /** The dispatcher and its resolver (role delivery). */
  readonly delivery: {
    setAccounts(accounts: Config['accounts']): void;
    setShaping(shaping: Config['shaping']): void;
    setTransport(transport: Config['delivery']['transport']): void;
  } | null;
  readonly tracking: { updateSettings(settings: TrackingSettings): void } | null;
  /** The feedback MX (role feedback): the bounce domains it takes, return-path domains of accounts included. */
  readonly feedback?: { setBounceDomains(domains: readonly string[]): void } | null;
  /** The token keys in force (tracking.keys), and what takes new ones; null when none are configured. */
  readonly tokens: { readonly keys: TokenKeys; apply(keys: TokenKeys, codec: TokenCodec): void } | null;
  readonly metrics: Pick<Metrics, 'configReloads' | 'configReloadSuccessful' | 'configLoadedAt'>;
  readonly logger: Logger;
  /** Sets the level of the root logger (pino: the children made without a level follow it). */
  readonly setLogLevel: (level: Config['log']['level']) => void;
  /** The STARTTLS servers of this process, the pair each uses, and how to give it a new one. */
  readonly tlsServers: readonly { readonly name: 'submission' | 'feedback'; readonly tls: TlsMaterial; updateTls(tls: TlsMaterial): void }[];
  /** Writes an applied reload's entries to the audit log (store/audit.ts); a failure is only logged. */
  readonly audit?: (entries: readonly AuditEntry[]) => Promise<void>;
}

/**
 * The audit log's record of an applied reload (actor `reload`, from how it was asked: `sighup`):
 * `config.reload` with what changed as the target (`accounts,dkim,shaping`…, or `none`), and
 * `account.config` per account added, removed or changed (target `added`, `removed`, `changed`), so
 * an account's log shows when its keys or domains changed by configuration.
 */
export function reloadAudit(r: ReloadResult, from: string): AuditEntry[] {
  const parts = [
    r.accounts.added.length + r.accounts.removed.length + r.accounts.changed.length > 0 ? 'accounts' : null,
    r.operatorsChanged ? 'operators' : null,
    r.dkimKeysReplaced ? 'dkim' : null,
    r.shapingChanged ? 'shaping' : null,
    r.transportChanged ? 'transport' : null,
    r.tokenKeysChanged ? 'tracking_keys' : null,
    r.tlsReplaced.length > 0 ? 'tls' : null,
    r.logLevel !== null ? 'log_level' : null,
  ].filter((x): x is string => x !== null);
  const entry = (action: string, account: string, target: string): AuditEntry => ({ actor: 'reload', action, account, target, from });
  return [
    entry('config.reload', '', parts.length > 0 ? parts.join(',') : 'none'),
    ...r.accounts.added.map((id) => entry('account.config', id, 'added')),
    ...r.accounts.removed.map((id) => entry('account.config', id, 'removed')),
    ...r.accounts.changed.map((id) => entry('account.config', id, 'changed')),
  ];
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

/**
 * The keys a reload applies, as paths: what is compared to name the changes that need a restart
 * (everything but these) and what the configuration in force takes from the new one (these), from one
 * list. Each is applied in #apply; a key added here without that is a bug.
 */
export const RELOADABLE = [
  'accounts', 'operators', 'shaping', 'delivery.transport', 'tracking.keys', 'tracking.signWith',
  'ingress.smtp.tlsKey', 'ingress.smtp.tlsCert', 'feedback.tlsKey', 'feedback.tlsCert', 'log.level',
] as const;
type ReloadablePath = (typeof RELOADABLE)[number];
type Tree = Record<string, unknown>;

/** `config` without the reloadable keys: what is left differs only after a restart. */
export function restartOnly(config: Config): Tree {
  const out: Tree = { ...config };
  for (const path of RELOADABLE) {
    const keys = path.split('.');
    let node = out;
    for (const k of keys.slice(0, -1)) node = node[k] = { ...(node[k] as Tree) };
    delete node[keys[keys.length - 1] as string];
  }
  return out;
}

/** `base` with the values at `paths` taken from `from`; every object copied on the way is frozen, as the configuration is. */
function withValuesOf(base: Config, from: Config, paths: readonly ReloadablePath[]): Config {
  const out: Tree = { ...base };
  const copies: Tree[] = [out];
  for (const path of paths) {
    const keys = path.split('.');
    let node = out;
    let source = from as unknown as Tree;
    for (const k of keys.slice(0, -1)) {
      // A level copied once for all the paths under it.
      if (!copies.includes(node[k] as Tree)) copies.push((node[k] = { ...(node[k] as Tree) }));
      node = node[k] as Tree;
      source = source[k] as Tree;
    }
    const last = keys[keys.length - 1] as string;
    node[last] = source[last];
  }
  for (const c of copies) Object.freeze(c);
  return out as unknown as Config;
}

export class ConfigReloader {
  readonly #p: ReloadParts;
  #inForce: Config;
  #keys: DkimKeyMaterial[];
  /** What the render threads in force were started with. */
  #init: WorkerInit | null;
  #tokenKeys: TokenKeys | null;
  /** The STARTTLS pair each server uses now. */
  readonly #tls = new Map<'submission' | 'feedback', TlsMaterial>();
  /** The reload running: a second SIGHUP meanwhile waits for it, then reads the file again. */
  #last: Promise<unknown> = Promise.resolve();

  constructor(parts: ReloadParts) {
    this.#p = parts;
    this.#inForce = parts.config;
    this.#keys = parts.render?.init.keys ?? [];
    this.#init = parts.render?.init ?? null;
    this.#tokenKeys = parts.tokens?.keys ?? null;
    for (const t of parts.tlsServers) this.#tls.set(t.name, t.tls);
    parts.metrics.configReloadSuccessful.set(1);
    parts.metrics.configLoadedAt.set(Math.floor(Date.now() / 1000));
  }

  /** The configuration in force: the start's, with what the reloads applied. */
  get config(): Config {
    return this.#inForce;
  }

  /**
   * Applies `next` (loaded and validated as at start-up: config/load.ts loadConfig, or a function
   * that loads it, whose failure counts as a refused reload). Rejects with a SluiceError, changing
   * nothing, when an account, an operator, a DKIM or tracking key file, a STARTTLS pair or a rule's
   * source address is wrong. Reloads run one after another.
   */
  reload(next: Config | (() => Config), from = 'sighup'): Promise<ReloadResult> {
    const run = this.#last.then(() => this.#reload(next, from));
    this.#last = run.catch(() => undefined);
    return run;
  }

  async #reload(next: Config | (() => Config), from: string): Promise<ReloadResult> {
    const { metrics, logger } = this.#p;
    let result: ReloadResult;
    try {
      // A file that does not load (YAML, an unknown key, a wrong value) is refused as a bad key file is.
      result = await this.#apply(typeof next === 'function' ? next() : next);
      metrics.configReloads.inc({ result: 'applied' });
      metrics.configReloadSuccessful.set(1);
      metrics.configLoadedAt.set(Math.floor(Date.now() / 1000));
      // A changed setting left as it was must be seen where only warnings are logged.
      if (result.restartNeeded.length > 0) logger.warn(result, 'configuration reloaded; some changed settings apply only after a restart');
      else logger.info(result, 'configuration reloaded');
    } catch (err) {
      metrics.configReloads.inc({ result: 'refused' });
      metrics.configReloadSuccessful.set(0);
      const e = toSluiceError(err);
      logger.error({ err: e, code: e.code }, 'configuration reload refused: the configuration in force is kept');
      throw e;
    }
    // Applied: the audit entries follow (Redis may be down; the reload stands either way).
    await this.#p.audit?.(reloadAudit(result, from)).catch((err: unknown) => logger.warn({ err }, 'the reload could not be written to the audit log'));
    return result;
  }

  async #apply(next: Config): Promise<ReloadResult> {
    const p = this.#p;
    const before = this.#inForce;
    // Everything is checked, and the key files read, before anything changes.
    const table = new AccountTable(next.accounts);
    const operators = OperatorRegistry.index(next.operators);
    const keys = p.render ? table.readDkimKeys() : [];
    const dkimKeysReplaced = p.render !== null && !isDeepStrictEqual(keys, this.#keys);
    const restartNeeded = changedPaths(restartOnly(p.config), restartOnly(next));
    let shaping = next.shaping;
    if (!isDeepStrictEqual(before.shaping, next.shaping) && queueMaxAgeMs(next) > queueMaxAgeMs(p.config)) {
      restartNeeded.push(...changedPaths(before.shaping, next.shaping, 'shaping'));
      shaping = before.shaping;
    }
    const shapingChanged = !isDeepStrictEqual(before.shaping, shaping);
    if (shapingChanged && p.delivery) await checkBindable(bindAddressesOf({ delivery: before.delivery, shaping }));
    const transportChanged = !isDeepStrictEqual(before.delivery.transport, next.delivery.transport);
    // Token keys: read (and a codec made, which checks them) now; none ↔ some needs a restart.
    let tokens: { keys: TokenKeys; codec: TokenCodec } | null = null;
    if ((this.#tokenKeys === null) !== (next.tracking.keys.length === 0)) restartNeeded.push('tracking.keys');
    else if (this.#tokenKeys !== null) {
      const read = readTokenKeys(next) as TokenKeys;
      if (!isDeepStrictEqual(read, this.#tokenKeys)) tokens = { keys: read, codec: createTokenCodec(read) };
    }
    // STARTTLS pairs: read (the files, or the generated pair) and checked now.
    const tlsNext: { server: ReloadParts['tlsServers'][number]; tls: TlsMaterial }[] = [];
    for (const server of p.tlsServers) {
      // Where a generated pair lives (instance.dataDir) and its name (instance.hostname) take a restart:
      // the pair in force is looked for where it was made.
      const tls = await loadOrCreateTls({ ...next, instance: p.config.instance }, server.name);
      const now = this.#tls.get(server.name);
      if (now && tls.key.equals(now.key) && tls.cert.equals(now.cert)) continue;
      checkTlsPair(tls, server.name === 'feedback' ? 'feedback' : 'ingress.smtp');
      tlsNext.push({ server, tls });
    }
    let init = this.#init;
    if (init && dkimKeysReplaced) init = { ...init, keys };
    // The render threads' tracking as start-up makes it (workerTracking), from the new keys; the rest
    // of it (publicBaseUrl, bounce domain, unsubscribe key) needs a restart, so is the start's.
    if (init?.tracking && tokens) init = { ...init, tracking: workerTracking(p.config, tokens.keys, init.tracking.unsubscribeKey) ?? init.tracking };

    p.registry.replace(table);
    p.operators.replace(operators);
    if (p.render && init && init !== this.#init) {
      p.render.replaceInit(init);
      this.#init = init;
      this.#keys = init.keys;
    }
    if (tokens) {
      p.tokens?.apply(tokens.keys, tokens.codec);
      this.#tokenKeys = tokens.keys;
    }
    for (const { server, tls } of tlsNext) {
      server.updateTls(tls);
      this.#tls.set(server.name, tls);
    }
    const logLevel = next.log.level !== before.log.level ? next.log.level : null;
    if (logLevel !== null) p.setLogLevel(logLevel);
    p.delivery?.setAccounts(next.accounts);
    // delivery.bounceDomain and feedback.extraBounceDomains as started (restart-only), the accounts' return paths as reloaded.
    p.feedback?.setBounceDomains(bounceDomainsOf({ ...p.config, accounts: next.accounts }));
    if (shapingChanged) p.delivery?.setShaping(shaping);
    if (transportChanged) p.delivery?.setTransport(next.delivery.transport);
    p.tracking?.updateSettings(trackingSettingsOf(next.accounts));
    // What stayed as it was: shaping whose largest maxAge grew, token keys going none ↔ some (named in restartNeeded).
    const kept = new Set<ReloadablePath>([...(shaping === next.shaping ? [] : ['shaping' as const]), ...(tokens ? [] : ['tracking.keys' as const, 'tracking.signWith' as const])]);
    this.#inForce = withValuesOf(before, next, RELOADABLE.filter((path) => !kept.has(path)));
    return {
      accounts: accountChanges(before.accounts, next.accounts),
      operatorsChanged: !isDeepStrictEqual(before.operators, next.operators),
      dkimKeysReplaced, shapingChanged, transportChanged, tokenKeysChanged: tokens !== null,
      tlsReplaced: tlsNext.map((t) => t.server.name),
      logLevel,
      restartNeeded: restartNeeded.sort(),
    };
  }
}
