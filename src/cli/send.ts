import { readFileSync } from 'node:fs';
import { basename } from 'node:path';
import { request } from 'undici';
import { loadConfig } from '../config/load.js';
import { parseDuration } from '../core/time.js';
import { parse, println, UsageError, type Io } from './args.js';

const USAGE = `Usage: sluice send --from ADDR --to ADDR [--to ADDR…] --subject TEXT (--text TEXT | --text-file F | --html-file F) [options]

Submits one message through the HTTP API of a running Sluice and prints its id. Options:
  --cc ADDR, --bcc ADDR     more recipients (repeatable)
  --attach FILE             attachment (repeatable)
  --header 'Name: value'    extra header (repeatable)
  --api URL                 API base URL (default http://127.0.0.1:<ingress.http.port> from the config)
  --key KEY                 API key (default: the SLUICE_API_KEY variable)
  --config FILE             config file, to find the API port
  --wait                    poll the message until every recipient is delivered, bounced or expired
  --timeout DURATION        give up waiting after this long (default 5m); the mail stays queued

Exit code: 0 accepted (with --wait: every recipient delivered), 1 refused, bounced, expired or still
pending at the timeout, 2 wrong usage.`;

/** As queue/status.ts: a suppressed or cancelled recipient is as final as a bounced one. */
const FINAL_STATES = ['delivered', 'bounced', 'expired', 'suppressed', 'cancelled'];
// A deferred recipient is retried for up to shaping.maxAge (72 h): nobody waits that long at a
// prompt. Five minutes covers a first retry on the default schedule (1m, 5m, …).
const DEFAULT_WAIT = '5m';
// Polling the status twice a second is instant enough for a person and negligible for the API.
const POLL_MS = 500;

interface ApiAnswer {
  id?: string;
  code?: string;
  message?: string;
  errors?: { path: string; message: string }[];
  recipients?: { address: string; state: string; response: string | null }[];
}

function readArg(flag: string, file: string, encoding?: 'utf8'): string | Buffer {
  try {
    return encoding ? readFileSync(file, encoding) : readFileSync(file);
  } catch (err) {
    throw new UsageError(`${flag} ${file}: cannot read it (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`);
  }
}

/** One API call; a network failure or a body that is not JSON becomes an error that names the API. */
async function call(url: string, key: string, init: { method?: 'GET' | 'POST'; body?: string } = {}): Promise<{ status: number; answer: ApiAnswer }> {
  let res;
  try {
    res = await request(url, {
      method: init.method ?? 'GET',
      headers: { authorization: `Bearer ${key}`, ...(init.body !== undefined ? { 'content-type': 'application/json' } : {}) },
      ...(init.body !== undefined ? { body: init.body } : {}),
    });
  } catch (err) {
    throw new ApiError(`cannot reach the API at ${url}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message} (is 'sluice start' running with the ingress role? see --api)`);
  }
  const text = await res.body.text();
  try {
    return { status: res.statusCode, answer: JSON.parse(text) as ApiAnswer };
  } catch {
    throw new ApiError(`the API at ${url} answered ${res.statusCode} with a body that is not JSON: ${JSON.stringify(text.slice(0, 200))}`);
  }
}

class ApiError extends Error {}

export async function runSend(argv: string[], io: Io): Promise<number> {
  const args = parse({
    name: 'send', usage: USAGE,
    options: {
      from: { type: 'string' }, to: { type: 'string', multiple: true }, cc: { type: 'string', multiple: true }, bcc: { type: 'string', multiple: true },
      subject: { type: 'string' }, text: { type: 'string' }, 'text-file': { type: 'string' }, 'html-file': { type: 'string' },
      attach: { type: 'string', multiple: true }, header: { type: 'string', multiple: true },
      api: { type: 'string' }, key: { type: 'string' }, config: { type: 'string', short: 'c' }, wait: { type: 'boolean' }, timeout: { type: 'string' },
    },
  }, argv);
  const v = args.values;
  if (v.help) {
    println(io.out, USAGE);
    return 0;
  }
  if (!v.from || !v.to?.length || v.subject === undefined) throw new UsageError("--from, --to and --subject are required\nRun 'sluice send --help' for usage.");
  const key = v.key ?? io.env['SLUICE_API_KEY'];
  if (!key) throw new UsageError('no API key: pass --key or set SLUICE_API_KEY');
  const waitMs = parseDuration(v.timeout ?? DEFAULT_WAIT);
  if (waitMs === undefined) throw new UsageError(`--timeout '${v.timeout ?? ''}' is not a duration (e.g. '30s', '5m')`);
  if (v.text !== undefined && v['text-file']) throw new UsageError('give --text or --text-file, not both');
  const headers: Record<string, string> = {};
  for (const h of v.header ?? []) {
    const i = h.indexOf(':');
    if (i <= 0) throw new UsageError(`--header must be 'Name: value', got '${h}'`);
    headers[h.slice(0, i).trim()] = h.slice(i + 1).trim();
  }
  const text = v['text-file'] ? (readArg('--text-file', v['text-file'], 'utf8') as string) : v.text;
  const html = v['html-file'] ? (readArg('--html-file', v['html-file'], 'utf8') as string) : undefined;
  const body = {
    from: v.from, to: v.to, cc: v.cc ?? [], bcc: v.bcc ?? [], subject: v.subject,
    ...(text !== undefined ? { text } : {}),
    ...(html !== undefined ? { html } : {}),
    headers,
    attachments: (v.attach ?? []).map((f) => ({ filename: basename(f), content: (readArg('--attach', f) as Buffer).toString('base64') })),
  };
  // Without a scheme ('127.0.0.1:8025', 'localhost:8025') it is not a URL, or one of another scheme.
  if (v.api !== undefined && !(URL.canParse(v.api) && /^https?:$/.test(new URL(v.api).protocol))) {
    throw new UsageError(`--api '${v.api}' is not an http:// or https:// URL (e.g. http://127.0.0.1:8025)\nRun 'sluice send --help' for usage.`);
  }
  const api = (v.api ?? `http://127.0.0.1:${loadConfig({ file: v.config, env: io.env }).ingress.http.port}`).replace(/\/$/, '');

  try {
    const sent = await call(`${api}/v1/messages`, key, { method: 'POST', body: JSON.stringify(body) });
    const id = sent.answer.id;
    if (sent.status !== 202 || !id) {
      println(io.err, `sluice send: refused (${sent.status}): ${sent.answer.code ?? ''} ${sent.answer.message ?? ''}`.trimEnd());
      for (const e of sent.answer.errors ?? []) println(io.err, `  ${e.path}: ${e.message}`);
      return 1;
    }
    println(io.out, id);
    if (!v.wait) return 0;

    const deadline = Date.now() + waitMs;
    for (;;) {
      await new Promise((r) => setTimeout(r, POLL_MS));
      const st = await call(`${api}/v1/messages/${encodeURIComponent(id)}`, key);
      if (st.status !== 200) {
        println(io.err, `sluice send: cannot read the state of ${id} (${st.status}): ${st.answer.code ?? ''} ${st.answer.message ?? ''}`.trimEnd());
        return 1;
      }
      const rcpts = st.answer.recipients ?? [];
      const done = rcpts.length > 0 && rcpts.every((r) => FINAL_STATES.includes(r.state));
      if (done || Date.now() >= deadline) {
        for (const r of rcpts) println(io.out, `${r.address}: ${r.state}${r.response ? ` (${r.response})` : ''}`);
        if (!done) println(io.err, `sluice send: not every recipient is final after ${v.timeout ?? DEFAULT_WAIT}; Sluice keeps trying`);
        return done && rcpts.every((r) => r.state === 'delivered') ? 0 : 1;
      }
    }
  } catch (err) {
    if (!(err instanceof ApiError)) throw err;
    println(io.err, `sluice send: ${err.message}`);
    return 1;
  }
}
