--[[
  appendEvents: appends a batch of entries to the event stream in one call, in order. Each XADD
  trims with MAXLEN ~ (approximate: Redis drops whole radix-tree nodes, O(1) amortised).

  KEYS[1]   events  STREAM
  ARGV[1]   maxLen  the stream's approximate length bound
  ARGV[2..] entries, one argument each: a JSON array of strings [field, value, field, value, …]

  One argument per entry rather than one per field: building and writing a command's arguments is
  most of what a tracking batch costs the Node process (a few µs per argument), and cjson decodes
  an entry in C. Values are strings in the JSON, so nothing is reformatted as a Lua number.

  Returns the number of entries appended.
]]
for i = 2, #ARGV do
  redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', unpack(cjson.decode(ARGV[i])))
end
return #ARGV - 1
