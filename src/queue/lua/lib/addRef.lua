-- addRef(refs, at, member, ttlMs): one reference in an address's index (src/store/address-index.ts),
-- scored `at` (ms): the time from which the data it names lives at most ttlMs (its acceptance, or a
-- late finish). The score only moves later (ZADD GT), and the key lives ttlMs from this write, so a
-- reference lives at least ttlMs from its score. References older than that are trimmed here, so an
-- address mailed for years holds only its last ttlMs of them: at most TRIM_MAX a write (their
-- ZCOUNT is O(log N)), so a long backlog (an index written before this trim) drains over the
-- address's next writes instead of holding the server in one.
local function addRef(refs, at, member, ttl)
  local TRIM_MAX = 100
  local stale = redis.call('ZCOUNT', refs, '-inf', '(' .. string.format('%d', tonumber(at) - tonumber(ttl)))
  if stale > 0 then redis.call('ZREMRANGEBYRANK', refs, 0, math.min(stale, TRIM_MAX) - 1) end
  redis.call('ZADD', refs, 'GT', at, member)
  redis.call('PEXPIRE', refs, ttl)
end
