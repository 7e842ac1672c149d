import type { Server } from 'node:http';
import type { Socket } from 'node:net';
import { ClientLimiter } from './client-limit.js';

/**
 * Bounds the connections of a node:http server: `maxConnections` in all (Node closes the ones beyond,
 * unanswered) and `maxConnectionsPerClient` from one client (core/client-limit.ts: an IPv4 address or
 * an IPv6 /64, by the socket's own address, so no header such as X-Forwarded-For lifts it), so one
 * client holding idle keep-alive sockets cannot use up the server's connections or file descriptors.
 * A connection over its client's cap is answered `refusal` (an HTTP response with Connection: close)
 * and closed.
 */
export interface HttpConnectionLimits {
  readonly maxConnections?: number | undefined;
  readonly maxConnectionsPerClient?: number | undefined;
  /** Addresses or CIDR networks maxConnectionsPerClient does not count (a proxy of yours, loopback). */
  readonly clientLimitExempt?: readonly string[] | undefined;
}

/**
 * Applies the limits to `server` and returns what its request handler asks first, when there is a
 * per-client cap (else null, and nothing is asked on the request path): whether the request came on
 * a refused connection. node:http may already have read a request from a socket this refuses; that
 * request must be served by no one (and nothing of it recorded).
 */
export function limitHttpConnections(
  server: Server,
  limits: HttpConnectionLimits,
  refusal: string,
  onRefused: (reason: 'client_limit' | 'server_limit') => void,
): ((socket: Socket) => boolean) | null {
  if (limits.maxConnections !== undefined) server.maxConnections = limits.maxConnections;
  server.on('drop', () => onRefused('server_limit'));
  if (limits.maxConnectionsPerClient === undefined) return null;
  const refused = new WeakSet<Socket>();
  const limiter = new ClientLimiter(limits.maxConnectionsPerClient, limits.clientLimitExempt ?? []);
  server.on('connection', (socket: Socket) => {
    const key = limiter.admit(socket.remoteAddress ?? '');
    if (key === null) {
      onRefused('client_limit');
      refused.add(socket);
      socket.end(refusal, () => socket.destroy());
      return;
    }
    if (key !== '') socket.once('close', () => limiter.release(key));
  });
  return (socket) => refused.has(socket);
}

/** The raw answer to a refused connection: 503 with Connection: close and `body` (text/plain, or `type`). */
export function serviceUnavailable(body: string, type = 'text/plain; charset=utf-8'): string {
  return `HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nRetry-After: 1\r\nContent-Type: ${type}\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`;
}
