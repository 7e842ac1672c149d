import { createSocket } from 'node:dgram';
import { Resolver } from 'node:dns/promises';
import { connect, isIP } from 'node:net';
import dnsPacket from 'dns-packet';
import { parseHostPort } from '../core/host-port.js';
import { pooledRandom } from '../core/random-pool.js';

/**
 * The MX question asked of a recursive resolver over UDP (TCP when the answer is truncated), for the
 * one thing node's resolver cannot give: resolveMx() (c-ares) drops the records' TTL, and a route
 * should live no longer than its MX records. dns-packet does the wire format (RFC 1035 §4 with
 * name compression, EDNS0 OPT records); this file does the exchange.
 *
 * It behaves like c-ares with the settings MxResolver gave it, so swapping one for the other changes
 * nothing an operator sees but the TTL:
 *   - servers: the configured ones, else the system's (/etc/resolv.conf, as c-ares reads it);
 *   - two rounds over the servers in order, the first try waiting timeoutMs/3 and the second twice
 *     that, so one server's tries end within about timeoutMs;
 *   - a server that answers SERVFAIL, REFUSED or another error code is not asked again for this
 *     question: the next one is, at once;
 *   - RD set and an EDNS0 OPT record offering 1232-byte UDP answers (DNS flag day 2020: no IP
 *     fragments on any path); an answer with TC set is asked again over TCP from the same server.
 *
 * Forged answers (RFC 5452): each try has a random 16-bit id and a fresh socket, so a fresh source
 * port chosen by the OS; the socket is connected to the server, and a datagram is taken only if it
 * comes from that server and carries the id, name (case-insensitive), type and class asked.
 * Anything else is dropped and the wait goes on.
 */

/** Failures, all temporary for mail: no server could be asked, none answered, or the answers were errors. */
export type DnsErrorCode = 'ETIMEOUT' | 'ESERVFAIL' | 'EREFUSED' | 'EBADRESP' | 'ECONNREFUSED';

export class DnsError extends Error {
  constructor(
    readonly code: DnsErrorCode,
    message: string,
  ) {
    super(message);
    this.name = 'DnsError';
  }
}

export interface DnsClientOptions {
  /** 'ip', 'ip:port' or '[v6]:port'; empty = the system's. */
  servers: readonly string[];
  /** Budget of one server's two tries (the first gets a third, the second two thirds). */
  timeoutMs: number;
}

export interface DnsResponse {
  rcode: 'NOERROR' | 'NXDOMAIN';
  answers: dnsPacket.Answer[];
}

export interface MxAnswer {
  /** NXDOMAIN: the name (or the end of its CNAME chain) does not exist. */
  rcode: 'NOERROR' | 'NXDOMAIN';
  /** The MX records of the name, or of the end of its CNAME chain; none = NODATA. Root exchange = '.'. */
  records: { exchange: string; priority: number }[];
  /** Shortest TTL of those records and of the CNAMEs followed to them, in ms; null if there were none. */
  ttlMs: number | null;
}

type Server = { host: string; port: number; family: 4 | 6 };
type Question = { name: string; type: dnsPacket.RecordType };

const DNS_PORT = 53;
const TRIES = 2;
const EDNS_UDP_PAYLOAD = 1232;
// BIND follows 16 CNAMEs, Unbound 11; mail domains use one at most, and a longer chain is a loop.
const MAX_CNAME_HOPS = 8;
// RFC 2181 §8: a TTL with the top bit set is to be read as zero.
const MAX_TTL_S = 0x7fffffff;
const RCODE_MASK = 0xf;

export class DnsClient {
  private readonly servers: Server[];
  private readonly firstTryMs: number;

  /** Throws on a server that is not an IP address (a configuration error, found at start-up). */
  constructor(opts: DnsClientOptions) {
    const servers = opts.servers.length > 0 ? opts.servers : new Resolver().getServers();
    this.servers = servers.map(parseServer);
    this.firstTryMs = Math.max(1, Math.floor(opts.timeoutMs / 3));
  }

  /** MX records of `name`, following CNAMEs in the answer. Rejects only with a DnsError. */
  async resolveMx(name: string): Promise<MxAnswer> {
    const { rcode, answers } = await this.query({ name, type: 'MX' });
    let owner = normName(name);
    let ttlS = Infinity;
    for (let hop = 0; ; hop++) {
      const records: MxAnswer['records'] = [];
      for (const a of answers) {
        if (a.type !== 'MX' || a.class !== 'IN' || normName(a.name) !== owner) continue;
        records.push({ exchange: a.data.exchange, priority: a.data.preference ?? 0 });
        ttlS = Math.min(ttlS, ttlOf(a));
      }
      if (records.length > 0) return { rcode, records, ttlMs: ttlS * 1000 };
      // RFC 1034 §3.6.2: the owner is an alias, and the resolver put the target's records after it.
      const alias = answers.find((a) => a.type === 'CNAME' && a.class === 'IN' && normName(a.name) === owner);
      if (alias === undefined || alias.type !== 'CNAME') break;
      if (hop === MAX_CNAME_HOPS) throw new DnsError('EBADRESP', `MX ${name}: more than ${MAX_CNAME_HOPS} CNAMEs`);
      ttlS = Math.min(ttlS, ttlOf(alias));
      owner = normName(alias.data);
    }
    return { rcode, records: [], ttlMs: ttlS === Infinity ? null : ttlS * 1000 };
  }

  /** One question, asked of the servers in turn. Resolves with NOERROR or NXDOMAIN only. */
  async query(question: Question): Promise<DnsResponse> {
    const label = `${question.type} ${question.name}`;
    const done = new Set<Server>(); // answered with an error code: not asked again
    let failure: DnsError | null = null;
    for (let round = 0; round < TRIES; round++) {
      const waitMs = this.firstTryMs * 2 ** round;
      for (const server of this.servers) {
        if (done.has(server)) continue;
        const outcome = await ask(server, question, waitMs);
        if (outcome instanceof DnsError) {
          failure = worse(failure, outcome);
          continue;
        }
        const rcode = rcodeOf(outcome);
        if (rcode === 'NOERROR' || rcode === 'NXDOMAIN') return { rcode, answers: outcome.answers ?? [] };
        done.add(server);
        const code = rcode === 'SERVFAIL' ? 'ESERVFAIL' : rcode === 'REFUSED' ? 'EREFUSED' : 'EBADRESP';
        failure = worse(failure, new DnsError(code, `${label}: ${rcode} from ${serverLabel(server)}`));
      }
    }
    throw failure ?? new DnsError('ECONNREFUSED', `${label}: no DNS server`);
  }
}

/** One try: UDP, then TCP if the answer was truncated. Never rejects. */
async function ask(server: Server, question: Question, waitMs: number): Promise<dnsPacket.DecodedPacket | DnsError> {
  const id = pooledRandom(2).readUInt16BE(0);
  const query = dnsPacket.encode({
    type: 'query',
    id,
    flags: dnsPacket.RECURSION_DESIRED,
    questions: [{ name: question.name, type: question.type, class: 'IN' }],
    additionals: [{ type: 'OPT', name: '.', udpPayloadSize: EDNS_UDP_PAYLOAD, extendedRcode: 0, ednsVersion: 0, flags: 0, flag_do: false, options: [] }],
  });
  const isAnswer = (p: dnsPacket.DecodedPacket): boolean => {
    const q = p.questions?.[0];
    return p.type === 'response' && p.id === id && p.questions?.length === 1 && q !== undefined && q.type === question.type && q.class === 'IN' && normName(q.name) === normName(question.name);
  };
  const udp = await overUdp(server, query, isAnswer, waitMs);
  if (udp instanceof DnsError || !udp.flag_tc) return udp;
  // RFC 7766 §5: a truncated answer is incomplete; the whole one comes over TCP.
  return overTcp(server, query, isAnswer, waitMs);
}

function overUdp(server: Server, query: Buffer, isAnswer: (p: dnsPacket.DecodedPacket) => boolean, waitMs: number): Promise<dnsPacket.DecodedPacket | DnsError> {
  return new Promise((resolve) => {
    const socket = createSocket(server.family === 6 ? 'udp6' : 'udp4');
    let settled = false;
    const finish = (result: dnsPacket.DecodedPacket | DnsError) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.close();
      resolve(result);
    };
    const timer = setTimeout(() => finish(new DnsError('ETIMEOUT', `no answer from ${serverLabel(server)} in ${waitMs} ms`)), waitMs);
    // Send failures, and ICMP port unreachable on the connected socket.
    socket.on('error', (err: NodeJS.ErrnoException) => finish(new DnsError('ECONNREFUSED', `${serverLabel(server)}: ${err.code ?? err.message}`)));
    socket.on('message', (msg, from) => {
      // The kernel already drops datagrams from other peers of a connected socket; this says it here.
      const peer = socket.remoteAddress();
      if (from.address !== peer.address || from.port !== peer.port) return;
      let packet: dnsPacket.DecodedPacket;
      try {
        packet = dnsPacket.decode(msg);
      } catch {
        return;
      }
      if (isAnswer(packet)) finish(packet);
    });
    socket.connect(server.port, server.host, () => {
      if (!settled) socket.send(query);
    });
  });
}

function overTcp(server: Server, query: Buffer, isAnswer: (p: dnsPacket.DecodedPacket) => boolean, waitMs: number): Promise<dnsPacket.DecodedPacket | DnsError> {
  return new Promise((resolve) => {
    const socket = connect({ host: server.host, port: server.port });
    let settled = false;
    let received = Buffer.alloc(0);
    const finish = (result: dnsPacket.DecodedPacket | DnsError) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.destroy();
      resolve(result);
    };
    const timer = setTimeout(() => finish(new DnsError('ETIMEOUT', `no answer over TCP from ${serverLabel(server)} in ${waitMs} ms`)), waitMs);
    socket.on('error', (err: NodeJS.ErrnoException) => finish(new DnsError('ECONNREFUSED', `TCP ${serverLabel(server)}: ${err.code ?? err.message}`)));
    socket.on('close', () => finish(new DnsError('EBADRESP', `TCP ${serverLabel(server)}: closed before a whole answer`)));
    socket.on('data', (chunk: Buffer) => {
      received = Buffer.concat([received, chunk]);
      // RFC 1035 §4.2.2: each message is prefixed with its length in two bytes.
      if (received.length < 2 || received.length < 2 + received.readUInt16BE(0)) return;
      let packet: dnsPacket.DecodedPacket;
      try {
        packet = dnsPacket.decode(received.subarray(2, 2 + received.readUInt16BE(0)));
      } catch {
        finish(new DnsError('EBADRESP', `TCP ${serverLabel(server)}: undecodable answer`));
        return;
      }
      // Nobody else can write into this connection: an answer to another question is a broken server.
      finish(isAnswer(packet) ? packet : new DnsError('EBADRESP', `TCP ${serverLabel(server)}: answer to another question`));
    });
    const length = Buffer.alloc(2);
    length.writeUInt16BE(query.length);
    socket.write(Buffer.concat([length, query]));
  });
}

/** The 4-bit RCODE, widened by the OPT record's upper bits when the server sent one (RFC 6891 §6.1.3). */
function rcodeOf(packet: dnsPacket.DecodedPacket): string {
  const opt = packet.additionals?.find((a) => a.type === 'OPT');
  const extended = opt?.type === 'OPT' ? opt.extendedRcode : 0;
  if (extended !== 0) return `RCODE_${(extended << 4) | ((packet.flags ?? 0) & RCODE_MASK)}`;
  return RCODE_NAMES[(packet.flags ?? 0) & RCODE_MASK] ?? `RCODE_${(packet.flags ?? 0) & RCODE_MASK}`;
}

const RCODE_NAMES: Record<number, string> = { 0: 'NOERROR', 1: 'FORMERR', 2: 'SERVFAIL', 3: 'NXDOMAIN', 4: 'NOTIMP', 5: 'REFUSED' };

// A server's error answer says more than silence, and silence more than a socket that could not send.
const RANK: Record<DnsErrorCode, number> = { ECONNREFUSED: 0, ETIMEOUT: 1, EBADRESP: 2, EREFUSED: 2, ESERVFAIL: 2 };
function worse(kept: DnsError | null, next: DnsError): DnsError {
  return kept === null || RANK[next.code] >= RANK[kept.code] ? next : kept;
}

function ttlOf(answer: { ttl?: number | undefined }): number {
  const ttl = answer.ttl ?? 0;
  return ttl > MAX_TTL_S ? 0 : ttl;
}

function normName(name: string): string {
  return name.toLowerCase().replace(/\.$/, '');
}

/** 'ip', 'ip:port', '[v6]:port' or a bare IPv6 address (the forms Resolver.getServers() gives). */
function parseServer(text: string): Server {
  const { host, port } = parseHostPort(text, DNS_PORT);
  const family = isIP(host);
  if (family === 0) throw new TypeError(`DNS server '${text}' is not an IP address`);
  return { host, port, family: family as 4 | 6 };
}

function serverLabel(server: Server): string {
  return server.family === 6 ? `[${server.host}]:${server.port}` : `${server.host}:${server.port}`;
}
