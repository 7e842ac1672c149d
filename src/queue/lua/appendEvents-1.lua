--[[
  appendEvents: appends a batch of entries to the event stream in one call, in order. Each XADD
  trims with MAXLEN ~ (approximate: Redis drops whole radix-tree nodes, O(1) amortised).

  KEYS[1]   events  STREAM
  ARGV[1]   maxLen  the stream's approximate length bound
  ARGV[2..] entries, each: n (an even count), then n strings: field, value, field, value, …

  Returns the number of entries appended.
]]
local i, count = 2, 0
while i <= #ARGV do
  local n = tonumber(ARGV[i])
  redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', unpack(ARGV, i + 1, i + n))
  i = i + 1 + n
  count = count + 1
end
return count
