/**
 * Single-thread cost of one copy through the renderer (compose + sign + frame), per message size:
 *   node --import tsx bench/render-micro.ts
 */
import { generateKeyPairSync } from 'node:crypto';
import { createRenderer } from '../src/render/renderer.js';
import { messageJsonFactory } from './content.js';

const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
const render = createRenderer({ keys: [{ domain: 'acme.example', selector: 's1', algorithm: 'rsa', privateKeyPem: rsa }], hostname: 'bench.test' }, { cacheEntries: 0 });
for (const size of [10 * 1024, 100 * 1024]) {
  const make = messageJsonFactory({ bytes: size, from: 'news@acme.example', domains: 100 });
  const specs = Array.from({ length: 1000 }, (_, i) => {
    const m = JSON.parse(make(i)) as { subject: string; html: string; headers: Record<string, string>; to: { name: string; address: string }[] };
    return JSON.stringify({ from: { address: 'news@acme.example' }, to: m.to, cc: [], subject: m.subject, html: m.html, headers: m.headers, attachments: [], messageId: `<0123456789ab${String(i).padStart(4, '0')}@bench.test>` });
  });
  let renderMs = 0;
  let signMs = 0;
  const t0 = performance.now();
  for (let i = 0; i < specs.length; i++) {
    const r = await render({ msgId: `0123456789ab${String(i).padStart(4, '0')}`, kind: 'spec', source: specs[i] as string, signingDomain: 'acme.example', acceptedAt: Date.now(), frame: true });
    if (!r.ok) throw new Error(r.message);
    renderMs += r.renderMs;
    signMs += r.signMs.reduce((a, b) => a + b, 0);
  }
  const total = performance.now() - t0;
  console.log(`${size / 1024} KB: ${(total / specs.length).toFixed(3)} ms per copy (compose ${(renderMs / specs.length).toFixed(3)}, sign ${(signMs / specs.length).toFixed(3)}, frame+rest ${((total - renderMs - signMs) / specs.length).toFixed(3)})`);
}
