import { parseArgs, type ParseArgsConfig } from 'node:util';
import { ACCOUNT_ID, ROLES, type Config, type Role } from '../config/schema.js';

export { ROLES };

/**
 * Shared argument handling for the `sluice` commands: node's parseArgs (strict: unknown flags are
 * refused), a `--help` on every command, and a usage error that names the command's help.
 */
export class UsageError extends Error {}

export interface CommandSpec<O extends NonNullable<ParseArgsConfig['options']>> {
  name: string;
  usage: string;
  options: O;
  allowPositionals?: boolean;
}

export function parse<O extends NonNullable<ParseArgsConfig['options']>>(spec: CommandSpec<O>, argv: string[]) {
  try {
    return parseArgs({ args: argv, options: { ...spec.options, help: { type: 'boolean', short: 'h' } }, allowPositionals: spec.allowPositionals ?? false, strict: true });
  } catch (err) {
    throw new UsageError(`${(err as Error).message}\nRun 'sluice ${spec.name} --help' for usage.`);
  }
}

export interface Io {
  out: NodeJS.WritableStream;
  err: NodeJS.WritableStream;
  env: NodeJS.ProcessEnv;
  stdin: NodeJS.ReadableStream;
}

export function println(stream: NodeJS.WritableStream, text = ''): void {
  stream.write(text.endsWith('\n') ? text : `${text}\n`);
}

/** An --account option: undefined when not given, else an account id (config/schema.ts ACCOUNT_ID). */
export function accountOption(account: string | undefined): string | undefined {
  if (account !== undefined && !ACCOUNT_ID.test(account)) throw new UsageError(`--account must be an account id (lower-case letters, digits, _ and -), not '${account}'`);
  return account;
}

/**
 * Whether `account` is one of the configuration's; else says so on stderr (SLUICE_ACCOUNT_UNKNOWN)
 * and the command exits 1. For commands that write an account's data (a typo would write to an
 * account nobody sends as, and say it did); readers of stored data (export, audit) take any id, as
 * an account removed from the configuration may still have data.
 */
export function configuredAccount(cfg: Pick<Config, 'accounts'>, account: string, io: Io): boolean {
  if (cfg.accounts.some((a) => a.id === account)) return true;
  println(io.err, `sluice: no account '${account}' in the configuration (SLUICE_ACCOUNT_UNKNOWN)`);
  return false;
}

/** A --limit N option: a positive whole number. */
export function limitOption(text: string | undefined): number {
  const limit = Number(text);
  if (!Number.isInteger(limit) || limit < 1) throw new UsageError(`--limit must be a positive whole number, not '${text}'`);
  return limit;
}

/**
 * The subcommand of a command that has them (`dkim keygen`, `config check`): exactly one
 * positional, one of `known`. It may stand anywhere among the options, as parseArgs allows.
 */
export function subcommand(name: string, positionals: readonly string[], known: readonly string[]): string {
  const [sub, ...extra] = positionals;
  const hint = `Run 'sluice ${name} --help' for usage.`;
  if (sub === undefined) throw new UsageError(`missing subcommand (${known.join(' or ')})\n${hint}`);
  if (!known.includes(sub)) throw new UsageError(`unknown subcommand '${sub}' (known: ${known.join(', ')})\n${hint}`);
  if (extra.length > 0) throw new UsageError(`unexpected argument '${extra[0] as string}'\n${hint}`);
  return sub;
}

/** A --roles LIST option (comma-separated), or undefined when it is not given; an unknown or empty list is a usage error. */
export function parseRoles(value: string | undefined): Role[] | undefined {
  if (value === undefined) return undefined;
  const list = value.split(',').map((r) => r.trim()).filter(Boolean);
  const bad = list.filter((r) => !(ROLES as readonly string[]).includes(r));
  if (bad.length > 0 || list.length === 0) throw new UsageError(`--roles: unknown role(s) ${bad.join(', ') || '(none given)'}; known: ${ROLES.join(', ')}`);
  return list as Role[];
}
