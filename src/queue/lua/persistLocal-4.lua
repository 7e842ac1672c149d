--[[
  persistLocal: on a single Redis server, everything acceptance writes for one message in one call:
  the record, body and link table (as storeMessage-3.lua), the recipients' address index (as
  src/store/address-index.ts), the queue (as src/queue/enqueue.ts: ready sets, destinations,
  schedule) and the `accepted` event (as src/store/events.ts appendEvent). On Redis Cluster those keys live in many slots and src/ingress/persist.ts writes them
  with separate commands; here one script replaces six or more commands a message, whose objects
  were much of the ingress thread's Redis client work and young-generation garbage in bench/e2e.ts.
  Atomic, so the queue never names a message that is not stored.

  Always called with its key count (persistLocalKeys): 4 + R + D + 2S keys.
  KEYS[1]             meta    HASH   {m:<id>}:meta
  KEYS[2]             body    STRING {m:<id>}:body
  KEYS[3]             links   LIST   {m:<id>}:links
  KEYS[4]             events  STREAM the event stream
  KEYS[5 .. 4+R]      refs    ZSET   {r:<digest>}:refs, one per recipient, in recipient order
  KEYS[..+D]          ready   ZSET   the ready set of each destination domain
  KEYS[..+2S]         per schedule shard: its destinations SET, then its schedule ZSET
  ARGV[1]  body      raw MIME or a spec record (bytes)
  ARGV[2]  nLinks    ARGV[3]  nMeta (field and value count)   ARGV[4]  R   ARGV[5]  D   ARGV[6]  S
  ARGV[7]  at        the acceptance time (ms): each reference's score
  ARGV[8]  ttlMs     the references' TTL (renewed, as every write of an index key does)
  ARGV[9]  nEvent    the event's field and value count (0: no event)   ARGV[10] maxLen  the stream's bound (MAXLEN ~)
  then     the nLinks link URLs; the nMeta meta arguments; the nEvent event arguments; the R
           reference members; per domain a
           count then that many `score member` arguments for ZADD NX; per shard a count then that
           many `minDue domain` arguments (SADD the domains, ZADD LT the schedule)

  Returns 1, or 0 when the id is taken (nothing written): see storeMessage-3.lua.
]]
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local nLinks, nMeta = tonumber(ARGV[2]), tonumber(ARGV[3])
local R, D, S = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local at, ttl = ARGV[7], ARGV[8]
local nEvent, maxLen = tonumber(ARGV[9]), ARGV[10]
local a = 11
local K = 4

-- unpack puts every value on Lua's C stack, which holds about 8,000: long lists go in slices.
local function inSlices(cmd, key, prefix, from, to)
  for i = from, to, 4000 do
    local last = math.min(i + 3999, to)
    if prefix then redis.call(cmd, key, prefix, unpack(ARGV, i, last))
    else redis.call(cmd, key, unpack(ARGV, i, last)) end
  end
end

local linksFrom = a
a = a + nLinks
redis.call('HSET', KEYS[1], unpack(ARGV, a, a + nMeta - 1))
a = a + nMeta
redis.call('SET', KEYS[2], ARGV[1])
redis.call('DEL', KEYS[3])
if nLinks > 0 then inSlices('RPUSH', KEYS[3], nil, linksFrom, linksFrom + nLinks - 1) end
local eventFrom = a
a = a + nEvent

for r = 1, R do
  redis.call('ZADD', KEYS[K + r], at, ARGV[a])
  redis.call('PEXPIRE', KEYS[K + r], ttl)
  a = a + 1
end

for d = 1, D do
  local n = tonumber(ARGV[a])
  a = a + 1
  -- Pairs: a slice must not split one, so slices are an even number of arguments.
  inSlices('ZADD', KEYS[K + R + d], 'NX', a, a + n - 1)
  a = a + n
end

for s = 1, S do
  local destinations, schedule = KEYS[K + R + D + 2 * s - 1], KEYS[K + R + D + 2 * s]
  local n = tonumber(ARGV[a])
  a = a + 1
  for i = a, a + n - 1, 2 do
    redis.call('SADD', destinations, ARGV[i + 1])
  end
  inSlices('ZADD', schedule, 'LT', a, a + n - 1)
  a = a + n
end

if nEvent > 0 then
  redis.call('XADD', KEYS[4], 'MAXLEN', '~', maxLen, '*', unpack(ARGV, eventFrom, eventFrom + nEvent - 1))
end
return 1
