--[[
  appendEvents: appends a batch of entries to the event stream in one call, in order, then trims it
  once with MAXLEN ~ (approximate: Redis drops whole radix-tree nodes, O(1) amortised). Between two
  trims the stream exceeds its bound by at most one batch.

  KEYS[1]   events   STREAM
  ARGV[1]   maxLen   the stream's approximate length bound
  ARGV[2]   entries  one JSON array of entries, each an array of strings [field, value, field, value, …]

  One argument for the whole batch: building and writing a command's arguments is most of what a
  batch costs the Node process (microseconds per argument), and cjson decodes the batch in C. Values
  are strings in the JSON, so nothing is reformatted as a Lua number.

  Returns the number of entries appended.
]]
local entries = cjson.decode(ARGV[2])
for i = 1, #entries do
  redis.call('XADD', KEYS[1], '*', unpack(entries[i]))
end
redis.call('XTRIM', KEYS[1], 'MAXLEN', '~', ARGV[1])
return #entries
