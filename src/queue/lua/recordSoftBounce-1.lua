--[[
  recordSoftBounce: adds a copy's soft bounce to its address's history and returns the length of the
  address's current run: its soft bounces within the window since its last delivery.

  KEYS[1] history  ZSET  "<msgId>:<idx>"   → time of that copy's soft bounce (ms)
                         "d:<msgId>:<idx>" → time of a 250 for that copy (markDelivered-1.lua): a
                                             delivery, unless that copy bounces after all
  ARGV[1] member   "<msgId>:<idx>": a copy reported twice is one soft bounce
  ARGV[2] now      ms
  ARGV[3] windowMs the window; the history expires this long after its last soft bounce

  A remote MX that accepts a copy and bounces it later by mail answered 250 first: that copy's own
  bounce takes its delivery mark away, so such an address still builds a run. A 250 for a copy that
  does not bounce ends the run: only the soft bounces after it count.
]]
local key, member, now, window = KEYS[1], ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
redis.call('ZREM', key, 'd:' .. member)
redis.call('ZADD', key, 'NX', now, member)
redis.call('ZREMRANGEBYSCORE', key, '-inf', '(' .. (now - window))
redis.call('PEXPIRE', key, math.max(1, math.floor(window)))
local all = redis.call('ZRANGE', key, 0, -1, 'WITHSCORES')
local since = nil
for i = #all - 1, 1, -2 do
  if string.sub(all[i], 1, 2) == 'd:' then since = tonumber(all[i + 1]); break end
end
local run = 0
for i = 1, #all - 1, 2 do
  if string.sub(all[i], 1, 2) ~= 'd:' and (since == nil or tonumber(all[i + 1]) > since) then run = run + 1 end
end
return run
