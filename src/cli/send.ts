import { readFileSync } from 'node:fs';
import { basename } from 'node:path';
import { request } from 'undici';
import { loadConfig } from '../config/load.js';
import { parse, println, UsageError, type Io } from './args.js';

const USAGE = `Usage: sluice send --from ADDR --to ADDR [--to ADDR…] --subject TEXT (--text TEXT | --text-file F | --html-file F) [options]

Submits one message through the HTTP API of a running Sluice and prints its id. Options:
  --cc ADDR, --bcc ADDR     more recipients (repeatable)
  --attach FILE             attachment (repeatable)
  --header 'Name: value'    extra header (repeatable)
  --api URL                 API base URL (default http://127.0.0.1:<ingress.http.port> from the config)
  --key KEY                 API key (default: the SLUICE_API_KEY variable)
  --config FILE             config file, to find the API port
  --wait                    poll the message until every recipient is delivered, bounced or expired`;

export async function runSend(argv: string[], io: Io): Promise<number> {
  const args = parse({
    name: 'send', usage: USAGE,
    options: {
      from: { type: 'string' }, to: { type: 'string', multiple: true }, cc: { type: 'string', multiple: true }, bcc: { type: 'string', multiple: true },
      subject: { type: 'string' }, text: { type: 'string' }, 'text-file': { type: 'string' }, 'html-file': { type: 'string' },
      attach: { type: 'string', multiple: true }, header: { type: 'string', multiple: true },
      api: { type: 'string' }, key: { type: 'string' }, config: { type: 'string', short: 'c' }, wait: { type: 'boolean' },
    },
  }, argv);
  const v = args.values;
  if (v.help) {
    println(io.out, USAGE);
    return 0;
  }
  if (!v.from || !v.to?.length || v.subject === undefined) throw new UsageError('--from, --to and --subject are required');
  const key = v.key ?? io.env['SLUICE_API_KEY'];
  if (!key) throw new UsageError('no API key: pass --key or set SLUICE_API_KEY');
  const api = (v.api ?? `http://127.0.0.1:${loadConfig({ file: v.config, env: io.env }).ingress.http.port}`).replace(/\/$/, '');
  const headers: Record<string, string> = {};
  for (const h of v.header ?? []) {
    const i = h.indexOf(':');
    if (i <= 0) throw new UsageError(`--header must be 'Name: value', got '${h}'`);
    headers[h.slice(0, i).trim()] = h.slice(i + 1).trim();
  }
  const body = {
    from: v.from, to: v.to, cc: v.cc ?? [], bcc: v.bcc ?? [], subject: v.subject,
    ...(v.text !== undefined ? { text: v.text } : {}),
    ...(v['text-file'] ? { text: readFileSync(v['text-file'], 'utf8') } : {}),
    ...(v['html-file'] ? { html: readFileSync(v['html-file'], 'utf8') } : {}),
    headers,
    attachments: (v.attach ?? []).map((f) => ({ filename: basename(f), content: readFileSync(f).toString('base64') })),
  };
  const res = await request(`${api}/v1/messages`, { method: 'POST', headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' }, body: JSON.stringify(body) });
  const answer = (await res.body.json()) as { id?: string; code?: string; message?: string; errors?: { path: string; message: string }[] };
  if (res.statusCode !== 202 || !answer.id) {
    println(io.err, `refused (${res.statusCode}): ${answer.code ?? ''} ${answer.message ?? ''}`);
    for (const e of answer.errors ?? []) println(io.err, `  ${e.path}: ${e.message}`);
    return 1;
  }
  println(io.out, answer.id);
  if (!v.wait) return 0;
  for (;;) {
    await new Promise((r) => setTimeout(r, 500));
    const st = await request(`${api}/v1/messages/${answer.id}`, { headers: { authorization: `Bearer ${key}` } });
    const msg = (await st.body.json()) as { recipients?: { address: string; state: string; response: string | null }[] };
    const rcpts = msg.recipients ?? [];
    if (rcpts.length > 0 && rcpts.every((r) => ['delivered', 'bounced', 'expired'].includes(r.state))) {
      for (const r of rcpts) println(io.out, `${r.address}: ${r.state}${r.response ? ` (${r.response})` : ''}`);
      return rcpts.every((r) => r.state === 'delivered') ? 0 : 1;
    }
  }
}
