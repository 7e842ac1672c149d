import { execFile } from 'node:child_process';
import { createSecureContext } from 'node:tls';
import { chmod, mkdir, readFile, rename, rm } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type { Config } from '../config/schema.js';
import { SluiceError } from '../core/errors.js';
import type { TlsMaterial } from '../core/tls-material.js';

const run = promisify(execFile);


/**
 * STARTTLS key and certificate for submission, or for the feedback MX: the configured PEM files, or a
 * self-signed pair created once under `<dataDir>/tls/` and reused on every later start.
 *
 * The feedback MX takes `feedback.tlsKey`/`tlsCert`, and when both are null the submission server's
 * pair (its files, or the generated one): both servers greet as instance.hostname, so a certificate
 * an operator installed for submission names the MX's host as well. Senders' opportunistic TLS to an
 * MX does not verify the certificate anyway (unless the bounce domain publishes MTA-STS or DANE).
 *
 * The pair is made with `openssl req -x509` because Node's crypto can create key pairs but has no API
 * to issue an X.509 certificate; hand-encoding ASN.1/DER here would be more code to trust than the
 * openssl binary every Debian/Ubuntu image ships. The key is ECDSA P-256: every TLS client supports
 * it and handshakes are far cheaper than with RSA. Ten years of validity, because a self-signed
 * certificate is not verified by clients anyway and an expiry would only break them someday.
 */
export async function loadOrCreateTls(config: Config, server: 'submission' | 'feedback' = 'submission'): Promise<TlsMaterial> {
  const own = server === 'feedback' && (config.feedback.tlsKey !== null || config.feedback.tlsCert !== null);
  const [path, { tlsKey, tlsCert }] = own ? ['feedback', config.feedback] : ['ingress.smtp', config.ingress.smtp];
  if ((tlsKey === null) !== (tlsCert === null)) {
    throw new SluiceError('SLUICE_CONFIG_INVALID', `${path}.tlsKey and ${path}.tlsCert must be set together (or both null for ${own ? "ingress.smtp's pair" : 'a generated pair'})`);
  }
  if (tlsKey !== null && tlsCert !== null) return readPair(tlsKey, tlsCert);

  const dir = join(config.instance.dataDir, 'tls');
  const keyFile = join(dir, 'submission-key.pem');
  const certFile = join(dir, 'submission-cert.pem');
  if (existsSync(keyFile) && existsSync(certFile)) return readPair(keyFile, certFile);

  await mkdir(dir, { recursive: true, mode: 0o700 });
  // The CN is the configured host name, reduced to the characters a DNS name may hold.
  const cn = config.instance.hostname.replace(/[^A-Za-z0-9.-]/g, '') || 'localhost';
  // Written under temporary names and renamed, so two processes starting together never read a
  // half-written file: the last rename wins and both files of a pair come from one run.
  const tag = `${process.pid}.${Date.now()}`;
  const tmpKey = `${keyFile}.${tag}`;
  const tmpCert = `${certFile}.${tag}`;
  try {
    await run('openssl', [
      'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
      '-days', '3650', '-subj', `/CN=${cn}`, '-addext', `subjectAltName=DNS:${cn}`,
      '-keyout', tmpKey, '-out', tmpCert,
    ]);
    await chmod(tmpKey, 0o600);
    await rename(tmpKey, keyFile);
    await rename(tmpCert, certFile);
  } catch (err) {
    await rm(tmpKey, { force: true });
    await rm(tmpCert, { force: true });
    throw new SluiceError(
      'SLUICE_CONFIG_INVALID',
      `cannot generate a self-signed STARTTLS certificate with openssl (${(err as Error).message}); install openssl or set ${server === 'feedback' ? 'feedback' : 'ingress.smtp'}.tlsKey and tlsCert`,
      { cause: err },
    );
  }
  return readPair(keyFile, certFile);
}

async function readPair(keyFile: string, certFile: string): Promise<TlsMaterial> {
  try {
    return { key: await readFile(keyFile), cert: await readFile(certFile) };
  } catch (err) {
    throw new SluiceError('SLUICE_CONFIG_INVALID', `cannot read the STARTTLS key or certificate: ${(err as Error).message}`, { cause: err });
  }
}

/**
 * Throws SLUICE_CONFIG_INVALID unless the pair makes a TLS context (PEM that parses, a key that
 * matches the certificate): a reload checks renewed files before handing them to a server.
 */
export function checkTlsPair(m: TlsMaterial, what: string): void {
  try {
    createSecureContext({ key: m.key, cert: m.cert });
  } catch (err) {
    throw new SluiceError('SLUICE_CONFIG_INVALID', `${what}: the STARTTLS key and certificate cannot be used together: ${(err as Error).message}`, { cause: err });
  }
}
