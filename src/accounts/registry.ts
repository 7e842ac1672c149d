import { readFileSync } from 'node:fs';
import { createPrivateKey } from 'node:crypto';
import type { AccountConfig } from '../config/schema.js';
import { SluiceError } from '../core/errors.js';
import { normaliseDomain } from '../core/address.js';
import { SecretVerifier, apiKeyAccount, keyFingerprint, parseSecretHash, type VerifyCacheOptions } from './secrets.js';

/** An account as the rest of Sluice sees it: who it is, what it may send from, its limits. */
export interface Account {
  readonly id: string;
  /** Owned sending domains, normalised (lower case, A-label). */
  readonly domains: ReadonlySet<string>;
  readonly dailyQuota: number | null;
  readonly rateLimit: AccountConfig['rateLimit'];
  /** Per-recipient tracking (full, anonymous, off) and how visitors' addresses are kept. */
  readonly tracking: Readonly<AccountConfig['tracking']>;
}

/** A DKIM private key read from its file, ready for the render workers. */
export interface DkimKeyMaterial {
  readonly domain: string;
  readonly selector: string;
  readonly algorithm: 'rsa' | 'ed25519';
  readonly privateKeyPem: string;
}

interface DkimKeyRef {
  readonly domain: string;
  readonly selector: string;
  readonly algorithm: 'rsa' | 'ed25519';
  readonly keyFile: string;
}

interface Entry {
  readonly account: Account;
  readonly apiKeys: readonly string[];
}

/**
 * The accounts of one configuration, checked and indexed: API keys by the account id they name, SMTP
 * users by user name, domains as a set. Immutable; a reload builds a new one (and reads its DKIM
 * key files) before anything is replaced, so a bad file changes nothing.
 */
export class AccountTable {
  readonly byId = new Map<string, Entry>();
  readonly smtpUsers = new Map<string, { accountId: string; hash: string }>();
  readonly dkim: readonly DkimKeyRef[];
  /** Sending domain → the domain of its envelope sender, where the config gives one (returnPathsOf). */
  readonly returnPaths: ReadonlyMap<string, string>;

  constructor(accounts: readonly AccountConfig[]) {
    const dkim: DkimKeyRef[] = [];
    const returnPaths = new Map<string, string>();
    const domainOwner = new Map<string, string>();
    for (const cfg of accounts) {
      if (this.byId.has(cfg.id)) throw new SluiceError('SLUICE_CONFIG_INVALID', `account ${cfg.id} is defined twice`);
      const domains = new Set<string>();
      for (const d of cfg.domains) {
        const domain = normaliseDomain(d.domain);
        if (!domain) throw new SluiceError('SLUICE_CONFIG_INVALID', `account ${cfg.id}: ${JSON.stringify(d.domain)} is not a domain`);
        // One owner per domain, otherwise which account's DKIM key signs it would be ambiguous.
        const owner = domainOwner.get(domain);
        if (owner !== undefined) throw new SluiceError('SLUICE_CONFIG_INVALID', `domain ${domain} is owned by both ${owner} and ${cfg.id}`);
        domainOwner.set(domain, cfg.id);
        domains.add(domain);
        for (const k of d.dkim) dkim.push({ domain, selector: k.selector, algorithm: k.algorithm, keyFile: k.keyFile });
        if (d.returnPath !== undefined) returnPaths.set(domain, returnPathDomain(cfg.id, domain, d.returnPath));
      }
      for (const h of cfg.apiKeys) {
        if (!parseSecretHash(h)) throw new SluiceError('SLUICE_CONFIG_INVALID', `account ${cfg.id}: an API key hash is malformed`);
      }
      for (const u of cfg.smtpUsers) {
        if (!parseSecretHash(u.passwordHash)) throw new SluiceError('SLUICE_CONFIG_INVALID', `account ${cfg.id}: the password hash of SMTP user ${u.username} is malformed`);
        if (this.smtpUsers.has(u.username)) throw new SluiceError('SLUICE_CONFIG_INVALID', `SMTP user ${u.username} is defined twice`);
        this.smtpUsers.set(u.username, { accountId: cfg.id, hash: u.passwordHash });
      }
      const account: Account = Object.freeze({
        id: cfg.id, domains, dailyQuota: cfg.dailyQuota, rateLimit: cfg.rateLimit,
        tracking: Object.freeze({ mode: cfg.tracking.mode, anonymizeIp: cfg.tracking.anonymizeIp }),
      });
      this.byId.set(cfg.id, { account, apiKeys: cfg.apiKeys });
    }
    this.dkim = dkim;
    this.returnPaths = returnPaths;
  }

  /**
   * Reads every configured DKIM key file and checks that it holds a private key of the declared
   * algorithm, so a wrong file fails at start-up (or refuses a reload) with its name rather than at
   * the first send. Synchronous: it runs before any role serves traffic, or once per reload.
   */
  readDkimKeys(domains?: ReadonlySet<string>): DkimKeyMaterial[] {
    const refs = domains === undefined ? this.dkim : this.dkim.filter((ref) => domains.has(ref.domain));
    return refs.map((ref) => {
      const where = `${ref.keyFile} (${ref.selector}._domainkey.${ref.domain})`;
      let pem: string;
      try {
        pem = readFileSync(ref.keyFile, 'utf8');
      } catch (err) {
        throw new SluiceError('SLUICE_DKIM_KEY_INVALID', `cannot read DKIM key ${where}: ${(err as Error).message}`, { cause: err });
      }
      let type: string | undefined;
      try {
        type = createPrivateKey(pem).asymmetricKeyType;
      } catch (err) {
        throw new SluiceError('SLUICE_DKIM_KEY_INVALID', `DKIM key ${where} is not a PEM private key`, { cause: err });
      }
      if (type !== ref.algorithm) {
        throw new SluiceError('SLUICE_DKIM_KEY_INVALID', `DKIM key ${where} is ${type ?? 'of unknown type'}, but the config says ${ref.algorithm}`);
      }
      return { domain: ref.domain, selector: ref.selector, algorithm: ref.algorithm, privateKeyPem: pem };
    });
  }
}

/**
 * The accounts as the ingress hot path reads them, from the table in force: replace() swaps in a
 * reloaded configuration's table at once (a request authenticated before it keeps the Account it
 * got). The verification cache stays: an entry is bound to the stored hash it matched, so a key
 * whose hash a reload removed no longer authenticates.
 */
export class AccountRegistry {
  #table: AccountTable;
  private readonly verifier: SecretVerifier;

  constructor(accounts: readonly AccountConfig[] | AccountTable, opts: VerifyCacheOptions = {}) {
    this.verifier = new SecretVerifier(opts);
    this.#table = accounts instanceof AccountTable ? accounts : new AccountTable(accounts);
  }

  /** The table in force. */
  get table(): AccountTable {
    return this.#table;
  }

  /** Puts a reloaded configuration's accounts in force (built, and its keys read, beforehand). */
  replace(table: AccountTable): void {
    this.#table = table;
  }

  private get byId(): Map<string, Entry> {
    return this.#table.byId;
  }

  private get smtpUsers(): Map<string, { accountId: string; hash: string }> {
    return this.#table.smtpUsers;
  }

  get(id: string): Account | undefined {
    return this.byId.get(id)?.account;
  }

  list(): Account[] {
    return [...this.byId.values()].map((e) => e.account);
  }

  /** The account whose API key this is, or null. An unknown account costs the same scrypt as a wrong key. */
  async authenticateApiKey(key: string): Promise<Account | null> {
    return (await this.authenticateApiKeyWithId(key))?.account ?? null;
  }

  /** As authenticateApiKey, with the key's public id (keyFingerprint) for the audit log. */
  async authenticateApiKeyWithId(key: string): Promise<{ account: Account; keyId: string } | null> {
    const accountId = apiKeyAccount(key);
    const entry = accountId === undefined ? undefined : this.byId.get(accountId);
    // No such account: verifyAny checks against the decoy hash, at the cost of a wrong key.
    const i = await this.verifier.verifyAny(typeof key === 'string' ? key : '', entry?.apiKeys ?? []);
    return entry && i >= 0 ? { account: entry.account, keyId: keyFingerprint(entry.apiKeys[i] as string) } : null;
  }

  async authenticateSmtp(username: string, password: string): Promise<Account | null> {
    return (await this.authenticateSmtpUser(username, password))?.account ?? null;
  }

  /** As authenticateSmtp, with the stored hash the password matched (for smtpUserInForce). */
  async authenticateSmtpUser(username: string, password: string): Promise<{ account: Account; hash: string } | null> {
    const user = typeof username === 'string' ? this.smtpUsers.get(username) : undefined;
    // The cache is keyed by the password's digest and bound to this user's hash, so a password
    // shared by two users never authenticates the wrong one. No such user: the decoy hash is checked.
    const i = await this.verifier.verifyAny(typeof password === 'string' ? password : '', user ? [user.hash] : []);
    const account = user && i >= 0 ? this.byId.get(user.accountId)?.account : undefined;
    return user && account ? { account, hash: user.hash } : null;
  }

  /**
   * True while SMTP user `username` exists with the password hash `hash` (the one it authenticated
   * with): a session whose user a reload removed, or whose password it changed, is not let on.
   */
  smtpUserInForce(username: string, hash: string, accountId: string): boolean {
    const user = this.smtpUsers.get(username);
    // The same user and password moved to another account by a reload: a session logged in as the
    // old one must not go on sending as it (its domains, quota, keys); it logs in again.
    return user?.hash === hash && user.accountId === accountId;
  }

  /** Exact, case-insensitive, IDN-normalised match; a subdomain of an owned domain is not owned. */
  ownsDomain(accountId: string, domain: string): boolean {
    const d = normaliseDomain(domain);
    return d !== undefined && this.byId.get(accountId)?.account.domains.has(d) === true;
  }

  /** The return-path domain of a (normalised) sending domain, when its account gives one. */
  returnPathOf(domain: string): string | undefined {
    return this.#table.returnPaths.get(domain);
  }

  /** The DKIM keys of the accounts in force (of those domains only, when given), read from their files (AccountTable.readDkimKeys). */
  readDkimKeys(domains?: ReadonlySet<string>): DkimKeyMaterial[] {
    return this.#table.readDkimKeys(domains);
  }
}

/** A sending domain's configured return-path domain, normalised; it must be a subdomain of the sending domain. */
function returnPathDomain(account: string, domain: string, given: string): string {
  const rp = normaliseDomain(given);
  if (!rp) throw new SluiceError('SLUICE_CONFIG_INVALID', `account ${account}: returnPath ${JSON.stringify(given)} of ${domain} is not a domain`);
  // DMARC's relaxed SPF alignment wants the same organisational domain: a subdomain of the sending
  // domain always is, and is what receivers' and providers' guides ask for.
  if (!rp.endsWith(`.${domain}`)) throw new SluiceError('SLUICE_CONFIG_INVALID', `account ${account}: returnPath ${rp} of ${domain} must be a subdomain of it (e.g. bounces.${domain})`);
  return rp;
}

/**
 * Sending domain → return-path domain, from the accounts' config (the dispatcher's view; the
 * registry checked them at start and on each reload).
 */
export function returnPathsOf(accounts: readonly AccountConfig[]): Map<string, string> {
  const out = new Map<string, string>();
  for (const a of accounts) {
    for (const d of a.domains) {
      const domain = normaliseDomain(d.domain);
      if (domain && d.returnPath !== undefined) out.set(domain, returnPathDomain(a.id, domain, d.returnPath));
    }
  }
  return out;
}

/**
 * Every domain the feedback MX takes VERP and unsubscribe mail for: delivery.bounceDomain,
 * feedback.extraBounceDomains, and the sending domains' return-path domains.
 */
export function bounceDomainsOf(config: { readonly delivery: { readonly bounceDomain: string }; readonly feedback: { readonly extraBounceDomains: readonly string[] }; readonly accounts: readonly AccountConfig[] }): string[] {
  return [...new Set([config.delivery.bounceDomain, ...config.feedback.extraBounceDomains, ...returnPathsOf(config.accounts).values()])];
}
