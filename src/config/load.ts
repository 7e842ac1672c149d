import { readFileSync } from 'node:fs';
import { dirname, isAbsolute, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { hostname } from 'node:os';
import { isIP } from 'node:net';
import { addressScope } from '../core/public-address.js';
import YAML from 'yaml';
import { SluiceError, type FieldError } from '../core/errors.js';
import { configSchema, type Config } from './schema.js';
import { redactUrlCredentials } from '../core/redact-url.js';

/**
 * Load order: config/default.yaml, then the operator's file (--config or SLUICE_CONFIG), then the
 * environment, then `overrides` (tests). Validated once, then deep-frozen.
 *
 * Environment: REDIS_URL → redis.url, SLUICE_LOG_LEVEL → log.level, and any key by path as
 * SLUICE__SECTION__KEY (double underscores between path parts, camelCase kept), parsed as YAML.
 */

export const DEFAULT_CONFIG_FILE = fileURLToPath(new URL('../../config/default.yaml', import.meta.url));

export interface LoadOptions {
  file?: string | undefined;
  env?: NodeJS.ProcessEnv;
  overrides?: unknown;
}

type Tree = Record<string, unknown>;

function isPlainObject(v: unknown): v is Tree {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Deep merge: objects merge key by key; arrays and scalars replace. */
export function merge(base: unknown, over: unknown): unknown {
  if (over === undefined) return base;
  if (!isPlainObject(base) || !isPlainObject(over)) return over;
  const out: Tree = { ...base };
  for (const [k, v] of Object.entries(over)) out[k] = merge(base[k], v);
  return out;
}

function readYaml(file: string): unknown {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new SluiceError('SLUICE_CONFIG_INVALID', `cannot read config file ${file}: ${(err as Error).message}`, { cause: err });
  }
  try {
    return YAML.parse(text, { prettyErrors: true }) ?? {};
  } catch (err) {
    throw new SluiceError('SLUICE_CONFIG_INVALID', `config file ${file} is not valid YAML: ${(err as Error).message}`, { cause: err });
  }
}

/**
 * Environment names are upper case by custom; config keys are camelCase. Each part of a
 * SLUICE__A__B path is matched case-insensitively against the keys of the defaults (which hold every
 * key), so SLUICE__ADMIN__PORT and SLUICE__delivery__claimBatch both work; a part that matches
 * nothing is kept as given. `unknownAt`: the index of the first part that an object of the defaults
 * with keys of its own does not have (an empty one, delivery.transport, a record of the operator's
 * own keys, takes any key), or that goes below a value or into a list (`into`: which), else null. A
 * list is set whole (its YAML as the value): an element set alone would replace the file's list.
 */
function keyPath(parts: string[], defaults: unknown): { path: string[]; unknownAt: number | null; into: 'list' | 'value' | null } {
  let node = defaults;
  let unknownAt: number | null = null;
  let into: 'list' | 'value' | null = null;
  const path = parts.map((part, i) => {
    if (unknownAt === null && node !== undefined && node !== null && !isPlainObject(node)) {
      unknownAt = i;
      into = Array.isArray(node) ? 'list' : 'value';
    }
    const known = isPlainObject(node) ? Object.keys(node).find((k) => k.toLowerCase() === part.toLowerCase()) : undefined;
    if (known === undefined && unknownAt === null && isPlainObject(node) && Object.keys(node).length > 0) unknownAt = i;
    node = known !== undefined && isPlainObject(node) ? node[known] : undefined;
    return known ?? part;
  });
  return { path, unknownAt, into };
}

/**
 * The environment's layer, and an error for each SLUICE__ variable whose value is not YAML (named
 * with the config path it sets; its value is not repeated, it may be a secret).
 */
function envLayer(env: NodeJS.ProcessEnv, defaults: unknown): { layer: Tree; errors: FieldError[]; sources: Map<string, string> } {
  let layer: Tree = {};
  const errors: FieldError[] = [];
  const sources = new Map<string, string>();
  const set = (path: string[], value: unknown, name: string) => {
    sources.set(path.join('.'), name);
    let obj: unknown = value;
    for (let i = path.length - 1; i >= 0; i--) obj = { [path[i] as string]: obj };
    layer = merge(layer, obj) as Tree;
  };
  if (env['REDIS_URL']) set(['redis', 'url'], env['REDIS_URL'], 'REDIS_URL');
  if (env['SLUICE_LOG_LEVEL']) set(['log', 'level'], env['SLUICE_LOG_LEVEL'], 'SLUICE_LOG_LEVEL');
  for (const [name, value] of Object.entries(env)) {
    if (!name.startsWith('SLUICE__') || value === undefined) continue;
    const { path, unknownAt: unknown, into } = keyPath(name.slice('SLUICE__'.length).split('__').filter(Boolean), defaults);
    if (path.length === 0) continue;
    if (into !== null && unknown !== null) {
      const at = path.slice(0, unknown).join('.');
      errors.push({
        path: at,
        message: into === 'list'
          ? `environment variable ${name} sets an element of the list ${at}: a list is set whole, as YAML (${name.split('__').slice(0, unknown + 1).join('__')}='[…]')`
          : `environment variable ${name} goes below ${at}, which is a single value, not a section`,
      });
      continue;
    }
    if (unknown !== null) {
      // The schema refuses the key too ("unknown key(s)"), under its parent: this says which variable set it.
      errors.push({ path: path.slice(0, unknown + 1).join('.'), message: `environment variable ${name} names no config key (${path.slice(0, unknown + 1).join('.')}); see config/default.yaml` });
      continue;
    }
    let parsed: unknown;
    try {
      parsed = YAML.parse(value);
    } catch (err) {
      // The first line says what and where ("… at line 1, column 3:"); the rest quotes the value.
      const why = ((err as Error).message.split('\n')[0] ?? '').replace(/:$/, '');
      errors.push({ path: path.join('.'), message: `environment variable ${name} is not valid YAML: ${why}` });
      continue;
    }
    set(path, parsed, name);
  }
  return { layer, errors, sources };
}

/** Paths in the config that name files; made absolute relative to the file that set them. */
function resolvePaths(tree: unknown, baseDir: string): void {
  if (!isPlainObject(tree)) return;
  const inst = tree['instance'];
  if (isPlainObject(inst) && typeof inst['dataDir'] === 'string' && !isAbsolute(inst['dataDir'])) {
    inst['dataDir'] = resolve(baseDir, inst['dataDir']);
  }
  const ingress = tree['ingress'];
  for (const holder of [isPlainObject(ingress) ? ingress['smtp'] : undefined, tree['feedback']]) {
    if (!isPlainObject(holder)) continue;
    for (const k of ['tlsKey', 'tlsCert']) {
      const v = holder[k];
      if (typeof v === 'string' && !isAbsolute(v)) holder[k] = resolve(baseDir, v);
    }
  }
  const webhooks = tree['webhooks'];
  if (isPlainObject(webhooks) && typeof webhooks['secretKeyFile'] === 'string' && !isAbsolute(webhooks['secretKeyFile'])) {
    webhooks['secretKeyFile'] = resolve(baseDir, webhooks['secretKeyFile']);
  }
  const tracking = tree['tracking'];
  if (isPlainObject(tracking) && Array.isArray(tracking['keys'])) {
    for (const k of tracking['keys']) {
      if (isPlainObject(k) && typeof k['secretFile'] === 'string' && !isAbsolute(k['secretFile'])) k['secretFile'] = resolve(baseDir, k['secretFile']);
    }
  }
  const accounts = tree['accounts'];
  if (Array.isArray(accounts)) {
    for (const acc of accounts) {
      if (!isPlainObject(acc) || !Array.isArray(acc['domains'])) continue;
      for (const d of acc['domains']) {
        if (!isPlainObject(d) || !Array.isArray(d['dkim'])) continue;
        for (const k of d['dkim']) {
          if (isPlainObject(k) && typeof k['keyFile'] === 'string' && !isAbsolute(k['keyFile'])) {
            k['keyFile'] = resolve(baseDir, k['keyFile']);
          }
        }
      }
    }
  }
}

function deepFreeze<T>(obj: T): T {
  if (typeof obj === 'object' && obj !== null && !Object.isFrozen(obj)) {
    Object.freeze(obj);
    for (const v of Object.values(obj)) deepFreeze(v);
  }
  return obj;
}

export function loadConfig(opts: LoadOptions = {}): Config {
  const env = opts.env ?? process.env;
  const defaults = readYaml(DEFAULT_CONFIG_FILE);
  // The defaults' dataDir is relative to the working directory, not to the package.
  resolvePaths(defaults, process.cwd());
  const file = opts.file ?? env['SLUICE_CONFIG'];
  let tree = defaults;
  if (file) {
    const layer = readYaml(file);
    if (!isPlainObject(layer)) throw new SluiceError('SLUICE_CONFIG_INVALID', `config file ${file} must hold a mapping`);
    resolvePaths(layer, dirname(resolve(file)));
    tree = merge(tree, layer);
  }
  const fromEnv = envLayer(env, defaults);
  tree = merge(tree, fromEnv.layer);
  if (opts.overrides !== undefined) tree = merge(tree, opts.overrides);
  return validateConfig(tree, file, fromEnv.errors, fromEnv.sources);
}

/**
 * `earlier`: errors found before the schema (unreadable environment values), reported with its own.
 * `fromEnv`: config path → the environment variable that set it; an error at or under that path
 * names the variable (the file may hold a good value the variable replaced).
 */
export function validateConfig(tree: unknown, source?: string, earlier: readonly FieldError[] = [], fromEnv: ReadonlyMap<string, string> = new Map()): Config {
  const result = configSchema.safeParse(tree);
  if (!result.success || earlier.length > 0) {
    const setBy = (path: (string | number | symbol)[]): string => {
      for (let n = path.length; n > 0; n--) {
        const name = fromEnv.get(path.slice(0, n).map(String).join('.'));
        if (name) return ` (set by the environment variable ${name})`;
      }
      return '';
    };
    const errors = [
      ...earlier,
      ...(result.error?.issues ?? []).map((i) => ({
        path: i.path.map(String).join('.') || '(root)',
        message: (i.code === 'unrecognized_keys' ? `unknown key(s): ${(i as { keys: string[] }).keys.join(', ')}` : i.message) + setBy(i.path),
      })),
    ];
    const where = source ? ` in ${source}` : '';
    const lines = errors.map((e) => `  ${e.path}: ${e.message}`).join('\n');
    throw new SluiceError('SLUICE_CONFIG_INVALID', `configuration is invalid${where}:\n${lines}`, { errors });
  }
  const cfg = result.data as Config;
  if (cfg.instance.hostname === 'auto') cfg.instance.hostname = hostname();
  return deepFreeze(cfg);
}

/**
 * A name that resolves only on this machine, a bare host name, or a documentation placeholder
 * (RFC 2606's .example, example.com, .net, .org): fine on one machine or in a template, wrong on the Internet.
 * An address literal ("[IPv6:2001:db8::25]", "[192.0.2.1]") counts by its address.
 */
function localOnly(name: string): boolean {
  const n = name.toLowerCase().replace(/\.$/, '');
  const literal = /^\[(?:ipv6:)?([^\]]+)\]$/.exec(n)?.[1] ?? (isIP(n) ? n : undefined);
  if (literal !== undefined) return addressScope(literal) === 'loopback';
  return !n.includes('.') || n === 'localhost' || /\.(localhost|local|internal|invalid|test|example)$/.test(n) || /(^|\.)example\.(com|net|org)$/.test(n);
}

function localUrl(url: string): boolean {
  try {
    const host = new URL(url).hostname;
    return localOnly(host);
  } catch {
    return false;
  }
}

/**
 * Settings valid for trying Sluice on one machine (the defaults are such) that mail on the Internet
 * cannot work with, for the roles that use them: said at start-up (warn) and by `sluice config
 * check`, not refused, as the README's first run uses them. Each names the key to set.
 */
export function configWarnings(cfg: Config): string[] {
  const out: string[] = [];
  const has = (r: Config['roles'][number]) => cfg.roles.includes(r);
  if (has('delivery')) {
    if (localOnly(cfg.delivery.bounceDomain)) out.push(`delivery.bounceDomain is ${cfg.delivery.bounceDomain}: every envelope sender is at it, and no bounce can come back to it (a name only this machine knows, or a placeholder); set a domain whose MX points at the feedback role`);
    const ehlo = cfg.delivery.ehloName ?? cfg.instance.hostname;
    if (localOnly(ehlo)) out.push(`the EHLO name is ${ehlo} (${cfg.delivery.ehloName === null ? 'instance.hostname' : 'delivery.ehloName'}): receivers want this host's own fully qualified name, the one its address's PTR gives back; set instance.hostname (or delivery.ehloName)`);
  }
  // The render threads of the delivery role write the URLs (with token keys), the tracking role answers them.
  const tracked = has('tracking') || (has('delivery') && cfg.tracking.signWith !== null && cfg.tracking.keys.length > 0);
  if (tracked && localUrl(cfg.tracking.publicBaseUrl)) out.push(`tracking.publicBaseUrl is ${cfg.tracking.publicBaseUrl}: every tracked link, pixel and unsubscribe URL in mail points there, which no recipient can reach; set the public https URL of the tracking server`);
  return out;
}

/** The effective configuration with secrets replaced, for `sluice config show`. */
export function redactConfig(cfg: Config): unknown {
  return JSON.parse(
    JSON.stringify(cfg, (key, value: unknown) => {
      if (key === 'apiKeys' && Array.isArray(value)) return value.map(() => '[redacted]');
      if (key === 'passwordHash') return '[redacted]';
      if (key === 'url' && typeof value === 'string') return redactUrlCredentials(value);
      return value;
    }),
  );
}
