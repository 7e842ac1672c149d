/**
 * What a campaign creation at the template limits costs the other requests of the ingress process:
 * the latency of a cheap request (GET /v1/messages/:id of an unknown id, a 404 after authentication
 * and one Redis read) sent every 20 ms, and the event loop's delay (monitorEventLoopDelay), first
 * with nothing else running, then while campaigns with a ~1 MB template at every limit
 * (render/campaign.ts MAX_*) are created one after another. The HTTP API runs in this process over a
 * fresh redis-server, as in test/ingress.
 *
 *   node --import tsx bench/prepare-campaign.ts [CAMPAIGNS]      (default 6)
 *
 * Prints the figures and writes bench/results/prepare-campaign.json.
 */
import { writeFileSync } from 'node:fs';
import { monitorEventLoopDelay, performance } from 'node:perf_hooks';
import { request } from 'undici';
import { ingressFixture, limitCampaignHtml, startFixtureApi } from '../test/ingress/fixture.js';

const CAMPAIGNS = Number(process.argv[2] ?? 6);
const PROBE_EVERY_MS = 20;
const IDLE_MS = 3000;

const fx = await ingressFixture();
const { api, base } = await startFixtureApi(fx);
const auth = { authorization: `Bearer ${fx.apiKeys.acme}` };
const body = (html: string) => JSON.stringify({ from: 'news@acme.example', subject: 'Hi {{first}}', html, recipients: [{ email: 'reader@d0.test' }] });

async function create(payload: string): Promise<number> {
  const res = await request(`${base}/v1/campaigns`, { method: 'POST', headers: { ...auth, 'content-type': 'application/json' }, body: payload });
  await res.body.text();
  return res.statusCode;
}

/** Probes every PROBE_EVERY_MS until `until` settles: each probe's latency, and the loop's delay meanwhile. */
async function probe(until: Promise<unknown>): Promise<{ probes: number; p50_ms: number; p99_ms: number; max_ms: number; loop_delay_max_ms: number; loop_delay_p99_ms: number }> {
  const latencies: number[] = [];
  const loop = monitorEventLoopDelay({ resolution: 10 });
  loop.enable();
  let done = false;
  void until.finally(() => (done = true));
  while (!done) {
    const t0 = performance.now();
    const res = await request(`${base}/v1/messages/0000000000000000`, { headers: auth });
    await res.body.text();
    if (res.statusCode !== 404) throw new Error(`probe answered ${res.statusCode}`);
    latencies.push(performance.now() - t0);
    await new Promise((r) => setTimeout(r, PROBE_EVERY_MS));
  }
  loop.disable();
  latencies.sort((a, b) => a - b);
  const at = (q: number) => Math.round((latencies[Math.min(latencies.length - 1, Math.floor(q * latencies.length))] ?? 0) * 10) / 10;
  return { probes: latencies.length, p50_ms: at(0.5), p99_ms: at(0.99), max_ms: at(1), loop_delay_max_ms: Math.round(loop.max / 1e5) / 10, loop_delay_p99_ms: Math.round(loop.percentile(99) / 1e5) / 10 };
}

try {
  const big = body(limitCampaignHtml());
  // Warm-up: the code paths, and the preparation worker where there is one.
  if ((await create(body('<p>Hello {{first}}</p>'))) !== 201) throw new Error('warm-up campaign refused');
  const idle = await probe(new Promise((r) => setTimeout(r, IDLE_MS)));
  const t0 = performance.now();
  const creating = (async () => {
    for (let i = 0; i < CAMPAIGNS; i++) {
      const status = await create(big);
      if (status !== 201) throw new Error(`campaign ${i} answered ${status}`);
    }
  })();
  const busy = await probe(creating);
  await creating;
  const perCampaignMs = Math.round((performance.now() - t0) / CAMPAIGNS);
  console.log(`idle:                      ${JSON.stringify(idle)}`);
  console.log(`creating ${CAMPAIGNS} limit campaigns: ${JSON.stringify(busy)}  (${perCampaignMs} ms per campaign)`);
  writeFileSync(new URL('./results/prepare-campaign.json', import.meta.url), JSON.stringify({ date: new Date().toISOString(), campaigns: CAMPAIGNS, template_chars: big.length, per_campaign_ms: perCampaignMs, idle, busy }, null, 2) + '\n');
  console.log('wrote bench/results/prepare-campaign.json');
} finally {
  await api.close();
  await fx.stop();
}
