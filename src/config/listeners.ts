import { isIP } from 'node:net';

/**
 * The listeners a configuration opens, and which two of them would bind the same port on overlapping
 * addresses: the second listen() would fail with EADDRINUSE at start-up, after other roles started.
 * The schema refuses such a configuration (schema.ts). `roles` there is the set that runs: `sluice
 * start --roles` is merged into the configuration before it is validated, so a listener of a role
 * that does not run is left out and cannot clash.
 *
 * Host names are not resolved (validation does no DNS): a name clashes with the same name and with
 * '::' only. '0.0.0.0' takes every IPv4 address. '::' is taken to clash with every host, IPv4 ones
 * too: Node listens on it dual-stack (libuv turns IPV6_V6ONLY off), so only an OS without dual-stack
 * sockets would let both bind. Port 0 (an ephemeral port, chosen by the OS) never clashes.
 */

/** One server that listens: `path` is its config section, whose `host` and `port` it binds. */
export interface Listener {
  readonly path: string;
  readonly host: string;
  readonly port: number;
}

export interface ListenerClash {
  /** The later listener's port (config order), where the error is reported. */
  readonly path: string[];
  readonly message: string;
}

type Tree = Record<string, unknown>;

function isTree(v: unknown): v is Tree {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function section(tree: unknown, ...path: string[]): Tree | undefined {
  let node = tree;
  for (const key of path) node = isTree(node) ? node[key] : undefined;
  return isTree(node) ? node : undefined;
}

/**
 * The listeners `sluice start` opens for the configuration's roles, in config order: admin (every
 * process), ingress.smtp and ingress.http (role ingress, when enabled), tracking, feedback; as
 * app/start.ts starts them. It reads a tree the schema may have refused parts of: a listener whose
 * host or port (or enabled, or the roles) is not of its type is left out, its own error says why.
 */
export function listenersOf(tree: unknown): Listener[] {
  const roles = isTree(tree) ? tree['roles'] : undefined;
  const has = (role: string) => Array.isArray(roles) && roles.includes(role);
  const out: Listener[] = [];
  const add = (runs: boolean, ...path: string[]) => {
    const s = section(tree, ...path);
    if (!runs || !s) return;
    const { host, port } = s;
    if (typeof host !== 'string' || host === '' || typeof port !== 'number' || !Number.isInteger(port) || port < 0 || port > 65535) return;
    out.push({ path: path.join('.'), host, port });
  };
  const enabled = (...path: string[]) => section(tree, ...path)?.['enabled'] === true;
  add(true, 'admin');
  add(has('ingress') && enabled('ingress', 'smtp'), 'ingress', 'smtp');
  add(has('ingress') && enabled('ingress', 'http'), 'ingress', 'http');
  add(has('tracking'), 'tracking');
  add(has('feedback'), 'feedback');
  return out;
}

/** What a host binds: every address, every IPv4 address, one address, or a name not resolved here. */
type Bind = { kind: 'any' } | { kind: 'any4' } | { kind: 'v4' | 'v6' | 'name'; addr: string };

function bindOf(host: string): Bind {
  const h = host.toLowerCase();
  if (isIP(h) === 4) return h === '0.0.0.0' ? { kind: 'any4' } : { kind: 'v4', addr: h };
  if (isIP(h) === 6) {
    let canon = h;
    try {
      // '0:0::0:1' and '::1' are one address: the URL parser writes IPv6 in its shortest form.
      canon = new URL(`http://[${h}]`).hostname.slice(1, -1);
    } catch {
      // A zone id ('fe80::1%eth0') is not a URL host; compared as written.
    }
    if (canon === '::') return { kind: 'any' };
    // An IPv4-mapped address (::ffff:127.0.0.1) binds that IPv4 address.
    const mapped = /^::ffff:([0-9a-f]{1,4}):([0-9a-f]{1,4})$/.exec(canon);
    if (mapped) {
      const n = (parseInt(mapped[1] as string, 16) << 16) | parseInt(mapped[2] as string, 16);
      return bindOf([n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join('.'));
    }
    return { kind: 'v6', addr: canon };
  }
  return { kind: 'name', addr: h.replace(/\.$/, '') };
}

const ANY_NOTE = ": Node listens on '::' for IPv4 too, so it is taken to clash with every host; only an IPv6-only OS would let both listen";

/** Why a and b (on the same port) overlap, or null when they do not. */
function overlap(a: Listener, b: Listener): string | null {
  const [x, y] = [bindOf(a.host), bindOf(b.host)];
  const same = a.host === b.host ? `both on ${a.host}` : `${a.path}.host ${a.host} and ${b.path}.host ${b.host} are the same address`;
  const wide = (w: Listener, other: Listener, what: string) => `${w.path}.host ${w.host} takes every ${what}, ${other.host} among them`;
  if (x.kind === 'any' && y.kind === 'any') return same;
  if (x.kind === 'any') return `${wide(a, b, 'address')}${ANY_NOTE}`;
  if (y.kind === 'any') return `${wide(b, a, 'address')}${ANY_NOTE}`;
  if (x.kind === 'any4' && y.kind === 'any4') return same;
  if (x.kind === 'any4' && y.kind === 'v4') return wide(a, b, 'IPv4 address');
  if (y.kind === 'any4' && x.kind === 'v4') return wide(b, a, 'IPv4 address');
  if (x.kind !== 'any4' && y.kind !== 'any4' && x.kind === y.kind && x.addr === y.addr) return same;
  return null;
}

/** Every two listeners that would bind the same port on overlapping addresses, reported at the later one's port. */
export function listenerClashes(listeners: readonly Listener[]): ListenerClash[] {
  const out: ListenerClash[] = [];
  listeners.forEach((b, j) => {
    for (const a of listeners.slice(0, j)) {
      if (a.port === 0 || a.port !== b.port) continue;
      const why = overlap(a, b);
      if (why) out.push({ path: [...b.path.split('.'), 'port'], message: `${b.port} is also ${a.path}.port (${why})` });
    }
  });
  return out;
}
