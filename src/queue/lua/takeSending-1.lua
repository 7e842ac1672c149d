--[[
  takeSending: counts up to `want` campaign copies against an account's daily quota and fixed rate
  windows (accounts/limits.ts takeSending), as many as every counter still has room for. The same
  counters count the recipients its API and SMTP submissions have accepted (reserveSending), so both
  draw on one quota. The file name says 1 key: the call's own key, then the account's counters, as
  many as it has limits (takeSendingKeys), all on its hash tag {a:<account>}.

  KEYS[1]        this call's answer, {a:<account>}:took:<random id> (STRING, JSON, lib/callAnswer.lua):
                 a call run twice counted its recipients twice (good mail was refused for the quota
                 the first run took); the second run returns the first one's answer, counting nothing
  KEYS[1 + i]    counter i (STRING)
  ARGV[1]        want
  ARGV[1 + i]    counter i's limit
  ARGV[1 + n + i] counter i's TTL in ms (n = #KEYS - 1)
  ARGV[2 + 2n]   '1': all or nothing (a submission's recipients, reserveSending): when any counter
                 has less room than `want`, nothing is counted and granted is 0. Before, a
                 submission counted first and took it back after, and a refused one used up room
                 meanwhile that a message which fitted was then refused for; '' for as many as fit
  ARGV[3 + 2n]   how long the answer is kept, ms

  Returns {granted, room_1, …, room_n}: what each counter had left before. Nothing is counted when
  granted is 0.
]]
--@include callAnswer
local prior = earlierAnswer(KEYS[1])
if prior then return cjson.decode(prior) end
local n = #KEYS - 1
local granted = tonumber(ARGV[1])
local rooms = {}
for i = 1, n do
  local room = tonumber(ARGV[1 + i]) - tonumber(redis.call('GET', KEYS[1 + i]) or '0')
  if room < 0 then room = 0 end
  rooms[i] = room
  if room < granted then granted = room end
end
if ARGV[2 + 2 * n] == '1' and granted < tonumber(ARGV[1]) then granted = 0 end
if granted > 0 then
  for i = 1, n do
    redis.call('INCRBY', KEYS[1 + i], granted)
    redis.call('PEXPIRE', KEYS[1 + i], ARGV[1 + n + i])
  end
end
local out = { granted }
for i = 1, n do out[i + 1] = rooms[i] end
keepAnswer(KEYS[1], cjson.encode(out), ARGV[3 + 2 * n])
return out
