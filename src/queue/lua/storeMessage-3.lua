--[[
  storeMessage: writes an accepted message's record and link table (its body: see below) in one
  atomic step, unless the id is taken; on a single Redis server, optionally everything else its
  acceptance writes in the same step: the recipients' address index (as src/store/address-index.ts), the queue (as
  src/queue/enqueue.ts: ready sets, destinations, schedule) and the `accepted` event (as
  src/store/events.ts appendEvent). On Redis Cluster those keys live in many slots, so
  src/ingress/persist.ts sends only the message part and writes the rest with commands of their own.

  Ids are a millisecond timestamp and 30 random bits (src/core/ids.ts). Two processes minting ids in
  the same millisecond collide once in 2^30 pairs: rare, but at a sustained 10,000 messages/s over
  several ingress processes that is a few times a day, and an overwrite would send one sender's
  message to another's recipients. So an id already in use is refused here, atomically, and the
  caller mints another (src/ingress/accept.ts).

  The body is not an argument: Redis copies a script's arguments through Lua strings, which cost
  ~240 µs of Redis CPU per 100 KB body (measured). The caller sends `SET body NX` right after this
  script in the same MULTI (src/store/messages.ts storeWithBody): it writes the body exactly when this
  script stored the record, since both keys were free and nothing runs between the two. When the
  id was taken and only its body was gone (a finished message), the SET writes a stray body, which
  the caller deletes.

  The message part (always):
  KEYS[1]  meta   HASH   {m:<id>}:meta   (a campaign's record has the same key: its id is taken too)
  KEYS[2]  body   STRING {m:<id>}:body   (only checked: the id is taken while either key exists)
  KEYS[3]  links  LIST   {m:<id>}:links
  ARGV[1]  nLinks, ARGV[2] nMeta (the meta hash's field and value count), then the nLinks link URLs
           in the message's order, then the nMeta meta arguments

  The rest (single server only; absent when ARGV ends there), called with its key count
  (storeMessageKeys): 3 + R + D + 2S keys, plus the event stream last when there is an event.
  KEYS[4 .. 3+R]   refs   ZSET  {r:<digest>}:refs, one per recipient, in recipient order
  KEYS[..+D]       ready  ZSET  the ready set of each destination domain
  KEYS[..+2S]      per schedule shard: its destinations SET, then its schedule ZSET
  KEYS[#KEYS]      events STREAM (only when nEvent > 0)
  ARGV (next)      R, D, S, at (the acceptance time: each reference's score), ttlMs (the references'
                   lifetime: TTL renewed and older references trimmed, as every index write does:
                   lib/addRef.lua), nEvent (the event's field and value count,
                   0: no event), maxLen (the stream's bound, MAXLEN ~); then the nEvent event
                   arguments; the R reference members; per domain a count then that many `score
                   member` arguments for ZADD NX; per shard a count then that many `minDue domain`
                   arguments (SADD the domains, ZADD LT the schedule)

  Returns 1 when stored, 0 when the id is taken (nothing written), 2 when this very write was
  stored before: the call sent again (ioredis resends a command whose reply a dropped connection
  lost, and Redis had run it). Taken for another message's id, it would be stored a second time
  under a new id, and its recipients mailed twice. Told apart by the record's account, acceptance
  time (ms) and recipients, which another message with the same id (same millisecond, same 30
  random bits) would not also share.
]]
if redis.call('EXISTS', KEYS[1], KEYS[2]) > 0 then
  local want = {}
  local from = 3 + tonumber(ARGV[1])
  for i = from, from + tonumber(ARGV[2]) - 1, 2 do
    local f = ARGV[i]
    if f == 'account' or f == 'acceptedAt' or f == 'rcpts' then want[f] = ARGV[i + 1] end
  end
  local have = redis.call('HMGET', KEYS[1], 'account', 'acceptedAt', 'rcpts')
  if have[1] == want.account and have[2] == want.acceptedAt and have[3] == want.rcpts then return 2 end
  return 0
end

--@include addRef

-- unpack puts every value on Lua's C stack, which holds about 8,000: long lists go in slices (of an
-- even length, so a slice never splits a `score member` pair).
local function inSlices(cmd, key, prefix, from, to)
  for i = from, to, 4000 do
    local last = math.min(i + 3999, to)
    if prefix then redis.call(cmd, key, prefix, unpack(ARGV, i, last))
    else redis.call(cmd, key, unpack(ARGV, i, last)) end
  end
end

local nLinks, nMeta = tonumber(ARGV[1]), tonumber(ARGV[2])
local a = 3
redis.call('HSET', KEYS[1], unpack(ARGV, a + nLinks, a + nLinks + nMeta - 1))
-- A table left by an earlier holder of the id (a record that expired before its links) is replaced.
redis.call('DEL', KEYS[3])
if nLinks > 0 then inSlices('RPUSH', KEYS[3], nil, a, a + nLinks - 1) end
a = a + nLinks + nMeta
if a > #ARGV then return 1 end

local R, D, S = tonumber(ARGV[a]), tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
local at, ttl = ARGV[a + 3], ARGV[a + 4]
local nEvent, maxLen = tonumber(ARGV[a + 5]), ARGV[a + 6]
a = a + 7
local eventFrom = a
a = a + nEvent

for r = 1, R do
  addRef(KEYS[3 + r], at, ARGV[a], ttl)
  a = a + 1
end

for d = 1, D do
  local n = tonumber(ARGV[a])
  inSlices('ZADD', KEYS[3 + R + d], 'NX', a + 1, a + n)
  a = a + 1 + n
end

for s = 1, S do
  local destinations, schedule = KEYS[3 + R + D + 2 * s - 1], KEYS[3 + R + D + 2 * s]
  local n = tonumber(ARGV[a])
  a = a + 1
  for i = a, a + n - 1, 2 do
    redis.call('SADD', destinations, ARGV[i + 1])
  end
  inSlices('ZADD', schedule, 'LT', a, a + n - 1)
  a = a + n
end

if nEvent > 0 then
  redis.call('XADD', KEYS[#KEYS], 'MAXLEN', '~', maxLen, '*', unpack(ARGV, eventFrom, eventFrom + nEvent - 1))
end
return 1
