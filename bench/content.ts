/**
 * Realistic, personal bulk mail for the benchmarks: a table-layout HTML newsletter (inline styles,
 * images, links, varied prose; not one repeated character) of about a target size, and the
 * per-recipient values merged into it. Everything per recipient goes through `personalise`, so every
 * copy is different and must be rendered and signed on its own.
 *
 * The template is built once; `messageJsonPiecesFactory` splices the recipient's values between
 * constant parts that were escaped and UTF-8 encoded ahead of time, so the load generator spends its
 * CPU on sending rather than on JSON.stringify and encoding of megabytes per batch.
 */

const FIRST = ['Ada', 'Grace', 'Linus', 'Margaret', 'Ken', 'Barbara', 'Dennis', 'Frances', 'Edsger', 'Radia', 'Donald', 'Hedy', 'Alan', 'Katherine', 'John', 'Sophie'];
const LAST = ['Lovelace', 'Hopper', 'Torvalds', 'Hamilton', 'Thompson', 'Liskov', 'Ritchie', 'Allen', 'Dijkstra', 'Perlman', 'Knuth', 'Lamarr', 'Turing', 'Johnson', 'Backus', 'Wilson'];

const WORDS = (
  'delivery engine queue throughput latency signature domain reputation campaign audience segment ' +
  'newsletter release feature update pricing webinar workshop customer story roadmap security ' +
  'performance migration integration dashboard analytics report summary invitation community event ' +
  'season offer discount shipping order account profile preference privacy policy support guide'
).split(' ');

/** Deterministic pseudo-random numbers (xorshift32): the same content on every run. */
function rng(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return (x >>> 0) / 0x1_0000_0000;
  };
}

function sentence(next: () => number): string {
  const n = 8 + Math.floor(next() * 14);
  const words: string[] = [];
  for (let i = 0; i < n; i++) words.push(WORDS[Math.floor(next() * WORDS.length)] as string);
  const s = words.join(' ');
  return s.charAt(0).toUpperCase() + s.slice(1) + '.';
}

function article(next: () => number, i: number): string {
  const para = Array.from({ length: 3 + Math.floor(next() * 3) }, () => sentence(next)).join(' ');
  return (
    `<tr><td style="padding:24px 32px;border-bottom:1px solid #e5e7eb;font-family:Helvetica,Arial,sans-serif">` +
    `<img src="https://cdn.news.example/img/story-${i}.jpg" width="536" height="220" alt="Story ${i}" style="display:block;border:0;border-radius:6px">` +
    `<h2 style="font-size:20px;line-height:28px;color:#111827;margin:16px 0 8px">${sentence(next).slice(0, 60)}</h2>` +
    `<p style="font-size:15px;line-height:24px;color:#374151;margin:0 0 12px">${para}</p>` +
    `<a href="https://news.example/stories/${i}?utm_source=newsletter&amp;utm_medium=email" style="color:#2563eb;font-weight:bold">Read the full story &rarr;</a>` +
    `</td></tr>\n`
  );
}

export interface Recipient {
  index: number;
  name: string;
  address: string;
}

/** Recipient i: spread evenly over `domains` destination domains d00.bench.test … */
export function recipient(i: number, domains: number): Recipient {
  const d = String(i % domains).padStart(2, '0');
  const first = FIRST[i % FIRST.length] as string;
  const last = LAST[Math.floor(i / FIRST.length) % LAST.length] as string;
  return { index: i, name: `${first} ${last}`, address: `${first.toLowerCase()}.${last.toLowerCase()}.${i}@d${d}.bench.test` };
}

/** The HTML template of about `bytes` bytes, with {{name}} {{first}} {{email}} {{token}} placeholders. */
export function newsletterTemplate(bytes: number): string {
  const next = rng(bytes);
  const head =
    '<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">' +
    '<title>Your weekly digest</title></head><body style="margin:0;background:#f3f4f6">\n' +
    '<table role="presentation" width="100%" cellpadding="0" cellspacing="0"><tr><td align="center">\n' +
    '<table role="presentation" width="600" cellpadding="0" cellspacing="0" style="background:#ffffff">\n' +
    '<tr><td style="padding:32px;font-family:Helvetica,Arial,sans-serif;font-size:16px;color:#111827">' +
    'Hello {{first}},<br>here is what happened this week, picked for {{name}}.</td></tr>\n';
  const foot =
    '<tr><td style="padding:24px 32px;font-family:Helvetica,Arial,sans-serif;font-size:12px;color:#6b7280">' +
    'You receive this because {{email}} subscribed to the digest. ' +
    '<a href="https://news.example/u/{{token}}" style="color:#6b7280">Unsubscribe</a> · ' +
    '<a href="https://news.example/prefs/{{token}}" style="color:#6b7280">Preferences</a></td></tr>\n' +
    '</table></td></tr></table></body></html>\n';
  let body = '';
  for (let i = 0; head.length + body.length + foot.length < bytes; i++) body += article(next, i);
  return head + body + foot;
}

/** A JSON string literal's inner text (no surrounding quotes). */
function jsonInner(s: string): string {
  return JSON.stringify(s).slice(1, -1);
}

/**
 * Builds the JSON of one API message per recipient, as UTF-8 pieces appended to `out`: the template
 * is split at its placeholders, escaped and encoded once; a message is then the constant pieces and
 * the recipient's values, so the load generator writes a batch with one copy (Buffer.concat) instead
 * of building, joining and UTF-8 encoding megabytes of strings per request.
 */
export function messageJsonPiecesFactory(opts: { bytes: number; from: string; domains: number }): (i: number, out: Buffer[]) => void {
  const pieces = jsonInner(newsletterTemplate(opts.bytes))
    .split(/(\{\{(?:name|first|email|token)\}\})/)
    .map((p) => (/^\{\{\w+\}\}$/.test(p) ? p : Buffer.from(p, 'utf8')));
  const from = JSON.stringify(opts.from);
  return (i, out) => {
    const r = recipient(i, opts.domains);
    const first = r.name.split(' ')[0] as string;
    const token = `t${i.toString(36)}x${((i * 2654435761) >>> 0).toString(36)}`;
    const values: Record<string, Buffer> = {
      '{{name}}': Buffer.from(jsonInner(r.name)),
      '{{first}}': Buffer.from(jsonInner(first)),
      '{{email}}': Buffer.from(jsonInner(r.address)),
      '{{token}}': Buffer.from(token),
    };
    out.push(
      Buffer.from(
        `{"from":${from},"to":[{"name":${JSON.stringify(r.name)},"address":${JSON.stringify(r.address)}}],` +
          `"subject":${JSON.stringify(`${first}, your weekly digest #${i}`)},"html":"`,
      ),
    );
    for (const p of pieces) out.push(typeof p === 'string' ? (values[p] as Buffer) : p);
    out.push(
      Buffer.from(
        `","headers":{"List-Unsubscribe":"<https://news.example/u/${token}>","List-Unsubscribe-Post":"List-Unsubscribe=One-Click"},` +
          `"tags":["digest"],"metadata":{"recipient":${i}}}`,
      ),
    );
  };
}

/** One API message's JSON text (messageJsonPiecesFactory's pieces, joined). */
export function messageJsonFactory(opts: { bytes: number; from: string; domains: number }): (i: number) => string {
  const pieces = messageJsonPiecesFactory(opts);
  return (i) => {
    const out: Buffer[] = [];
    pieces(i, out);
    return Buffer.concat(out).toString('utf8');
  };
}
