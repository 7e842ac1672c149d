import { startCluster } from '../helpers/redis.js';
import { queueFlows } from './flows.js';

/** The same flows as queue.test.ts on a real 3-master Redis Cluster: every script in one slot. */
queueFlows('queue (Redis Cluster)', () => startCluster()).run();
