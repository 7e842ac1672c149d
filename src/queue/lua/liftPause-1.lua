--[[
  liftPause: removes one scope's pause record of an account (store/reputation.ts resumeSender), unless
  keepOperator is set and an operator placed it (its JSON's reason is "operator"): the read and the
  delete are one step, so an operator's pause written between them is never lifted by the account.

  KEYS[1] paused  HASH scope → JSON pause record ({a:<account>}:paused)
  ARGV[1] scope
  ARGV[2] keepOperator  '1' or '0'
  Returns the record removed, false (nil) when there was none, or 0 when it was kept.
]]
local json = redis.call('HGET', KEYS[1], ARGV[1])
if not json then return false end
if ARGV[2] == '1' then
  local ok, rec = pcall(cjson.decode, json)
  if ok and type(rec) == 'table' and rec.reason == 'operator' then return 0 end
end
redis.call('HDEL', KEYS[1], ARGV[1])
return json
