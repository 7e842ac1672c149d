import { execFile } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/**
 * A private instance of Debian's Postfix on loopback, for tests that need a real MTA at the other
 * end: its own config, queue and data directories under a temp folder, its own log file, so it
 * neither touches nor needs the system's Postfix, and it sends mail nowhere but where `routes` say.
 * Postfix's master must start as root (it drops to the `postfix` user); CI runs as root. If Postfix
 * is missing, ensurePostfix() installs it with apt-get and says why when it cannot.
 */
export const POSTFIX = '/usr/sbin/postfix';
/** apt-get update + install on a cold CI machine: minutes at worst, not hours. */
const INSTALL_TIMEOUT_MS = 300_000;

export interface PostfixOptions {
  /** Its SMTP port on 127.0.0.1 (test/helpers/redis.ts freePort()). */
  port: number;
  /** Its own mail domain (myhostname mx.<domain>): accepted at RCPT, delivered by local(8). */
  domain: string;
  /** Domain → 'host:port': where mail for that domain is relayed (the transport map). */
  routes?: Record<string, string>;
  /** Addresses refused at RCPT with 554 5.7.1. */
  refuse?: string[];
  /** A milter every message received by SMTP passes through, e.g. 'inet:127.0.0.1:8891' (OpenDKIM). */
  milter?: string;
}

export function run(cmd: string, args: string[], env: NodeJS.ProcessEnv = process.env, timeout = 60_000): Promise<{ code: number; out: string }> {
  return new Promise((resolve) => {
    execFile(cmd, args, { env, timeout, maxBuffer: 4 * 1024 * 1024 }, (err, stdout, stderr) => {
      const code = err ? (typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : 1) : 0;
      resolve({ code, out: `${stdout}${stderr}${err && code === 1 && !stdout && !stderr ? err.message : ''}` });
    });
  });
}

/** Postfix's path, installing the Debian package when it is missing; otherwise why it cannot be had. */
export async function ensurePostfix(): Promise<{ ok: true } | { ok: false; why: string }> {
  if (existsSync(POSTFIX)) return { ok: true };
  if (process.getuid?.() !== 0) return { ok: false, why: 'postfix is not installed and this process is not root, so it cannot install it' };
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  const update = await run('apt-get', ['update', '-qq'], env, INSTALL_TIMEOUT_MS);
  const install = update.code === 0 ? await run('apt-get', ['install', '-y', '-qq', 'postfix'], env, INSTALL_TIMEOUT_MS) : update;
  if (install.code !== 0 || !existsSync(POSTFIX)) return { ok: false, why: `apt-get could not install postfix: ${install.out.trim().split('\n').slice(-3).join(' / ')}` };
  return { ok: true };
}


export interface PrivatePostfix {
  dir: string;
  port: number;
  log(): string;
  stop(): Promise<void>;
}

/**
 * A private Postfix instance: `postfix -c <dir>/etc` reads only our main.cf and master.cf. Every
 * setting below is there for a reason, said beside it; the rest are Postfix's defaults.
 */
export async function startPostfix(opts: PostfixOptions): Promise<PrivatePostfix> {
  const { port, domain } = opts;
  const routes = opts.routes ?? {};
  const refuse = opts.refuse ?? [];
  const dir = mkdtempSync(join(tmpdir(), 'sluice-postfix-'));
  // Postfix's daemons run as the `postfix` user and chdir into the queue below: the folder must be traversable.
  chmodSync(dir, 0o755);
  const etc = join(dir, 'etc');
  const log = join(dir, 'maillog');
  writeFileSync(join(dir, 'transport'), [
    // The only destinations reachable from this instance (the bounce domain at Sluice's inbound MX,
    // say). [brackets]: connect to that address as given, no MX lookup (there is no DNS for .test).
    ...Object.entries(routes).map(([d, hostPort]) => `${d} smtp:[${hostPort.replace(/:(\d+)$/, ']:$1')}`),
    '',
  ].join('\n'));
  writeFileSync(join(dir, 'refuse'), [...refuse.map((a) => `${a} REJECT no such user here`), ''].join('\n'));
  const main = [
    // Current defaults, and no "backwards-compatible default setting" warnings in the log.
    'compatibility_level = 3.6',
    // Everything stateful lives under the temp folder, nothing under /var or /etc of the system.
    `queue_directory = ${dir}/spool`,
    // Left for Postfix to create: it must be owned by the postfix user (master.lock lives there).
    `data_directory = ${dir}/data`,
    // No syslog in a container: postlogd writes here, and a failure message quotes it.
    `maillog_file = ${log}`,
    `maillog_file_prefixes = ${dir}`,
    // Identity in the greeting, Received: and Reporting-MTA of the DSN.
    `myhostname = mx.${domain}`,
    `mydomain = ${domain}`,
    `myorigin = ${domain}`,
    // `domain` is this machine's own mail domain: RCPT to it is accepted and delivered by local(8).
    `mydestination = ${domain}`,
    // The routed domains are relayed for anyone (loopback is in mynetworks anyway).
    `relay_domains = ${Object.keys(routes).join(', ')}`,
    // The addresses in `refuse` get 554 at RCPT, like a gateway that knows its users.
    `smtpd_recipient_restrictions = check_recipient_access texthash:${join(dir, 'refuse')}, permit_mynetworks, reject_unauth_destination`,
    // Empty: smtpd does not look local users up at RCPT time, so the unknown user is ACCEPTED (250)
    // and only local(8) finds out it does not exist — the "accept, then bounce" path of a real MX
    // (a gateway in front of the mailbox store) that forces Postfix to write a DSN.
    'local_recipient_maps =',
    // No /etc/aliases: the private instance must not depend on or rebuild the system's alias db.
    'alias_maps =',
    'alias_database =',
    // Listen on loopback only (the smtpd line in master.cf names 127.0.0.1 and the port too).
    'inet_interfaces = loopback-only',
    'inet_protocols = ipv4',
    'mynetworks = 127.0.0.0/8',
    // Relays nothing to the internet: the routed domains go where the transport map says, everything
    // else fails at once with a bounce instead of leaving the machine.
    `transport_maps = texthash:${join(dir, 'transport')}`,
    'default_transport = error:this test instance delivers nowhere else',
    'relay_transport = error:this test instance relays nothing',
    // Plain SMTP both ways: no certificates to make, and Sluice's inbound MX offers no STARTTLS.
    'smtpd_tls_security_level = none',
    'smtp_tls_security_level = none',
    // A milter that does not answer makes the message wait (4xx), not pass unsigned.
    ...(opts.milter ? [`smtpd_milters = ${opts.milter}`, 'milter_default_action = tempfail'] : []),
    '',
  ];
  const master = [
    // service          type  private unpriv chroot wakeup maxproc command
    // No chroot (the 5th column 'n') anywhere: a chroot would need copies of /etc files in the queue.
    `127.0.0.1:${port}  inet  n       -      n      -      -       smtpd`,
    'pickup             unix  n       -      n      60     1       pickup',
    'cleanup            unix  n       -      n      -      0       cleanup',
    'qmgr               unix  n       -      n      300    1       qmgr',
    'rewrite            unix  -       -      n      -      -       trivial-rewrite',
    'bounce             unix  -       -      n      -      0       bounce',
    'defer              unix  -       -      n      -      0       bounce',
    'trace              unix  -       -      n      -      0       bounce',
    'verify             unix  -       -      n      -      1       verify',
    'flush              unix  n       -      n      1000?  0       flush',
    'proxymap           unix  -       -      n      -      -       proxymap',
    'smtp               unix  -       -      n      -      -       smtp',
    'relay              unix  -       -      n      -      -       smtp',
    'showq              unix  n       -      n      -      -       showq',
    'error              unix  -       -      n      -      -       error',
    'retry              unix  -       -      n      -      -       error',
    'discard            unix  -       -      n      -      -       discard',
    // local(8) runs as root to switch to the recipient's account; here it only finds there is none.
    'local              unix  -       n      n      -      -       local',
    'anvil              unix  -       -      n      -      1       anvil',
    'scache             unix  -       -      n      -      1       scache',
    'postlog            unix-dgram n  -      n      -      1       postlogd',
    '',
  ];
  mkdirSync(etc);
  // The queue's root is root's (Postfix refuses anything else); `postfix start` fills in its subfolders.
  mkdirSync(join(dir, 'spool'), { mode: 0o755 });
  writeFileSync(join(etc, 'main.cf'), main.join('\n'));
  writeFileSync(join(etc, 'master.cf'), master.join('\n'));
  const readLog = () => (existsSync(log) ? readFileSync(log, 'utf8') : '');

  // `postfix start` creates the queue directories with the right owners, then starts master(8).
  const started = await run(POSTFIX, ['-c', etc, 'start']);
  if (started.code !== 0) {
    rmSync(dir, { recursive: true, force: true });
    throw new Error(`postfix did not start (exit ${started.code}): ${started.out}\n${readLog()}`);
  }
  return {
    dir,
    port,
    log: readLog,
    async stop() {
      // `stop` waits up to 5 s for master(8) to exit and then kills its process group.
      const stopped = await run(POSTFIX, ['-c', etc, 'stop']);
      if (stopped.code !== 0) await run(POSTFIX, ['-c', etc, 'abort']);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
