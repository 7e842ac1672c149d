import { isIP } from 'node:net';

/**
 * The client address a proxy in front of a server reports: the last hop of X-Forwarded-For (the
 * address that proxy itself saw connecting; earlier hops are whatever the client chose to send), or
 * null when it is missing or not an IP address. `values`: every X-Forwarded-For header of the
 * request, in order (a repeated header is one list, RFC 9110 §5.3).
 */
export function lastForwardedHop(values: readonly string[]): string | null {
  for (let i = values.length - 1; i >= 0; i--) {
    const hop = (values[i] as string).split(',').pop()?.trim() ?? '';
    if (hop !== '') return isIP(hop) ? hop : null;
  }
  return null;
}
