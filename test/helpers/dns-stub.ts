import { createSocket, type RemoteInfo } from 'node:dgram';
import dnsPacket from 'dns-packet';

/**
 * A real DNS server over UDP on 127.0.0.1:<ephemeral>, answering from a table. Point a resolver at
 * `server` ('127.0.0.1:port') and it speaks the wire protocol to this stub, so the code under test
 * runs its real resolver path (node:dns / c-ares), not a mock.
 *
 *   const dns = await startDnsStub({
 *     'example.test': { MX: [{ preference: 10, exchange: 'mx.example.test' }], ttl: 300 },
 *     'mx.example.test': { A: ['127.0.0.1'] },
 *     'gone.test': { rcode: 'NXDOMAIN' },
 *     'broken.test': { rcode: 'SERVFAIL' },
 *     'silent.test': { rcode: 'DROP' },                  // never answers: the client times out
 *     'nullmx.test': { MX: [{ preference: 0, exchange: '.' }] },   // RFC 7505
 *     'sel._domainkey.example.test': { TXT: ['v=DKIM1; k=rsa; p=…'] }, // split in 255-byte strings
 *   });
 *   dns.queries('example.test', 'MX'); // how many MX questions for that name arrived
 *
 * A name not in the table answers NXDOMAIN; a name in the table without the asked type answers
 * NOERROR with no records (NODATA), as a real authoritative server does. Names are case-insensitive
 * and a trailing dot is ignored.
 */
export interface DnsRecord {
  MX?: { preference: number; exchange: string }[];
  A?: string[];
  AAAA?: string[];
  TXT?: string[];
  /** TTL of every record of this name, in seconds (default 300). */
  ttl?: number;
  rcode?: 'NXDOMAIN' | 'SERVFAIL' | 'DROP';
}

export interface DnsStub {
  /** '127.0.0.1:port', the form MxResolverOptions.servers takes. */
  server: string;
  host: string;
  port: number;
  /** Questions received for `name` (of `type` if given: 'MX', 'A', 'AAAA', 'TXT', …). */
  queries(name: string, type?: string): number;
  /** Adds or replaces the records of one name. */
  set(name: string, record: DnsRecord): void;
  close(): Promise<void>;
}

// TXT character-strings are at most 255 octets (RFC 1035 §3.3); longer values, like a 2048-bit DKIM
// key, are sent as several strings of one record, which the reader concatenates (RFC 6376 §3.6.2.2).
const TXT_CHUNK_BYTES = 255;
const DEFAULT_TTL_S = 300;

const norm = (name: string): string => name.toLowerCase().replace(/\.$/, '');

function splitTxt(value: string): Buffer[] {
  const bytes = Buffer.from(value, 'utf8');
  const out: Buffer[] = [];
  for (let i = 0; i < bytes.length; i += TXT_CHUNK_BYTES) out.push(bytes.subarray(i, i + TXT_CHUNK_BYTES));
  return out.length > 0 ? out : [Buffer.alloc(0)];
}

function answersFor(name: string, type: string, rec: DnsRecord): dnsPacket.Answer[] {
  const ttl = rec.ttl ?? DEFAULT_TTL_S;
  switch (type) {
    case 'MX':
      return (rec.MX ?? []).map((mx) => ({ type: 'MX', name, ttl, class: 'IN', data: { preference: mx.preference, exchange: mx.exchange } }));
    case 'A':
      return (rec.A ?? []).map((ip) => ({ type: 'A', name, ttl, class: 'IN', data: ip }));
    case 'AAAA':
      return (rec.AAAA ?? []).map((ip) => ({ type: 'AAAA', name, ttl, class: 'IN', data: ip }));
    case 'TXT':
      return (rec.TXT ?? []).map((txt) => ({ type: 'TXT', name, ttl, class: 'IN', data: splitTxt(txt) }));
    default:
      return [];
  }
}

const RCODE_NXDOMAIN = 3;
const RCODE_SERVFAIL = 2;

export async function startDnsStub(zone: Record<string, DnsRecord>): Promise<DnsStub> {
  const table = new Map<string, DnsRecord>();
  for (const [name, rec] of Object.entries(zone)) table.set(norm(name), rec);
  const counts = new Map<string, number>();
  const socket = createSocket('udp4');

  socket.on('message', (msg: Buffer, peer: RemoteInfo) => {
    let query: dnsPacket.Packet;
    try {
      query = dnsPacket.decode(msg);
    } catch {
      return; // not DNS: a real server drops it too
    }
    const question = query.questions?.[0];
    if (query.type !== 'query' || !question) return;
    const name = norm(question.name);
    for (const key of [name, `${name}/${question.type}`]) counts.set(key, (counts.get(key) ?? 0) + 1);

    const rec = table.get(name);
    if (rec?.rcode === 'DROP') return;
    let rcode = 0;
    let answers: dnsPacket.Answer[] = [];
    if (!rec || rec.rcode === 'NXDOMAIN') rcode = RCODE_NXDOMAIN;
    else if (rec.rcode === 'SERVFAIL') rcode = RCODE_SERVFAIL;
    else answers = answersFor(question.name, question.type, rec);

    const response = dnsPacket.encode({
      type: 'response',
      id: query.id ?? 0,
      // RD copied from the query, RA set (we act as a recursive resolver), rcode in the low 4 bits.
      flags: ((query.flags ?? 0) & dnsPacket.RECURSION_DESIRED) | dnsPacket.RECURSION_AVAILABLE | rcode,
      questions: query.questions ?? [],
      answers,
    });
    socket.send(response, peer.port, peer.address);
  });

  await new Promise<void>((resolve, reject) => {
    socket.once('error', reject);
    socket.bind(0, '127.0.0.1', () => {
      socket.off('error', reject);
      resolve();
    });
  });
  const { address, port } = socket.address();

  return {
    server: `${address}:${port}`,
    host: address,
    port,
    queries: (name, type) => counts.get(type ? `${norm(name)}/${type.toUpperCase()}` : norm(name)) ?? 0,
    set: (name, record) => void table.set(norm(name), record),
    close: () => new Promise<void>((resolve) => socket.close(() => resolve())),
  };
}
