--[[
  takeSending: counts up to `want` campaign copies against an account's daily quota and fixed rate
  windows (accounts/limits.ts takeSending), as many as every counter still has room for, all or
  none of them per counter. The same counters count the recipients its API and SMTP submissions
  have accepted (reserveSending), so both draw on one quota.

  KEYS[1..4] the day's quota counter, the second's, the minute's and the hour's window counters
             (STRING, one hash tag {a:<account>})
  ARGV[1]    want
  ARGV[2..5] each counter's limit, '' when the account has none (the key is then not touched)
  ARGV[6..9] each counter's TTL in ms

  Returns {granted, room1, room2, room3, room4}: room is what the counter had left before (-1
  when it has no limit). Nothing is counted when granted is 0.
]]
local want = tonumber(ARGV[1])
local granted = want
local rooms = {}
for i = 1, 4 do
  local limit = ARGV[1 + i]
  if limit == '' then
    rooms[i] = -1
  else
    local room = tonumber(limit) - tonumber(redis.call('GET', KEYS[i]) or '0')
    if room < 0 then room = 0 end
    rooms[i] = room
    if room < granted then granted = room end
  end
end
if granted > 0 then
  for i = 1, 4 do
    if ARGV[1 + i] ~= '' then
      redis.call('INCRBY', KEYS[i], granted)
      redis.call('PEXPIRE', KEYS[i], ARGV[5 + i])
    end
  end
end
return { granted, rooms[1], rooms[2], rooms[3], rooms[4] }
