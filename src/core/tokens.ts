import { createCipheriv, createHmac, timingSafeEqual } from 'node:crypto';
import { hmacSha256, type HmacSha256 } from './hmac-sha256.js';
import { SluiceError } from './errors.js';
import { fromBase32, isId, toBase32 } from './ids.js';

/**
 * Tracking tokens: what an open pixel, a click link or an unsubscribe link carries, signed so that
 * nobody can make one up, and compact because each is repeated in every link of every mail.
 * Verifying needs no Redis read: the token names the account, message, recipient and link itself.
 *
 * Binary layout, then base64url (no padding):
 *
 *   ┌─────────┬────────┬─────────┬──────┬───────────┬────────┬─────────┬──────────┬────────┬─────────┬─────────┐
 *   │ version │ kid    │ kid     │ kind │ msgId     │ idx    │ link    │ issuedAt │ acct   │ account │ MAC     │
 *   │ 1 byte  │ len 1B │ 1–16 B  │ 1 B  │ 10 bytes  │ varint │ varint  │ varint s │ len 1B │ 1–64 B  │ 12 bytes│
 *   └─────────┴────────┴─────────┴──────┴───────────┴────────┴─────────┴──────────┴────────┴─────────┴─────────┘
 *   link is present only for kind 'c'. The MAC is HMAC-SHA256(secret of kid, every byte before it),
 *   truncated to 12 bytes.
 *
 * An unsubscribe token ('u') may also carry its recipient's address, encrypted, between the account
 * and the MAC, so that its link works after the message's record is purged (retention.records):
 *
 *   ┌──────────┬──────────┬───────────────────────┐
 *   │ addr len │ SIV      │ address, AES-256-CTR  │
 *   │ 1 B      │ 12 bytes │ 1–255 B               │
 *   └──────────┴──────────┴───────────────────────┘
 *   Keys of their own, derived from the kid's secret (HMAC-SHA256 of a label): one for the SIV, one
 *   for the cipher. SIV = HMAC-SHA256(SIV key, msgId bytes ‖ idx varint ‖ address) truncated to 12
 *   bytes, and the counter block is the SIV then 4 zero bytes: a keystream is only ever reused for
 *   the same recipient of the same message with the same address, so it reveals nothing (RFC 5297's
 *   synthetic IV idea; the MAC over the whole token authenticates it). Only the token's signer and
 *   the servers that hold its key can read the address; the URL shows none of it.
 *
 * Why 12 bytes (96 bits) of MAC: a forger can only test guesses online, one HTTP request each, and the
 * server answers every bad guess the same way. At a million guesses a second, 2^96 guesses take about
 * 2.5·10^15 years; 96 bits is also the floor RFC 2104 §5 and NIST SP 800-107 accept for a truncated HMAC
 * (no shorter than half the hash or 80 bits). 16 bytes would add 5 URL characters to every link and
 * buy nothing against an attacker that cannot test offline. A typical click token is ~70 characters.
 *
 * The message id goes in as the 80 bits its 16 base32 characters hold, so one message's token cannot
 * be re-targeted to another without breaking the MAC; the version byte lets the layout change later.
 */
export type TokenKind = 'o' | 'c' | 'u';

export interface TokenPayload {
  readonly kind: TokenKind;
  readonly account: string;
  readonly msgId: string;
  /** Recipient index in the message. */
  readonly idx: number;
  /** Click tokens only: the index of the link in the message's link table. */
  readonly link?: number;
  /** Seconds since epoch: when the mail was rendered (the classifier spots clicks seconds after it). */
  readonly issuedAt: number;
  /** Unsubscribe tokens only, when signed with one: the recipient's address (decrypted). */
  readonly address?: string;
}

export interface TokenKey {
  /** 1–16 URL-safe characters, written into each token so the right key verifies it. */
  readonly id: string;
  readonly secret: Buffer | string;
  /** ms since epoch: a retired key verifies until then, and never signs. */
  readonly notAfter?: number;
}

export interface TokenCodecOptions {
  readonly keys: readonly TokenKey[];
  readonly signWith: string;
}

/**
 * Everything a token says but its kind and link: one recipient's copy of one message. `address`
 * goes (encrypted) into the copy's unsubscribe token only; one longer than 255 UTF-8 bytes (no
 * SMTP path is) is left out.
 */
export type TokenSubject = Omit<TokenPayload, 'kind' | 'link'>;

export interface TokenCodec {
  /** What it was made from: plain data, so a worker thread can make the same codec. */
  readonly options: TokenCodecOptions;
  sign(payload: TokenPayload): string;
  /**
   * Signs the tokens of one copy: the subject is checked and encoded once, each token then costs
   * its MAC (a copy of a long newsletter signs one per link). Throws as sign does.
   */
  signer(subject: TokenSubject): (kind: TokenKind, link?: number) => string;
  /**
   * The payload, or null for anything altered, truncated, extended, unknown-key or retired-key, and
   * for a token of another kind than `kind` when it is given (a click token is no pixel).
   */
  verify(token: string, now: number, kind?: TokenKind): TokenPayload | null;
}

const VERSION = 1;
const MAC_BYTES = 12;
const ID_BYTES = 10;
const MAX_KID_BYTES = 16;
const MAX_ACCOUNT_BYTES = 64;
/** 7 varint bytes hold 49 bits: every safe integer a recipient index or a time in seconds needs. */
const MAX_VARINT_BYTES = 7;
const MAX_VARINT = 2 ** 49;
/** An unsubscribe token's encrypted address: its length byte, the SIV and at most this many bytes. */
const SIV_BYTES = 12;
const MAX_ADDRESS_BYTES = 255;
/**
 * Longer than any token the layout can produce (the largest, an unsubscribe token with a 64-byte
 * account and a 255-byte address, is 388 bytes, 518 characters); refuses huge inputs before decoding.
 */
const MAX_TOKEN_CHARS = 518;
/** Labels of the keys derived from a kid's secret for the address of an unsubscribe token. */
const SIV_KEY_LABEL = 'sluice token address siv v1';
const CIPHER_KEY_LABEL = 'sluice token address cipher v1';
const KID_RE = /^[A-Za-z0-9_-]{1,16}$/;
const B64URL_RE = /^[A-Za-z0-9_-]+$/;
const KINDS: readonly TokenKind[] = ['o', 'c', 'u'];

function invalid(message: string): SluiceError {
  return new SluiceError('SLUICE_INTERNAL', `token: ${message}`);
}

export function createTokenCodec(opts: TokenCodecOptions): TokenCodec {
  const keys = new Map<string, { mac: HmacSha256; sealer: AddressSealer; notAfter: number | undefined }>();
  for (const k of opts.keys) {
    if (!KID_RE.test(k.id)) throw invalid(`key id '${k.id}' must be 1–16 of [A-Za-z0-9_-]`);
    if (keys.has(k.id)) throw invalid(`key id '${k.id}' appears twice`);
    const secret = typeof k.secret === 'string' ? Buffer.from(k.secret, 'utf8') : k.secret;
    // 16 bytes: below that an offline search of the key from one token becomes thinkable.
    if (secret.length < 16) throw invalid(`key '${k.id}' is shorter than 16 bytes`);
    keys.set(k.id, { mac: hmacSha256(secret), sealer: addressSealer(secret), notAfter: k.notAfter });
  }
  const signKey = keys.get(opts.signWith);
  if (!signKey) throw invalid(`signWith names no key ('${opts.signWith}')`);
  if (signKey.notAfter !== undefined) throw invalid(`key '${opts.signWith}' is retired (notAfter) and cannot sign`);
  const signKid = Buffer.from(opts.signWith, 'ascii');
  const digest = Buffer.alloc(32);

  const signer = (p: TokenSubject): ((kind: TokenKind, link?: number) => string) => {
    if (!isId(p.msgId)) throw invalid('msgId is not an id');
    const account = Buffer.from(p.account, 'utf8');
    if (account.length < 1 || account.length > MAX_ACCOUNT_BYTES) throw invalid('account must be 1–64 bytes');
    const head: number[] = [VERSION, signKid.length, ...signKid, 0, ...idToBytes(p.msgId)];
    const kindAt = 2 + signKid.length;
    writeVarint(head, p.idx);
    const tail: number[] = [];
    writeVarint(tail, p.issuedAt);
    tail.push(account.length, ...account);
    const address = p.address === undefined ? null : Buffer.from(p.address, 'utf8');
    const sealed = address !== null && address.length >= 1 && address.length <= MAX_ADDRESS_BYTES ? signKey.sealer.seal(idToBytes(p.msgId), p.idx, address) : null;
    // head, the link's varint (clicks), tail, the sealed address ('u'), then the MAC: one buffer per
    // copy, rewritten per token.
    const buf = Buffer.alloc(head.length + MAX_VARINT_BYTES + tail.length + (sealed?.length ?? 0) + MAC_BYTES);
    buf.set(head);
    const tailBytes = Buffer.from(tail);
    return (kind, link) => {
      if (!KINDS.includes(kind)) throw invalid(`unknown kind '${String(kind)}'`);
      if ((kind === 'c') !== (link !== undefined)) throw invalid('link is required for click tokens and only for them');
      buf[kindAt] = kind.charCodeAt(0);
      let at = head.length;
      if (link !== undefined) at = putVarint(buf, at, link);
      at += tailBytes.copy(buf, at);
      if (kind === 'u' && sealed !== null) at += sealed.copy(buf, at);
      signKey.mac(buf, 0, at, digest);
      digest.copy(buf, at, 0, MAC_BYTES);
      return buf.toString('base64url', 0, at + MAC_BYTES);
    };
  };

  return {
    options: opts,
    signer,
    sign: (p) => signer(p)(p.kind, p.link),

    verify(token, now, expected) {
      if (token.length > MAX_TOKEN_CHARS || !B64URL_RE.test(token) || !canonicalTail(token)) return null;
      const buf = Buffer.from(token, 'base64url');
      if (buf.length <= MAC_BYTES) return null;
      const body = buf.subarray(0, buf.length - MAC_BYTES);
      const r = new Reader(body);
      if (r.byte() !== VERSION) return null;
      const kidLen = r.byte();
      if (kidLen < 1 || kidLen > MAX_KID_BYTES) return null;
      const key = keys.get(r.bytes(kidLen).toString('latin1'));
      if (!key || (key.notAfter !== undefined && now > key.notAfter)) return null;
      // The MAC is checked before the rest is trusted; timingSafeEqual leaks nothing about how much matched.
      key.mac(buf, 0, body.length, digest);
      if (!timingSafeEqual(digest.subarray(0, MAC_BYTES), buf.subarray(body.length))) return null;
      const kind = String.fromCharCode(r.byte()) as TokenKind;
      if (!KINDS.includes(kind) || (expected !== undefined && kind !== expected)) return null;
      const msgId = bytesToId(r.bytes(ID_BYTES));
      const idx = r.varint();
      const link = kind === 'c' ? r.varint() : undefined;
      const issuedAt = r.varint();
      const accLen = r.byte();
      const account = r.bytes(accLen).toString('utf8');
      if (r.failed || accLen < 1) return null;
      if (kind === 'u' && !r.atEnd()) {
        const addrLen = r.byte();
        const siv = r.bytes(SIV_BYTES);
        const sealed = r.bytes(addrLen);
        if (r.failed || !r.atEnd() || addrLen < 1) return null;
        return { kind, account, msgId, idx, issuedAt, address: key.sealer.open(siv, sealed).toString('utf8') };
      }
      if (!r.atEnd()) return null;
      return link === undefined ? { kind, account, msgId, idx, issuedAt } : { kind, account, msgId, idx, link, issuedAt };
    },
  };
}

/** Encrypts and decrypts the address of an unsubscribe token under one key (see the layout above). */
interface AddressSealer {
  /** [length, SIV…, ciphertext…] of `address` (1–255 bytes) for recipient `idx` of message `msgId` (its 10 bytes). */
  seal(msgId: Buffer, idx: number, address: Buffer): Buffer;
  /** The address of a sealed field whose MAC was verified. */
  open(siv: Buffer, sealed: Buffer): Buffer;
}

function addressSealer(secret: Buffer): AddressSealer {
  const sivKey = createHmac('sha256', secret).update(SIV_KEY_LABEL).digest();
  const cipherKey = createHmac('sha256', secret).update(CIPHER_KEY_LABEL).digest();
  const counterBlock = (siv: Buffer): Buffer => Buffer.concat([siv, Buffer.alloc(16 - SIV_BYTES)]);
  const ctr = (siv: Buffer, data: Buffer): Buffer => {
    const c = createCipheriv('aes-256-ctr', cipherKey, counterBlock(siv));
    return Buffer.concat([c.update(data), c.final()]);
  };
  return {
    seal(msgId, idx, address) {
      const where: number[] = [];
      writeVarint(where, idx);
      const siv = createHmac('sha256', sivKey).update(msgId).update(Buffer.from(where)).update(address).digest().subarray(0, SIV_BYTES);
      return Buffer.concat([Buffer.from([address.length]), siv, ctr(siv, address)]);
    },
    open: (siv, sealed) => ctr(siv, sealed),
  };
}

/**
 * Whether base64url text is the one canonical spelling of its bytes: Node's decoder ignores stray
 * low bits in the last character, so without this check one token would have several text forms.
 * A length of 4n+1 is never valid; at 4n+2 the last character carries 2 bits (4 must be zero), at
 * 4n+3 it carries 4 bits (2 must be zero). The text is already known to be base64url characters.
 */
function canonicalTail(text: string): boolean {
  const rest = text.length % 4;
  if (rest === 0) return true;
  if (rest === 1) return false;
  const c = text.charCodeAt(text.length - 1);
  const v = c === 95 ? 63 : c === 45 ? 62 : c >= 97 ? c - 71 : c >= 65 ? c - 65 : c + 4;
  return (v & (rest === 2 ? 0x0f : 0x03)) === 0;
}

/** The path a token is served under: `/o/<t>.gif`, `/c/<t>`, `/u/<t>`. */
export function tokenPath(kind: TokenKind, token: string): string {
  return kind === 'o' ? `/o/${token}.gif` : `/${kind}/${token}`;
}

/** `publicBaseUrl` (e.g. https://t.example.com) joined with tokenPath. */
export function tokenUrl(publicBaseUrl: string, kind: TokenKind, token: string): string {
  return tokenBase(publicBaseUrl) + tokenPath(kind, token);
}

/** What tokenUrl puts before the path: the base without trailing slashes. */
export function tokenBase(publicBaseUrl: string): string {
  return publicBaseUrl.replace(/\/+$/, '');
}

// 16 characters × 5 bits = 80 bits = 10 bytes, most significant first. Done in two halves of
// 8 characters = 40 bits = 5 bytes, which fit a double exactly (no BigInt on the hot path).
function idToBytes(id: string): Buffer {
  const out = Buffer.alloc(ID_BYTES);
  for (let h = 0; h < 2; h++) {
    out.writeUIntBE(fromBase32(id, h * 8, 8), h * 5, 5);
  }
  return out;
}

function bytesToId(bytes: Buffer): string {
  return toBase32(bytes.readUIntBE(0, 5), 8) + toBase32(bytes.readUIntBE(5, 5), 8);
}

/** LEB128-style unsigned varint: 7 bits a byte, low bits first, high bit = more follows. */
function writeVarint(out: number[], value: number): void {
  const bytes = Buffer.alloc(MAX_VARINT_BYTES);
  out.push(...bytes.subarray(0, putVarint(bytes, 0, value)));
}

/** writeVarint into `buf` at `at`; returns the position after it. */
function putVarint(buf: Buffer, at: number, value: number): number {
  if (!Number.isSafeInteger(value) || value < 0 || value >= MAX_VARINT) throw invalid(`${value} is not an integer from 0 to 2^49 - 1`);
  let v = value;
  let i = at;
  while (v >= 0x80) {
    buf[i++] = (v % 0x80) | 0x80;
    v = Math.floor(v / 0x80);
  }
  buf[i++] = v;
  return i;
}

/** Reads a body without throwing: any overrun sets `failed` and yields zeros. */
class Reader {
  private pos = 0;
  failed = false;
  constructor(private readonly buf: Buffer) {}

  byte(): number {
    if (this.pos >= this.buf.length) {
      this.failed = true;
      return 0;
    }
    return this.buf[this.pos++] as number;
  }

  bytes(n: number): Buffer {
    if (this.pos + n > this.buf.length) {
      this.failed = true;
      this.pos = this.buf.length;
      return Buffer.alloc(n);
    }
    const out = this.buf.subarray(this.pos, this.pos + n);
    this.pos += n;
    return out;
  }

  varint(): number {
    let value = 0;
    let scale = 1;
    for (let i = 0; i < MAX_VARINT_BYTES; i++) {
      const b = this.byte();
      value += (b & 0x7f) * scale;
      // A trailing zero byte would give a second spelling of the same number: refuse it.
      if ((b & 0x80) === 0) {
        if (b === 0 && i > 0) this.failed = true;
        return value;
      }
      scale *= 0x80;
    }
    this.failed = true;
    return 0;
  }

  atEnd(): boolean {
    return this.pos === this.buf.length;
  }
}
