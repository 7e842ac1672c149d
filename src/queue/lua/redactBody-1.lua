--[[
  redactBody: the erasure of an address from a message it is not a recipient of, a failure notice
  that names it (store/privacy.ts): every occurrence in the body (any case) becomes the replacement.
  The body keeps its TTL; a body already gone (the notice was sent) is not written again.

  KEYS[1] body   STRING {m:<id>}:body
  ARGV[1] address      lower-case
  ARGV[2] replacement

  Returns 1 when the body named the address, else 0.
]]
--@include replaceAddress
local body = redis.call('GET', KEYS[1])
if not body then return 0 end
local updated = replaceAddress(body, ARGV[1], ARGV[2])
if updated == body then return 0 end
redis.call('SET', KEYS[1], updated, 'KEEPTTL')
return 1
