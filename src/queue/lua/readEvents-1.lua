--[[
  readEvents: XREADGROUP … '>' on the event stream for the webhook dispatcher (housekeeping/webhooks.ts),
  first counting the entries trimmed from the stream before the group read them. Redis does not say
  so itself: a read skips the gap, and the group's logical read counter (entries-read) then counts
  one entry where a whole gap was, so XINFO's lag stays high by the gap or, with no counter yet,
  reads 0. One script: a trim between a separate check and the read would go uncounted.

  KEYS[1] events    STREAM
  ARGV[1] group     the consumer group
  ARGV[2] consumer  this dispatcher's consumer name
  ARGV[3] count     entries to read at most
  ARGV[4] create    '1': create the group from '0' if it does not exist (MKSTREAM)

  The group's lag (entries added after its last-delivered-id, trimmed ones included: Redis 7) less
  the entries still in the stream after that id is the gap. Once counted, the group's counter is set
  past the gap (XGROUP SETID, same id), so the next call, from any dispatcher, counts it no more.
  A group is created with its counter set (0 for a new stream; the entries already trimmed from an
  existing one were never its to read). Entries deleted with XDEL (an erasure, a deleted account's
  events) are not lost ones: with the group's next entry still in the stream nothing is counted.
  While such an entry lies in the stream ahead of the group Redis has no lag to give (null); if the
  group's next entry is gone then, the gap is the entries added after the group's counter that the
  stream no longer holds, the deleted ones among them (Redis cannot tell which they were). Before,
  nothing was counted then: a dispatcher far behind during an erasure lost events in silence.

  Returns { lost, entries }: the entries lost to trimming (0: none, or not known) and the entries
  read, each { id, { field, value, … } } as XREADGROUP gives them.
]]
local function map(flat)
  local t = {}
  for i = 1, #flat, 2 do t[flat[i]] = flat[i + 1] end
  return t
end
-- a > b for stream ids '<ms>-<seq>' (ms fits a Lua number exactly).
local function after(a, b)
  local am, as = string.match(a, '^(%d+)-(%d+)$')
  local bm, bs = string.match(b, '^(%d+)-(%d+)$')
  am, as, bm, bs = tonumber(am), tonumber(as), tonumber(bm), tonumber(bs)
  return am > bm or (am == bm and as > bs)
end

local function read(lost)
  local r = redis.call('XREADGROUP', 'GROUP', ARGV[1], ARGV[2], 'COUNT', ARGV[3], 'STREAMS', KEYS[1], '>')
  return { lost, r and r[1][2] or {} }
end

if redis.call('EXISTS', KEYS[1]) == 0 then
  if ARGV[4] == '1' then redis.call('XGROUP', 'CREATE', KEYS[1], ARGV[1], '0', 'MKSTREAM', 'ENTRIESREAD', 0) end
  return read(0)
end
local stream = map(redis.call('XINFO', 'STREAM', KEYS[1]))
local group
for _, g in ipairs(redis.call('XINFO', 'GROUPS', KEYS[1])) do
  local t = map(g)
  if t['name'] == ARGV[1] then
    group = t
    break
  end
end
if not group then
  if ARGV[4] == '1' then
    redis.call('XGROUP', 'CREATE', KEYS[1], ARGV[1], '0', 'ENTRIESREAD', stream['entries-added'] - stream['length'])
  end
  return read(0)
end

local last = group['last-delivered-id']
-- Entries still in the stream after the group's position: all of them if the first is past it; if
-- not, the group's next entry is still there and nothing between was trimmed.
local present = stream['length']
local first = stream['first-entry']
if present > 0 and not (first and after(first[1], last)) then return read(0) end
local lag = group['lag']
if not lag and group['entries-read'] then lag = stream['entries-added'] - group['entries-read'] end
if not lag then return read(0) end
local lost = lag - present
if lost <= 0 then return read(0) end
redis.call('XGROUP', 'SETID', KEYS[1], ARGV[1], last, 'ENTRIESREAD', stream['entries-added'] - present)
return read(lost)
