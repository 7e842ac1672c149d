--[[
  rewriteItem: replaces one item of a list where it is (store/privacy.ts eraseFromWebhooks: a
  dead-lettered webhook batch without the erased recipient's events). In place, so the list keeps
  its order (dead letters are oldest first: retention trims them from the head), where a remove
  and append would have moved the batch behind younger ones.

  KEYS[1] list
  ARGV[1] the item as it was read
  ARGV[2] its replacement; '' removes the item

  Returns 1 done, 0 when the item is no longer in the list (replayed or trimmed meanwhile).
]]
local at = redis.call('LPOS', KEYS[1], ARGV[1])
if not at then return 0 end
if ARGV[2] == '' then
  redis.call('LREM', KEYS[1], 1, ARGV[1])
else
  redis.call('LSET', KEYS[1], at, ARGV[2])
end
return 1
