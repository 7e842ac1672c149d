import { startRedis } from '../helpers/redis.js';
import { queueFlows } from './flows.js';

queueFlows('queue (single server)', () => startRedis()).run();
