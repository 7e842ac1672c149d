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
-- A removal is one LREM (its count says whether the item was there). A replacement searches from the
-- tail (RANK -1), where the erasure's walk is: from the head, each rewrite of a 10,000-batch list
-- scanned it whole. A batch is in a list once (its id is its own).
if ARGV[2] == '' then return redis.call('LREM', KEYS[1], -1, ARGV[1]) end
local at = redis.call('LPOS', KEYS[1], ARGV[1], 'RANK', -1)
if not at then return 0 end
redis.call('LSET', KEYS[1], at, ARGV[2])
return 1
