import type { Config } from '../config/schema.js';
import { SluiceError } from '../core/errors.js';
import { SecretVerifier, keyFingerprint, operatorKeyId, parseSecretHash, type VerifyCacheOptions } from './secrets.js';

/**
 * Operators: the people who run the deployment. Their keys (`op_<id>_…`) are a separate kind from
 * accounts' keys (`sk_<account>_…`), configured apart (`operators:`), and grant admin rights on the
 * HTTP API: acting on any account (named with ?account=ID) and the admin routes (account close,
 * audit log). An account key is never checked against an operator's hashes, so it can never gain
 * them. Hashes are scrypt, verified as accounts' keys are (src/accounts/secrets.ts).
 */
export interface Operator {
  readonly id: string;
  /** Public id of the key used (keyFingerprint of its stored hash), for the audit log. */
  readonly keyId: string;
}

export class OperatorRegistry {
  private byId: ReadonlyMap<string, readonly string[]>;
  private readonly verifier: SecretVerifier;

  constructor(operators: Config['operators'], opts: VerifyCacheOptions = {}) {
    this.verifier = new SecretVerifier(opts);
    this.byId = OperatorRegistry.index(operators);
  }

  /** Checks and indexes `operators`: throws SLUICE_CONFIG_INVALID for a repeated id or a malformed hash. */
  static index(operators: Config['operators']): ReadonlyMap<string, readonly string[]> {
    const byId = new Map<string, readonly string[]>();
    for (const o of operators) {
      if (byId.has(o.id)) throw new SluiceError('SLUICE_CONFIG_INVALID', `operator ${o.id} is defined twice`);
      for (const h of o.apiKeys) {
        if (!parseSecretHash(h)) throw new SluiceError('SLUICE_CONFIG_INVALID', `operator ${o.id}: an API key hash is malformed`);
      }
      byId.set(o.id, o.apiKeys);
    }
    return byId;
  }

  /**
   * Puts a reloaded configuration's operators in force (checked beforehand with index()). A cached
   * verification is bound to the hash it matched, so a key whose hash is gone stops working at once.
   */
  replace(indexed: ReadonlyMap<string, readonly string[]>): void {
    this.byId = indexed;
  }

  /** True when `key` has the operator key's form (op_…): it is then never tried as an account key. */
  static isOperatorKey(key: string): boolean {
    return operatorKeyId(key) !== undefined;
  }

  /** The operator whose key this is, or null. An unknown operator costs the same scrypt as a wrong key. */
  async authenticate(key: string): Promise<Operator | null> {
    const id = operatorKeyId(key);
    const hashes = id === undefined ? undefined : this.byId.get(id);
    // No such operator: verifyAny checks against the decoy hash, at the cost of a wrong key.
    const i = await this.verifier.verifyAny(typeof key === 'string' ? key : '', hashes ?? []);
    return id !== undefined && hashes && i >= 0 ? { id, keyId: keyFingerprint(hashes[i] as string) } : null;
  }
}
