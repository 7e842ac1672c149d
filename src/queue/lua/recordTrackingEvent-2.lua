--[[
  recordTrackingEvent: marks one open, click or unsubscribe of a recipient and tells whether it is the
  first of its kind; for a click it also returns the link's URL and how many distinct links the
  recipient clicked in the last burst window (link scanners click every link within a second or two).
  Both keys share the message's hash tag, so this runs on one slot.

  KEYS[1] marks  HASH  <cls>o:<idx>         → ms of the first open
                       <cls>c:<idx>:<link>  → ms of the first click on that link
                       u:<idx>              → ms of the first unsubscribe
                       b:<idx>              → "<windowStart ms>:<distinct links in window>" (people only)
                 cls is '' for a presumed person and 'm' for a known machine, so a proxy's prefetch or
                 a scanner's visit does not use up the recipient's first human open or click.
  KEYS[2] links  LIST  the message's link table (read only; used for kind 'c')
  ARGV[1] kind          'o' | 'c' | 'u'
  ARGV[2] idx           recipient index
  ARGV[3] link          link index (kind 'c'), else ignored
  ARGV[4] now           ms
  ARGV[5] burstMs       the burst window
  ARGV[6] ttlMs         how long the marks are kept (the message's retention)
  ARGV[7] cls           '' or 'm' (see KEYS[1])

  Returns {first (1|0), burst (distinct links in the window, 0 unless kind 'c'), url or false}.
  A click on a link the table does not hold writes nothing and returns {0, 0, false}.
]]
local kind, idx, now = ARGV[1], ARGV[2], tonumber(ARGV[4])
local url = false
local field
if kind == 'c' then
  url = redis.call('LINDEX', KEYS[2], tonumber(ARGV[3]))
  if not url then return {0, 0, false} end
  field = ARGV[7] .. 'c:' .. idx .. ':' .. ARGV[3]
else
  field = ARGV[7] .. kind .. ':' .. idx
end

local first = redis.call('HSETNX', KEYS[1], field, now)
local burst = 0
if kind == 'c' and ARGV[7] == '' then
  local b = redis.call('HGET', KEYS[1], 'b:' .. idx)
  local start, count = now, 0
  if b then
    local s, c = string.match(b, '^(%d+):(%d+)$')
    if s and now - tonumber(s) <= tonumber(ARGV[5]) then start, count = tonumber(s), tonumber(c) end
  end
  -- Only a first click on a link counts: one link clicked twice is a person, many links at once is not.
  if first == 1 then count = count + 1 end
  if count > 0 then redis.call('HSET', KEYS[1], 'b:' .. idx, start .. ':' .. count) end
  burst = count
end
redis.call('PEXPIRE', KEYS[1], ARGV[6])
return {first, burst, url}
