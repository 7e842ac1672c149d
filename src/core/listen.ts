import type { Server } from 'node:net';
import { SluiceError } from './errors.js';

/**
 * Binds a server (node:http, node:net, or smtp-server's `.server`) and resolves the port it got (the
 * one asked for, or the kernel's choice for port 0). A bind that fails — the port taken, an address
 * this host does not have, a privileged port without the right — rejects with SLUICE_CONFIG_INVALID
 * naming the address, the settings that chose it (`section`: the config section whose host and port
 * they are) and the system's reason (`cannot listen on 127.0.0.1:25 (ingress.smtp.host,
 * ingress.smtp.port): EADDRINUSE …`), so `sluice start` says which setting to change instead of
 * printing a bare errno.
 *
 * The error listener is there only while binding: a server's later errors are its owner's to handle.
 * smtp-server re-emits its socket server's errors, a failed bind included, on the SMTPServer itself:
 * its owner listens there before calling this, or the re-emitted error ends the process.
 */
export function listenOn(server: Server, port: number, host: string, section?: string): Promise<number> {
  return new Promise<number>((resolve, reject) => {
    const onError = (err: NodeJS.ErrnoException): void => {
      const keys = section ? ` (${section}.host, ${section}.port)` : '';
      reject(new SluiceError('SLUICE_CONFIG_INVALID', `cannot listen on ${host}:${port}${keys}: ${reasonOf(err, host)}`, { cause: err }));
    };
    server.once('error', onError);
    server.listen(port, host, () => {
      server.off('error', onError);
      const addr = server.address();
      resolve(typeof addr === 'object' && addr ? addr.port : port);
    });
  });
}

/**
 * "EADDRINUSE: address already in use" out of Node's "listen EADDRINUSE: address already in use
 * 127.0.0.1:25": the code and the system's words, without the address the caller names already.
 */
function reasonOf(err: NodeJS.ErrnoException, host: string): string {
  if (!err.code) return err.message;
  const i = err.message.indexOf(`${err.code}: `);
  if (i === -1) return `${err.code}: ${err.message}`;
  let words = err.message.slice(i + err.code.length + 2);
  const at = words.lastIndexOf(` ${host}`);
  if (at > 0) words = words.slice(0, at);
  return `${err.code}: ${words}`;
}
