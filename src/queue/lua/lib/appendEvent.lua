-- appendEvent(stream, maxLen, packed): appends one event, packed by src/store/events.ts packEvent (a
-- JSON array [field, value, field, value, …], the first pair its type), to the event stream,
-- trimmed to about maxLen (MAXLEN ~: whole radix-tree nodes, O(1) amortised). An outcome script
-- that applies appends its state change in the same step, so the change and its event are one.
local function appendEvent(stream, maxLen, packed)
  redis.call('XADD', stream, 'MAXLEN', '~', maxLen, '*', unpack(cjson.decode(packed)))
end
