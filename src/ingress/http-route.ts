import { SluiceError, type FieldError } from '../core/errors.js';
import { parseAddress } from '../core/address.js';

/**
 * What every route module of the HTTP API shares: the answer it hands back to http-api.ts, the
 * request pieces it reads (path and query, a page's cursor and limit, a JSON Content-Type, an address in
 * the path) and the 405
 * it throws. One copy, so the routes cannot drift apart in how they read a request.
 */

/** A route's JSON answer, for http-api.ts to send. */
export interface RouteAnswer {
  readonly status: number;
  /** Undefined for a 204. */
  readonly body: unknown;
  /** What the request changed, for the audit log (ids only: an address as its addressRef); undefined when it changed nothing. */
  readonly audit?: { readonly action: string; readonly target: string } | undefined;
}

/** application/json, with or without parameters (charset). */
export const JSON_TYPE = /^application\/json\s*(?:;|$)/i;

// RFC 5321 bounds a path at 256 octets; 320 (64 + 1 + 255) admits what older software wrote.
export const MAX_ADDRESS = 320;

/** 405, with the methods the path allows (http-api.ts writes them into the Allow header). */
export function methodNotAllowed(allow: string): SluiceError {
  return Object.assign(new SluiceError('SLUICE_INGRESS_METHOD_NOT_ALLOWED'), { allow });
}

/** The path of a request URL and its query parameters. */
export function splitUrl(url: string): { path: string; query: URLSearchParams } {
  const q = url.indexOf('?');
  return q === -1 ? { path: url, query: new URLSearchParams() } : { path: url.slice(0, q), query: new URLSearchParams(url.slice(q + 1)) };
}

/** Items per page of a paged GET (`?limit=`) when none is asked for, and at most: 1000 bounds one answer. */
export const DEFAULT_PAGE = 100;
export const MAX_PAGE = 1000;

/**
 * A paged GET's `?cursor=` (null for the first page; `validCursor` tells a previous page's cursor from
 * anything else) and `?limit=` (DEFAULT_PAGE by default, 1 to MAX_PAGE): 400 naming each bad one.
 * The answer carries the next page's `cursor`, null after the last.
 */
export function pageQuery(query: URLSearchParams, validCursor: (cursor: string) => boolean): { cursor: string | null; limit: number } {
  const cursor = query.get('cursor');
  const limitText = query.get('limit');
  const limit = limitText === null ? DEFAULT_PAGE : Number(limitText);
  const errors: FieldError[] = [];
  if (cursor !== null && !validCursor(cursor)) errors.push({ path: 'cursor', message: 'must be the cursor of a previous page' });
  if (!Number.isInteger(limit) || limit < 1 || limit > MAX_PAGE) errors.push({ path: 'limit', message: `must be a whole number from 1 to ${MAX_PAGE}` });
  if (errors.length > 0) throw new SluiceError('SLUICE_INGRESS_BAD_REQUEST', 'The query is invalid', { errors });
  return { cursor, limit };
}

/** A SCAN cursor (HSCAN, SSCAN) as Redis gives it. */
export const isScanCursor = (cursor: string): boolean => /^\d{1,20}$/.test(cursor);

/** A path segment percent-decoded, or SLUICE_INGRESS_BAD_ADDRESS. */
export function decodeSegment(segment: string): string {
  try {
    return decodeURIComponent(segment);
  } catch {
    throw new SluiceError('SLUICE_INGRESS_BAD_ADDRESS', 'The address in the path is not valid percent-encoding');
  }
}

/**
 * The address of a path segment (percent-encoded or not), normalised like stored entries: a valid
 * address gets the domain's A-label form; anything else with an `@` is used as written, so that data
 * recorded from odd input (bounce text) can still be found, exported and removed.
 */
export function pathAddress(segment: string): string {
  const text = decodeSegment(segment);
  if (text.length > MAX_ADDRESS || !text.includes('@')) throw new SluiceError('SLUICE_INGRESS_BAD_ADDRESS', 'The path must end in an email address');
  return parseAddress(text)?.address ?? text;
}
