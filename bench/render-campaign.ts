/**
 * Campaign copies rendered and signed per second on one core: a 10 KB html newsletter template
 * (bench/content.ts) prepared once with prepareCampaign, then one personal copy per recipient —
 * merge, tracking tokens, the text part, MIME composition, RSA-2048 DKIM signature and SMTP framing —
 * in this thread, exactly as a render worker does it. Prints the figures and writes
 * bench/results/render-campaign.json.
 *   node --import tsx bench/render-campaign.ts       (BENCH_COPIES=3000 by default)
 */
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { newId } from '../src/core/ids.js';
import { prepareCampaign } from '../src/render/campaign.js';
import type { RenderTask } from '../src/render/protocol.js';
import { createRenderer } from '../src/render/renderer.js';
import { newsletterTemplate, recipient } from './content.js';

const COPIES = Number(process.env['BENCH_COPIES'] ?? 3000);
const WARMUP = 300;
const TEMPLATE_BYTES = 10 * 1024;

const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
const render = createRenderer({
  keys: [{ domain: 'news.example', selector: 's1', algorithm: 'rsa', privateKeyPem: rsa }],
  hostname: 'mta.news.example',
  tracking: { publicBaseUrl: 'https://t.news.example', keys: [{ id: 'k1', secret: randomBytes(32) }], signWith: 'k1', bounceDomain: 'bounce.news.example' },
});

// The newsletter's own unsubscribe link becomes Sluice's; its other merge fields stay.
const html = newsletterTemplate(TEMPLATE_BYTES).replace('https://news.example/u/{{token}}', '{{unsubscribe_url}}');
const prepareStarted = performance.now();
const { template, links } = prepareCampaign({ from: { name: 'News', address: 'digest@news.example' }, subject: '{{first}}, your weekly digest', html, tracking: { opens: true, clicks: true } });
const prepareMs = performance.now() - prepareStarted;
const source = JSON.stringify(template);
const campaignId = newId();

function task(no: number): RenderTask {
  const r = recipient(no, 100);
  const first = r.name.split(' ')[0] as string;
  return {
    msgId: campaignId,
    kind: 'campaign',
    source,
    signingDomain: 'news.example',
    acceptedAt: Date.now(),
    frame: true,
    campaign: { recipient: { no, address: r.address, fields: { first, name: r.name, token: `t${no.toString(36)}` } }, account: 'acme', mode: 'full' },
  };
}

let renderMs = 0;
let signMs = 0;
let bytes = 0;
for (let i = 0; i < WARMUP; i++) {
  const r = await render(task(i));
  if (!r.ok) throw new Error(r.message);
}
const started = performance.now();
for (let i = 0; i < COPIES; i++) {
  const r = await render(task(WARMUP + i));
  if (!r.ok) throw new Error(r.message);
  renderMs += r.renderMs;
  signMs += r.signMs.reduce((a, b) => a + b, 0);
  bytes += r.message.byteLength;
}
const totalMs = performance.now() - started;

const perSecond = Math.round((COPIES * 1000) / totalMs);
const result = {
  date: new Date().toISOString(),
  node: process.version,
  cpu: cpus()[0]?.model ?? 'unknown',
  template_bytes: html.length,
  links: links.length,
  copies: COPIES,
  prepare_ms: Number(prepareMs.toFixed(2)),
  copy_bytes_avg: Math.round(bytes / COPIES),
  ms_per_copy: Number((totalMs / COPIES).toFixed(3)),
  render_ms_per_copy: Number((renderMs / COPIES).toFixed(3)),
  sign_ms_per_copy: Number((signMs / COPIES).toFixed(3)),
  render_sign_per_s_per_core: perSecond,
};
console.log(
  `campaign copies, ${(html.length / 1024).toFixed(1)} KB html, ${links.length} tracked links, RSA-2048, one thread: ` +
    `${perSecond} copies/s (${result.ms_per_copy} ms each: render ${result.render_ms_per_copy}, sign ${result.sign_ms_per_copy}, ` +
    `frame+rest ${(result.ms_per_copy - result.render_ms_per_copy - result.sign_ms_per_copy).toFixed(3)}); prepared once in ${result.prepare_ms} ms`,
);
const out = fileURLToPath(new URL('./results/', import.meta.url));
mkdirSync(out, { recursive: true });
writeFileSync(`${out}render-campaign.json`, JSON.stringify(result, null, 2) + '\n');
