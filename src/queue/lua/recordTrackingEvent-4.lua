--[[
  recordTrackingEvent: marks one open, click or unsubscribe of a recipient, tells whether it is the
  first of its kind, and counts it in the message's engagement counters; for a click it also returns
  the link's URL and how many distinct links the recipient clicked in the last burst window (link
  scanners click every link within a second or two). All keys share the message's hash tag, so this
  runs on one slot.

  KEYS[1] marks  HASH  <cls>o:<idx>         → ms of the first open
                       <cls>c:<idx>:<link>  → ms of the first click on that link
                       hc:<idx>             → ms of the recipient's first human click on any link
                       u:<idx>              → ms of the first unsubscribe
                       b:<idx>              → "<windowStart ms>:<distinct links in window>" (people only)
                 cls is '' for a presumed person and 'm' for a known machine, so a proxy's prefetch or
                 a scanner's visit does not use up the recipient's first human open or click.
  KEYS[2] links  LIST  the message's link table (read only; used for kind 'c')
  KEYS[3] stats  HASH  the engagement counters of src/store/engagement.ts
  KEYS[4] meta   HASH  the message's record: only its TTL (and for one with none, its kind: a
                       campaign's counters are kept as it is) is read, when this call creates the counters
                       (they get what is left of it, so they never outlive the record: see
                       recordTrackingOpens-3.lua, which relies on that). A click needs the link table
                       and an unsubscribe reads the record first (tracking/unsubscribe.ts), so neither
                       comes here for a message whose record is gone.
  ARGV[1] kind          'o' | 'c' | 'u'
  ARGV[2] idx           recipient index, or '' in anonymous mode: counted, but no mark and never first
  ARGV[3] link          link index (kind 'c'), else ignored
  ARGV[4] now           ms
  ARGV[5] burstMs       the burst window
  ARGV[6] ttlMs         how long the marks are kept (the message's retention); a stats hash this call
                        creates gets it too while the record has no TTL (pending: finishCopy-5.lua
                        aligns it with the record's expiry)
  ARGV[7] cls           '' or 'm' (see KEYS[1])
  ARGV[8] burstLinks    distinct links in the window from which a click is a machine's (as classify.ts)
  ARGV[9] rcpt          the recipient index, in every mode: an erased recipient ('x:<rcpt>' or 'x:*')
                        gets nothing, in anonymous mode too (where ARGV[2] is '')

  Returns {first (1|0), burst (distinct links in the window, 0 unless kind 'c'), url or false,
  the burst limit that applied (ARGV[8], or the message's link count when 2 ≤ links < ARGV[8]),
  erased (1: the recipient was erased, eraseRecipient-5.lua; nothing was written),
  the window's start (ms; 0 unless a person's click): the clicks from then on make the burst}.
  A click on a link the table does not hold writes nothing and returns {0, 0, false}.
]]
local kind, idx, now, cls = ARGV[1], ARGV[2], tonumber(ARGV[4]), ARGV[7]
local url = false
if kind == 'c' then
  url = redis.call('LINDEX', KEYS[2], tonumber(ARGV[3]))
  if not url then return {0, 0, false} end
end

-- An erased recipient (eraseRecipient-5.lua): nothing is marked or counted; a click still gets its URL.
local rcpt = ARGV[9] or idx
if rcpt ~= '' then
  local x = redis.call('HMGET', KEYS[1], 'x:' .. rcpt, 'x:*')
  if x[1] or x[2] then return {0, 0, url, tonumber(ARGV[8]), 1, 0} end
end
local first, burst, burstStart = 0, 0, 0
-- Distinct links in the window from which clicks are a scanner's: ARGV[8], or every link of a mail
-- with fewer (two links both clicked within the window); one link alone can show no burst.
local burstLimit = tonumber(ARGV[8])
if kind == 'c' then
  local links = redis.call('LLEN', KEYS[2])
  if links >= 2 and links < burstLimit then burstLimit = links end
end
if idx ~= '' then
  local field
  if kind == 'c' then field = cls .. 'c:' .. idx .. ':' .. ARGV[3] else field = cls .. kind .. ':' .. idx end
  first = redis.call('HSETNX', KEYS[1], field, now)
  if kind == 'c' and cls == '' then
    local b = redis.call('HGET', KEYS[1], 'b:' .. idx)
    local start, count = now, 0
    if b then
      local s, c = string.match(b, '^(%d+):(%d+)$')
      if s and now - tonumber(s) <= tonumber(ARGV[5]) then start, count = tonumber(s), tonumber(c) end
    end
    -- Only a first click on a link counts: one link clicked twice is a person, many links at once is not.
    if first == 1 then count = count + 1 end
    if count > 0 then redis.call('HSET', KEYS[1], 'b:' .. idx, start .. ':' .. count) end
    burst, burstStart = count, start
  end
  redis.call('PEXPIRE', KEYS[1], ARGV[6])
end

-- The counters: human or machine (the raw total is their sum), and unique human (a recipient's first
-- human open or click).
local stats = KEYS[3]
if kind == 'u' then
  if first == 1 or idx == '' then redis.call('HINCRBY', stats, 'unsubscribes', 1) end
else
  local name = (kind == 'o') and 'opens' or 'clicks'
  local machine = cls ~= '' or (kind == 'c' and burst >= burstLimit)
  if machine and cls == '' and first == 1 and burst == burstLimit then
    -- This click makes the burst: the earlier first clicks of the window, counted as a person's
    -- when they came, were the same scanner's. Their counts move to machine (their events stay as
    -- written), and a first human click made within the window is no longer the recipient's.
    redis.call('HINCRBY', stats, 'clicks_human', 1 - burst)
    redis.call('HINCRBY', stats, 'machine_clicks', burst - 1)
    local hc = tonumber(redis.call('HGET', KEYS[1], 'hc:' .. idx))
    if hc and hc >= burstStart then
      redis.call('HDEL', KEYS[1], 'hc:' .. idx)
      redis.call('HINCRBY', stats, 'clicks_unique_human', -1)
    end
  end
  if machine then
    redis.call('HINCRBY', stats, 'machine_' .. name, 1)
  else
    redis.call('HINCRBY', stats, name .. '_human', 1)
    local unique = first
    -- A click's own mark is per link; a recipient counts once however many links they click.
    if kind == 'c' and idx ~= '' then unique = redis.call('HSETNX', KEYS[1], 'hc:' .. idx, now) end
    if unique == 1 then redis.call('HINCRBY', stats, name .. '_unique_human', 1) end
  end
end
if redis.call('PEXPIRE', stats, ARGV[6], 'NX') == 1 then
  local left = redis.call('PTTL', KEYS[4])
  if left > 0 then
    redis.call('PEXPIRE', stats, left)
  elseif left == -1 and redis.call('HGET', KEYS[4], 'kind') == 'campaign' then
    -- A campaign is kept (with its delivery counters, in the same hash) until its account goes.
    redis.call('PERSIST', stats)
  end
end
return {first, burst, url, burstLimit, 0, burstStart}
