--[[
  recordTrackingOpens: marks a batch of opens in one call, each first or repeat, and counts them in
  the messages' engagement counters, so the tracking server spends one round trip on many pixels
  instead of one each. The marks are those of recordTrackingEvent-4.lua ('o:<idx>' for a presumed
  person, 'mo:<idx>' for a known machine); the counters are those of src/store/engagement.ts.

  The file name says 3 keys: the script loader defines it that way, for one message. The tracking
  server also calls it with many key triples on a single Redis server (where every key is on the one
  node); on Redis Cluster it calls it once per message, whose keys share the message's hash tag.

  KEYS[3k-2]  marks  HASH of message k of the batch (each message once)
  KEYS[3k-1]  stats  HASH of message k: opens_human, opens_unique_human, machine_opens (the raw total
                     is their sum, see src/store/engagement.ts)
  KEYS[3k]    meta   HASH of message k: only its TTL (and for one with none, its kind) is read, when
                     this call creates the counters: a campaign's are kept as it is, for good
  ARGV[1]     ttlMs  how long marks are kept (the message's retention); counters this call creates
                     get the record's remaining TTL, or this one while the record has none (pending:
                     finishCopy-5.lua aligns them with the record's expiry when it finishes)
  ARGV[2]     opens  a JSON array of [k, cls, idx, now, rcpt], one per open, in arrival order:
                k    which message (key triple) the open is of
                cls  '' for a presumed person, 'm' for a known machine
                idx  the recipient index, or '' in anonymous mode: counted, no mark, never first
                now  ms of the open (the value of a first mark)
                rcpt the recipient index in every mode: an erased recipient gets nothing, in
                     anonymous mode too (one HMGET there, for the erasure marks only)

  A message whose record is gone (purged at the end of its retention, or erased whole) gets nothing:
  an old pixel would otherwise make its counters and marks again, and an event about a recipient no
  export or erasure can find any more (store/privacy.ts reads a message through its record). Its
  counters never outlive its record (they expire with it, or get its remaining TTL when made later),
  so they are missing exactly when the record is, and this call learns it from the counters it creates
  (HINCRBY's reply) without a read: the record's PTTL is read only then, once in a message's life
  while it is kept.

  Redis calls per open: one HMGET, and an HSET for a first (none in anonymous mode); per message of the
  batch, one HINCRBY per counter that moved. A TTL is set only where one can be missing: on marks when
  a mark was added, on stats when this call created a counter.

  Returns {first (1|0|-1), ...}, one per open, in their order: of two opens of one recipient in
  the same batch, the earlier is the first. -1: nothing was marked or counted, and the caller records
  no event: the recipient was erased (an 'x:<idx>' or 'x:*' mark, eraseRecipient-5.lua), or the
  message's record is gone.
]]
local opens = cjson.decode(ARGV[2])
local out = {}
-- Per message: {opens, human, uniqueHuman, machine, marked}, written once per message after the loop
-- (opens only tells whether the message had any).
local counts = {}
-- Per message: the first marks of this batch, {field, now, field, now, …} and field → true, written
-- after the loop once the message is known to be stored; and the positions of its counted opens.
local firsts, counted = {}, {}
for i = 1, #opens do
  local o = opens[i]
  local k, cls, idx = o[1], o[2], o[3]
  local first = 0
  local erased = false
  if idx == '' and o[5] ~= nil and o[5] ~= '' then
    local x = redis.call('HMGET', KEYS[3 * k - 2], 'x:' .. o[5], 'x:*')
    erased = x[1] ~= false or x[2] ~= false
  elseif idx ~= '' then
    -- One read tells erased, repeat or first; only a first writes (a repeat costs no write, and
    -- nothing of it goes to the AOF).
    local field = cls .. 'o:' .. idx
    local f = firsts[k]
    if not f then
      f = {}
      firsts[k] = f
    end
    if not f[field] then
      local x = redis.call('HMGET', KEYS[3 * k - 2], 'x:' .. idx, 'x:*', field)
      erased = x[1] ~= false or x[2] ~= false
      if not erased and x[3] == false then
        f[field] = true
        f[#f + 1] = field
        f[#f + 1] = o[4]
        first = 1
      end
    end
  end
  if erased then
    out[i] = -1
  else
    local c = counts[k]
    if not c then
      c = {0, 0, 0, 0, 0}
      counts[k] = c
      counted[k] = {}
    end
    c[1] = c[1] + 1
    c[5] = c[5] + first
    if cls == '' then
      c[2] = c[2] + 1
      c[3] = c[3] + first
    else
      c[4] = c[4] + 1
    end
    table.insert(counted[k], i)
    out[i] = first
  end
end
for k, c in pairs(counts) do
  local stats = KEYS[3 * k - 1]
  local created = false
  if c[2] > 0 and redis.call('HINCRBY', stats, 'opens_human', c[2]) == c[2] then created = true end
  if c[3] > 0 then redis.call('HINCRBY', stats, 'opens_unique_human', c[3]) end
  if c[4] > 0 and redis.call('HINCRBY', stats, 'machine_opens', c[4]) == c[4] then created = true end
  local gone = false
  if created then
    local left = redis.call('PTTL', KEYS[3 * k])
    if left == -2 then
      gone = true
      redis.call('DEL', stats)
      for _, i in ipairs(counted[k]) do out[i] = -1 end
    elseif left > 0 then
      redis.call('PEXPIRE', stats, left, 'NX')
    elseif redis.call('HGET', KEYS[3 * k], 'kind') ~= 'campaign' then
      -- (A campaign is kept, with its delivery counters in the same hash, until its account goes.)
      redis.call('PEXPIRE', stats, ARGV[1], 'NX')
    end
  end
  if not gone and c[5] > 0 then
    redis.call('HSET', KEYS[3 * k - 2], unpack(firsts[k]))
    redis.call('PEXPIRE', KEYS[3 * k - 2], ARGV[1])
  end
end
return out
