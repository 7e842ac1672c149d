import { Cluster, type Redis } from 'ioredis';
import { SluiceError } from '../core/errors.js';

/**
 * The servers that hold the keyspace: the server itself, or every master of a cluster's current slot
 * map, each with a connection. ioredis's `nodes('master')` alone is not that: it is empty until the
 * client first loads the slot map (just after `new Cluster`), and it loses a master whose connection
 * ended (the server's `timeout`, a reset, a restart) until a command is routed to that master again.
 * So the slot map is asked for first, which rebuilds the pool from it; a master that owns slots and
 * is still missing throws SLUICE_REDIS_UNAVAILABLE rather than leave a walk (SCAN is per node), a
 * SCRIPT LOAD or a configuration check short of a node.
 */
export async function masterNodes(client: Redis | Cluster): Promise<Redis[]> {
  if (!(client instanceof Cluster)) return [client];
  // Before the first slot map (connecting) the pool holds nothing to ask: a command waits for it.
  if (client.status !== 'ready') await client.ping();
  await new Promise<void>((resolve, reject) => client.refreshSlotsCache((err) => (err ? reject(err as Error) : resolve())));
  const masters = client.nodes('master');
  const have = new Set(masters.map((n) => `${n.options.host ?? ''}:${n.options.port ?? ''}`));
  const owners = new Set<string>();
  for (const slot of client.slots) if (slot?.[0] !== undefined) owners.add(slot[0]);
  const missing = [...owners].filter((o) => !have.has(o));
  if (masters.length === 0 || missing.length > 0) {
    throw new SluiceError('SLUICE_REDIS_UNAVAILABLE', `Redis Cluster master(s) not reachable: ${missing.join(', ') || 'none known'}`);
  }
  return masters;
}
