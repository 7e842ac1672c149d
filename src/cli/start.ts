import { constants as osConstants } from 'node:os';
import { loadConfig } from '../config/load.js';
import { startSluice, type RunningSluice } from '../app/start.js';
import { parse, parseRoles, println, ROLES, type Io } from './args.js';

const USAGE = `Usage: sluice start [--config FILE] [--roles LIST]

Runs Sluice until SIGTERM or SIGINT. With REDIS_URL (or redis.url) unset it starts its own private
redis-server on a unix socket under instance.dataDir and stops it on shutdown.
  --config FILE   configuration file (default: SLUICE_CONFIG, else only config/default.yaml)
  --roles LIST    comma-separated roles to run: ${ROLES.join(', ')} (default: the config's roles)

Shutdown: the first signal stops accepting, lets SMTP transactions in flight finish (up to instance.shutdownGrace),
returns unattempted claims to the queue and closes Redis last (the embedded server is not in the
terminal's process group: Ctrl-C reaches Sluice only, which stops it). It stops waiting for Redis
once Redis has been unreachable for 5 s, or at shutdownGrace + 15 s, and then exits with code 1.
A second signal exits at once; nothing acknowledged is lost (leases expire and the mail is delivered later).
A signal during start-up (the embedded server may load its data for minutes) stops what has started
and exits with 128 + the signal's number. If the embedded redis-server exits before Sluice is ready
(a corrupt AOF, killed while loading), the start exits with code 1 naming its exit and the last lines
of its redis.log. If it dies while Sluice runs, Sluice shuts down as on a signal and exits with code 1.

Reload: SIGHUP reads the configuration again (the same file, environment and --roles) and applies its
accounts (domains, DKIM keys, API keys, SMTP users, quotas, rate limits, tracking), operators, shaping
rules, transport map, tracking token keys, STARTTLS certificates and log level without a restart; key and
certificate files are read again even when their names did not change. All or nothing: a file that does not load, or a key file that cannot be read, refuses the reload
(logged, with why) and the configuration in force stays. Other changed settings are logged as needing a
restart. Check a file first with \`sluice config check\`.`;

export async function runStart(argv: string[], io: Io): Promise<number> {
  const args = parse({ name: 'start', usage: USAGE, options: { config: { type: 'string', short: 'c' }, roles: { type: 'string' } } }, argv);
  if (args.values.help) {
    println(io.out, USAGE);
    return 0;
  }
  const roles = parseRoles(args.values.roles);
  const load = () => loadConfig({ file: args.values.config, env: io.env, overrides: roles ? { roles } : undefined });
  const config = load();
  // SIGHUP reloads the configuration (app/reload.ts). Node's default for it is to end the process
  // at once, without the shutdown: it is caught from here on. One during start-up is answered once
  // Sluice runs (the file may have changed after it was read).
  let reloadAsked = false;
  const hangupDuringStart = () => {
    reloadAsked = true;
  };
  process.on('SIGHUP', hangupDuringStart);
  // A signal before Sluice runs (the embedded server may load a large AOF for minutes) gives the start
  // up: what started is stopped, the loading redis-server included, rather than left running behind a
  // process that died of the signal. A second one exits at once.
  const giveUp = new AbortController();
  let startSignal: NodeJS.Signals | null = null;
  const exitCode = (sig: NodeJS.Signals) => 128 + (osConstants.signals[sig] ?? 2);
  const duringStart = (sig: NodeJS.Signals) => {
    if (startSignal !== null) process.exit(exitCode(sig));
    startSignal = sig;
    println(io.err, `sluice: ${sig} during start-up: stopping what has started`);
    giveUp.abort();
  };
  process.on('SIGTERM', duringStart);
  process.on('SIGINT', duringStart);
  let app: RunningSluice;
  try {
    app = await startSluice(config, { signal: giveUp.signal });
  } catch (err) {
    if (startSignal === null) throw err;
    return exitCode(startSignal);
  } finally {
    process.off('SIGTERM', duringStart);
    process.off('SIGINT', duringStart);
    process.off('SIGHUP', hangupDuringStart);
  }

  return new Promise<number>((resolve) => {
    const finish = (code: number) => {
      // A handle nobody closed must not keep a stopped process alive: a clean stop has drained the
      // event loop long before this fires (unref'd: it never delays the exit itself).
      setTimeout(() => {
        app.logger.warn({ resources: process.getActiveResourcesInfo() }, 'still busy 2 s after shutdown: exiting');
        app.logger.flush();
        process.exit(code);
      }, 2_000).unref();
      resolve(code);
    };
    let stopping = false;
    /** `failure`: why the process stops on its own; it then exits 1 even when the stop is complete. */
    const shutdown = (failure: string | null) => {
      stopping = true;
      app
        .stop(config.instance.shutdownGrace)
        .then((r) => {
          if (r.complete) return finish(failure === null ? 0 : 1);
          // It gave up on parts still waiting for Redis (their sockets and timers would keep the
          // process alive): Redis is closed and the embedded server stopped, nothing is left to drain.
          app.logger.flush();
          process.exit(1);
        })
        .catch((err: unknown) => {
          app.logger.error({ err }, 'shutdown failed');
          finish(1);
        })
        .finally(() => {
          process.off('SIGTERM', onSignal);
          process.off('SIGINT', onSignal);
          process.off('SIGHUP', onHangup);
        });
    };
    const onHangup = () => {
      if (stopping) {
        app.logger.warn('SIGHUP while shutting down: no reload');
        return;
      }
      app.logger.info({ signal: 'SIGHUP' }, 'reloading the configuration');
      // A refusal is logged by the reload, with why; the configuration in force stays.
      app.reload(load).catch(() => undefined);
    };
    const onSignal = (sig: NodeJS.Signals) => {
      // A signal while stopping (after a first signal, or a failure) is the operator's "now".
      if (stopping) {
        app.logger.warn({ signal: sig }, 'second signal: exiting now (leases will return unfinished mail to the queue)');
        // The embedded redis-server is in its own process group (a terminal's Ctrl-C does not reach
        // it): asked to stop, it writes its AOF and exits on its own while this process exits now.
        try {
          app.redis.embedded?.terminate();
        } catch {
          // already gone
        }
        app.logger.flush();
        // 128 + the signal's number, as a shell reports a process the signal ended (130 for SIGINT, 143 for SIGTERM).
        process.exit(exitCode(sig));
      }
      app.logger.info({ signal: sig }, 'shutting down');
      shutdown(null);
    };
    void app.failed.then((reason) => {
      if (stopping) return;
      app.logger.error({ reason }, 'shutting down: Sluice cannot run on');
      shutdown(reason);
    });
    process.on('SIGTERM', onSignal);
    process.on('SIGINT', onSignal);
    process.on('SIGHUP', onHangup);
    if (reloadAsked) onHangup();
  });
}
