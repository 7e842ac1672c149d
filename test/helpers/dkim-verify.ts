/**
 * Two DKIM verifiers that are not our code, for the render tests:
 *   - mailauth v4 (npm), with a resolver that answers TXT queries from a table;
 *   - Debian's python3-dkim (dkimpy) via dkim_verify.py, run by /usr/bin/python3 (the `python3`
 *     first on PATH may be another interpreter without the module).
 * Plus key generation for tests (fresh keys each run).
 */
import { execFile } from 'node:child_process';
import { generateKeyPairSync } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { dkimVerify } from 'mailauth/lib/dkim/verify.js';
import { dnsRecord } from '../../src/render/dkim.js';
import type { DkimAlgorithm, DkimKeyMaterial } from '../../src/render/protocol.js';

export interface TestKey extends DkimKeyMaterial {
  publicKeyPem: string;
}

export function makeKey(domain: string, selector: string, algorithm: DkimAlgorithm): TestKey {
  const pair =
    algorithm === 'rsa'
      ? generateKeyPairSync('rsa', { modulusLength: 2048 })
      : generateKeyPairSync('ed25519');
  return {
    domain,
    selector,
    algorithm,
    privateKeyPem: pair.privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(),
    publicKeyPem: pair.publicKey.export({ type: 'spki', format: 'pem' }).toString(),
  };
}

/** DNS name → TXT record, as `sluice dkim keygen` would tell an operator to publish. */
export function txtTable(keys: readonly TestKey[]): Record<string, string> {
  const table: Record<string, string> = {};
  for (const k of keys) table[`${k.selector}._domainkey.${k.domain}`] = dnsRecord(k.publicKeyPem, k.algorithm);
  return table;
}

export interface Verdict {
  domain: string;
  selector: string;
  /** 'rsa-sha256' | 'ed25519-sha256' */
  algo: string;
  pass: boolean;
  detail: string;
}

export async function verifyWithMailauth(message: Buffer, table: Record<string, string>): Promise<Verdict[]> {
  const resolver = async (name: string, rrtype: string): Promise<string[][]> => {
    const record = rrtype === 'TXT' ? table[name.toLowerCase()] : undefined;
    if (record === undefined) throw Object.assign(new Error(`no ${rrtype} for ${name}`), { code: 'ENOTFOUND' });
    return [[record]];
  };
  const res = await dkimVerify(message, { resolver, curTime: new Date() });
  return res.results
    .filter((r) => r.status.result !== 'none')
    .map((r) => {
      const x = r as typeof r & { selector?: string; algo?: string; status: { comment?: string } };
      return {
        domain: x.signingDomain,
        selector: x.selector ?? '',
        algo: x.algo ?? '',
        pass: x.status.result === 'pass',
        detail: `${x.status.result}${x.status.comment ? `: ${x.status.comment}` : ''}`,
      };
    });
}

const PY_SCRIPT = fileURLToPath(new URL('./dkim_verify.py', import.meta.url));
const SYSTEM_PYTHON = '/usr/bin/python3';

/** Verifies each message with dkimpy in one Python process; one Verdict list per message. */
export async function verifyWithDkimpy(messages: readonly Buffer[], table: Record<string, string>): Promise<Verdict[][]> {
  const dir = await mkdtemp(join(tmpdir(), 'sluice-dkimpy-'));
  try {
    const keys = join(dir, 'keys.json');
    await writeFile(keys, JSON.stringify(table));
    const files: string[] = [];
    for (const [i, m] of messages.entries()) {
      const f = join(dir, `${i}.eml`);
      await writeFile(f, m);
      files.push(f);
    }
    const stdout = await new Promise<string>((resolve, reject) => {
      execFile(SYSTEM_PYTHON, [PY_SCRIPT, keys, ...files], { maxBuffer: 16 * 1024 * 1024 }, (err, out, errOut) => {
        if (err) reject(new Error(`dkim_verify.py failed: ${err.message}\n${errOut}`));
        else resolve(out);
      });
    });
    const lines = stdout.trim().split('\n').filter((l) => l !== '');
    return lines.map((line) => {
      const parsed = JSON.parse(line) as { signatures: { d: string; s: string; a: string; ok: boolean; error: string | null }[] };
      return parsed.signatures.map((s) => ({ domain: s.d, selector: s.s, algo: s.a, pass: s.ok, detail: s.error ?? 'pass' }));
    });
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** Both verifiers on one message: { mailauth, dkimpy }. */
export async function verifyBoth(message: Buffer, table: Record<string, string>): Promise<{ mailauth: Verdict[]; dkimpy: Verdict[] }> {
  const [mailauth, dkimpy] = await Promise.all([verifyWithMailauth(message, table), verifyWithDkimpy([message], table)]);
  return { mailauth, dkimpy: dkimpy[0] ?? [] };
}
