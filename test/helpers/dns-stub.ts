import { createSocket, type RemoteInfo } from 'node:dgram';
import { createServer, type Socket } from 'node:net';
import dnsPacket from 'dns-packet';

/**
 * A real DNS server on 127.0.0.1:<ephemeral>, UDP and TCP on the same port, answering from a table.
 * Point a resolver at `server` ('127.0.0.1:port') and it speaks the wire protocol to this stub, so
 * the code under test runs its real resolver path (node:dns / c-ares, dns-packet), not a mock.
 *
 *   const dns = await startDnsStub({
 *     'example.test': { MX: [{ preference: 10, exchange: 'mx.example.test' }], ttl: 300 },
 *     'mx.example.test': { A: ['127.0.0.1'] },
 *     'split.test': { MX: [...], ttl: 300, ttls: { MX: 30 } },   // per-type TTL over `ttl`
 *     'alias.test': { CNAME: 'example.test' },           // followed, as a recursive resolver does
 *     'big.test': { MX: [...], truncate: true },          // UDP: TC set, first record only; TCP: all
 *     'spoofed.test': { MX: [...], forge: 'id' },         // a forged UDP reply goes first
 *     'gone.test': { rcode: 'NXDOMAIN' },
 *     'broken.test': { rcode: 'SERVFAIL' },              // or 'REFUSED'
 *     'silent.test': { rcode: 'DROP' },                  // never answers: the client times out
 *     'nullmx.test': { MX: [{ preference: 0, exchange: '.' }] },   // RFC 7505
 *     'sel._domainkey.example.test': { TXT: ['v=DKIM1; k=rsa; p=…'] }, // split in 255-byte strings
 *   });
 *   dns.queries('example.test', 'MX'); // how many MX questions for that name arrived (UDP and TCP)
 *   dns.received('example.test', 'MX'); // those questions: transport, id, RD, EDNS0 size, source port
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
  /** An alias: any other question is answered with this CNAME and the target's records. */
  CNAME?: string;
  /** TTL of every record of this name, in seconds (default 300). */
  ttl?: number;
  /** TTL of the records of one type, over `ttl`. */
  ttls?: Partial<Record<'MX' | 'A' | 'AAAA' | 'TXT' | 'CNAME', number>>;
  rcode?: 'NXDOMAIN' | 'SERVFAIL' | 'REFUSED' | 'DROP';
  /** Over UDP, answer with TC set and only the first record; TCP gets the whole answer. */
  truncate?: boolean;
  /**
   * Over UDP, send a forged reply (MX → FORGED_EXCHANGE) before the real one: with another id, for
   * another name or type, or with everything right but from another port. With rcode 'DROP' the
   * forged reply is the only one.
   */
  forge?: 'id' | 'name' | 'type' | 'source';
}

/** The exchange a forged reply names. */
export const FORGED_EXCHANGE = 'forged.invalid';

/** 127.0.0.<n>: every one is loopback on Linux, so each MX host of a test can have its own address. */
export const loopbackIp = (n: number): string => `127.0.0.${n}`;

/** An MX domain whose exchanges mx0.<domain>, mx1.<domain>, … have the addresses 127.0.0.<hosts[i]>, at preferences 10, 20, … */
export function mxZone(domain: string, hosts: number[]): Record<string, DnsRecord> {
  return {
    [domain]: { MX: hosts.map((_, i) => ({ preference: 10 * (i + 1), exchange: `mx${i}.${domain}` })) },
    ...Object.fromEntries(hosts.map((h, i) => [`mx${i}.${domain}`, { A: [loopbackIp(h)] }])),
  };
}

export interface ReceivedQuery {
  transport: 'udp' | 'tcp';
  id: number;
  recursionDesired: boolean;
  /** The EDNS0 OPT record's UDP payload size; null without one. */
  udpPayloadSize: number | null;
  /** The client's source port. */
  port: number;
}

export interface DnsStub {
  /** '127.0.0.1:port', the form MxResolverOptions.servers takes. */
  server: string;
  host: string;
  port: number;
  /** Questions received for `name` (of `type` if given: 'MX', 'A', 'AAAA', 'TXT', …), UDP and TCP. */
  queries(name: string, type?: string): number;
  /** The questions received for `name` of `type`, oldest first. */
  received(name: string, type: string): ReceivedQuery[];
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
  const ttlOf = (t: keyof NonNullable<DnsRecord['ttls']>) => rec.ttls?.[t] ?? rec.ttl ?? DEFAULT_TTL_S;
  switch (type) {
    case 'MX':
      return (rec.MX ?? []).map((mx) => ({ type: 'MX', name, ttl: ttlOf('MX'), class: 'IN', data: { preference: mx.preference, exchange: mx.exchange } }));
    case 'A':
      return (rec.A ?? []).map((ip) => ({ type: 'A', name, ttl: ttlOf('A'), class: 'IN', data: ip }));
    case 'AAAA':
      return (rec.AAAA ?? []).map((ip) => ({ type: 'AAAA', name, ttl: ttlOf('AAAA'), class: 'IN', data: ip }));
    case 'TXT':
      return (rec.TXT ?? []).map((txt) => ({ type: 'TXT', name, ttl: ttlOf('TXT'), class: 'IN', data: splitTxt(txt) }));
    default:
      return [];
  }
}

const RCODE_NXDOMAIN = 3;
const RCODE_SERVFAIL = 2;
const RCODE_REFUSED = 5;
// Recursive resolvers give up on longer chains too (and a loop would never end).
const MAX_CNAME_HOPS = 8;
// A bound UDP port whose TCP twin is taken (by another process) is given back and another is tried.
const BIND_ATTEMPTS = 10;

type Answered = { rcode: number; answers: dnsPacket.Answer[]; truncate: boolean; forge: DnsRecord['forge'] | undefined } | 'drop';

export async function startDnsStub(zone: Record<string, DnsRecord>): Promise<DnsStub> {
  const table = new Map<string, DnsRecord>();
  for (const [name, rec] of Object.entries(zone)) table.set(norm(name), rec);
  const counts = new Map<string, number>();
  const log = new Map<string, ReceivedQuery[]>();

  /** The answer a recursive resolver would give: CNAMEs followed, rcode of the end of the chain. */
  function answer(question: dnsPacket.Question): Answered {
    const first = table.get(norm(question.name));
    if (first?.rcode === 'DROP') return 'drop';
    const answers: dnsPacket.Answer[] = [];
    let owner = question.name;
    for (let hop = 0; hop <= MAX_CNAME_HOPS; hop++) {
      const rec = table.get(norm(owner));
      const done = (rcode: number) => ({ rcode, answers, truncate: first?.truncate === true, forge: first?.forge });
      if (!rec || rec.rcode === 'NXDOMAIN') return done(RCODE_NXDOMAIN);
      if (rec.rcode === 'SERVFAIL' || rec.rcode === 'DROP') return { ...done(RCODE_SERVFAIL), answers: [] };
      if (rec.rcode === 'REFUSED') return { ...done(RCODE_REFUSED), answers: [] };
      if (rec.CNAME === undefined || question.type === 'CNAME') {
        answers.push(...answersFor(owner, question.type, rec));
        return done(0);
      }
      answers.push({ type: 'CNAME', name: owner, ttl: rec.ttls?.CNAME ?? rec.ttl ?? DEFAULT_TTL_S, class: 'IN', data: rec.CNAME });
      owner = rec.CNAME;
    }
    return { rcode: RCODE_SERVFAIL, answers: [], truncate: false, forge: undefined };
  }

  function encode(query: dnsPacket.Packet, rcode: number, answers: dnsPacket.Answer[], extraFlags = 0): Buffer {
    return dnsPacket.encode({
      type: 'response',
      id: query.id ?? 0,
      // RD copied from the query, RA set (we act as a recursive resolver), rcode in the low 4 bits.
      flags: ((query.flags ?? 0) & dnsPacket.RECURSION_DESIRED) | dnsPacket.RECURSION_AVAILABLE | extraFlags | rcode,
      questions: query.questions ?? [],
      answers,
    });
  }

  /** Decodes and counts a question; null for anything that is not one (a real server drops it). */
  function receive(msg: Buffer, transport: 'udp' | 'tcp', port: number): { query: dnsPacket.DecodedPacket; question: dnsPacket.Question } | null {
    let query: dnsPacket.DecodedPacket;
    try {
      query = dnsPacket.decode(msg);
    } catch {
      return null;
    }
    const question = query.questions?.[0];
    if (query.type !== 'query' || !question) return null;
    const name = norm(question.name);
    for (const key of [name, `${name}/${question.type}`]) counts.set(key, (counts.get(key) ?? 0) + 1);
    const opt = query.additionals?.find((a) => a.type === 'OPT');
    const entry: ReceivedQuery = { transport, id: query.id ?? 0, recursionDesired: query.flag_rd, udpPayloadSize: opt?.type === 'OPT' ? opt.udpPayloadSize : null, port };
    const key = `${name}/${question.type}`;
    log.set(key, [...(log.get(key) ?? []), entry]);
    return { query, question };
  }

  const { socket, tcp, port } = await bindPair();
  // Sends the 'source' forgeries: the right reply from the wrong port.
  const other = createSocket('udp4');
  await new Promise<void>((resolve) => other.bind(0, '127.0.0.1', resolve));
  const connections = new Set<Socket>();

  socket.on('message', (msg: Buffer, peer: RemoteInfo) => {
    const got = receive(msg, 'udp', peer.port);
    if (!got) return;
    const { query, question } = got;
    const rec = table.get(norm(question.name));
    if (rec?.forge !== undefined) {
      const forgedAnswers: dnsPacket.Answer[] = [{ type: 'MX', name: question.name, ttl: DEFAULT_TTL_S, class: 'IN', data: { preference: 0, exchange: FORGED_EXCHANGE } }];
      const forged: dnsPacket.Packet = { ...query };
      if (rec.forge === 'id') forged.id = ((query.id ?? 0) + 1) & 0xffff;
      if (rec.forge === 'name') forged.questions = [{ ...question, name: `forged.${question.name}` }];
      if (rec.forge === 'type') forged.questions = [{ ...question, type: question.type === 'A' ? 'AAAA' : 'A' }];
      (rec.forge === 'source' ? other : socket).send(encode(forged, 0, forgedAnswers), peer.port, peer.address);
    }
    const result = answer(question);
    if (result === 'drop') return;
    const response = result.truncate
      ? encode(query, result.rcode, result.answers.slice(0, 1), dnsPacket.TRUNCATED_RESPONSE)
      : encode(query, result.rcode, result.answers);
    socket.send(response, peer.port, peer.address);
  });

  tcp.on('connection', (conn: Socket) => {
    connections.add(conn);
    conn.on('close', () => connections.delete(conn));
    conn.on('error', () => conn.destroy());
    let buffered = Buffer.alloc(0);
    conn.on('data', (chunk: Buffer) => {
      buffered = Buffer.concat([buffered, chunk]);
      // Each message has a two-byte length in front (RFC 1035 §4.2.2).
      while (buffered.length >= 2 && buffered.length >= 2 + buffered.readUInt16BE(0)) {
        const msg = buffered.subarray(2, 2 + buffered.readUInt16BE(0));
        buffered = buffered.subarray(2 + msg.length);
        const got = receive(msg, 'tcp', conn.remotePort ?? 0);
        if (!got) continue;
        const result = answer(got.question);
        if (result === 'drop') continue;
        const response = encode(got.query, result.rcode, result.answers);
        const length = Buffer.alloc(2);
        length.writeUInt16BE(response.length);
        conn.write(Buffer.concat([length, response]));
      }
    });
  });

  return {
    server: `127.0.0.1:${port}`,
    host: '127.0.0.1',
    port,
    queries: (name, type) => counts.get(type ? `${norm(name)}/${type.toUpperCase()}` : norm(name)) ?? 0,
    received: (name, type) => [...(log.get(`${norm(name)}/${type.toUpperCase()}`) ?? [])],
    set: (name, record) => void table.set(norm(name), record),
    close: async () => {
      for (const conn of connections) conn.destroy();
      await Promise.all([
        new Promise<void>((resolve) => socket.close(() => resolve())),
        new Promise<void>((resolve) => other.close(() => resolve())),
        new Promise<void>((resolve) => tcp.close(() => resolve())),
      ]);
    },
  };
}

/** A UDP socket and a TCP listener on one ephemeral port of 127.0.0.1, as DNS servers have. */
async function bindPair(): Promise<{ socket: ReturnType<typeof createSocket>; tcp: ReturnType<typeof createServer>; port: number }> {
  for (let attempt = 1; ; attempt++) {
    const socket = createSocket('udp4');
    await new Promise<void>((resolve, reject) => {
      socket.once('error', reject);
      socket.bind(0, '127.0.0.1', () => {
        socket.off('error', reject);
        resolve();
      });
    });
    const { port } = socket.address();
    const tcp = createServer();
    try {
      await new Promise<void>((resolve, reject) => {
        tcp.once('error', reject);
        tcp.listen(port, '127.0.0.1', () => {
          tcp.off('error', reject);
          resolve();
        });
      });
      return { socket, tcp, port };
    } catch (err) {
      await new Promise<void>((resolve) => socket.close(() => resolve()));
      if (attempt === BIND_ATTEMPTS) throw err;
    }
  }
}
