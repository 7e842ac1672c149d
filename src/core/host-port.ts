/**
 * 'host:port', '[v6]:port' or a bare host (a bare IPv6 address too), as the transport map and DNS
 * server lists write them. A matched host comes back lower-cased and without brackets; anything else
 * (a bare IPv6 address) as it is, with the default port.
 */
export function parseHostPort(text: string, defaultPort: number): { host: string; port: number } {
  const m = /^\[([^\]]+)\](?::(\d+))?$/.exec(text) ?? /^([^:]+)(?::(\d+))?$/.exec(text);
  if (!m) return { host: text, port: defaultPort };
  return { host: (m[1] as string).toLowerCase(), port: m[2] ? Number(m[2]) : defaultPort };
}
