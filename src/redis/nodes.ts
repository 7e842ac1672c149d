import { Cluster, type Redis } from 'ioredis';
import { SluiceError } from '../core/errors.js';

/**
 * The servers that hold the keyspace: the server itself, or every master of a cluster's current slot
 * map, each with a connection. ioredis's `nodes('master')` alone is not that: it is empty until the
 * client first loads the slot map (just after `new Cluster`), and it loses a master whose connection
 * ended (the server's `timeout`, a reset, a restart) until a command is routed to that master again.
 * So a master of the slot map missing from the pool makes it ask for the slot map, which rebuilds the
 * pool from it; a master that owns slots and is still missing throws SLUICE_REDIS_UNAVAILABLE rather than leave a walk (SCAN is per node), a
 * SCRIPT LOAD or a configuration check short of a node.
 */
export async function masterNodes(client: Redis | Cluster): Promise<Redis[]> {
  if (!(client instanceof Cluster)) return [client];
  // Before the first slot map (connecting) the pool holds nothing to ask: a command waits for it.
  if (client.status !== 'ready') await client.ping();
  // The pool is asked to cover the slot map as it stands (ioredis refreshes that on MOVED and every
  // few seconds); only a master missing from it costs a refresh (a CLUSTER SLOTS on a new connection).
  let { masters, missing } = coverage(client);
  if (masters.length === 0 || missing.length > 0) {
    await new Promise<void>((resolve, reject) => client.refreshSlotsCache((err) => (err ? reject(err as Error) : resolve())));
    ({ masters, missing } = coverage(client));
  }
  if (masters.length === 0 || missing.length > 0) {
    throw new SluiceError('SLUICE_REDIS_UNAVAILABLE', `Redis Cluster master(s) not reachable: ${missing.join(', ') || 'none known'}`);
  }
  return masters;
}

/** The masters in the client's pool, and the slot owners of its slot map that are not among them. */
function coverage(client: Cluster): { masters: Redis[]; missing: string[] } {
  const masters = client.nodes('master');
  const have = new Set(masters.map((n) => `${n.options.host ?? ''}:${n.options.port ?? ''}`));
  const missing = new Set<string>();
  for (const slot of client.slots) if (slot?.[0] !== undefined && !have.has(slot[0])) missing.add(slot[0]);
  return { masters, missing: [...missing] };
}
