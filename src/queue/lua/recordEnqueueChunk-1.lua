--[[
  recordEnqueueChunk: the enqueuer pushed chunk ARGV[1] of a campaign's list; its cursor and counts
  move together, once per chunk number. Chunk numbers only go up, and a chunk is the same range of
  contacts whoever pushes it, so a chunk recorded already is not counted again: a MULTI that ioredis
  sent again after a dropped connection (Redis had run it, the reply was lost), or a second process
  that took the campaign's lock over while the first, cut off from Redis past the lock's life, was
  still pushing the same chunk. Counted twice, `pending` never came back to 0: the campaign stayed
  'sending' for good.

  KEYS[1] meta     HASH {m:<campaignId>}:meta
  ARGV[1] chunk    the chunk's number (1, 2, …)
  ARGV[2] next     the cursor after it (the next contact number to read)
  ARGV[3] queued   copies it queued
  ARGV[4] skipped  contacts it read and did not queue (unsubscribed, suppressed)

  Returns 1 when recorded now, 0 when this chunk (or a later one) was recorded before.
]]
if tonumber(redis.call('HGET', KEYS[1], 'chunk') or '0') >= tonumber(ARGV[1]) then return 0 end
redis.call('HINCRBY', KEYS[1], 'queued', ARGV[3])
redis.call('HINCRBY', KEYS[1], 'pending', ARGV[3])
redis.call('HINCRBY', KEYS[1], 'skipped', ARGV[4])
redis.call('HSET', KEYS[1], 'cursor', ARGV[2], 'chunk', ARGV[1])
return 1
