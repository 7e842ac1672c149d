--[[
  appendEvents: appends a batch of entries to the event stream in one call, in order, then trims it
  once with MAXLEN ~ (approximate: Redis drops whole radix-tree nodes, O(1) amortised). Between two
  trims the stream exceeds its bound by at most one batch.

  KEYS[1]   events   STREAM
  KEYS[2]   erased   ZSET "<msgId>:<idx>" → when it was erased (ms), the stream's slot: recipients
                     being erased or erased lately (store/privacy.ts eraseAddress adds them before it
                     walks the stream)
  ARGV[1]   maxLen   the stream's approximate length bound
  ARGV[2]   entries  one JSON array of entries, each an array of strings [field, value, field, value, …]
  ARGV[3]   ids      optional: '1' returns each entry's id ('' for one dropped) instead of the count

  One argument for the whole batch: building and writing a command's arguments is most of what a
  batch costs the Node process (microseconds per argument), and cjson decodes the batch in C. Values
  are strings in the JSON, so nothing is reformatted as a Lua number.

  An entry whose msgId and idx name a member of `erased` is dropped. A tracking event is decided
  (marks checked for the erased recipient) in one call and appended in another, a held click ~2.5 s
  later: an erasure between the two has already walked the stream when the event comes. Redis runs
  one script at a time, so an entry is either appended before the erasure adds the pair (and its
  walk finds it) or dropped here. The set exists only for a while after an erasure; without it the
  check is one EXISTS per call.

  Returns the number of entries appended (or their ids, see ARGV[3]).
]]
local entries = cjson.decode(ARGV[2])
local guarded = redis.call('EXISTS', KEYS[2]) == 1
local appended = 0
local ids = ARGV[3] == '1' and {} or nil
for i = 1, #entries do
  local e = entries[i]
  local keep = true
  if guarded then
    local msgId, idx
    for j = 1, #e - 1, 2 do
      local f = e[j]
      if f == 'msgId' then msgId = e[j + 1] elseif f == 'idx' then idx = e[j + 1] end
      if msgId and idx then break end
    end
    if msgId and idx and redis.call('ZSCORE', KEYS[2], msgId .. ':' .. idx) then keep = false end
  end
  local id = ''
  if keep then
    id = redis.call('XADD', KEYS[1], '*', unpack(e))
    appended = appended + 1
  end
  if ids then ids[i] = id end
end
redis.call('XTRIM', KEYS[1], 'MAXLEN', '~', ARGV[1])
return ids or appended
