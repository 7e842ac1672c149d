--[[
  renameList: renames a contact list (src/store/contacts.ts), only if it exists and is the account's,
  so a rename racing a delete never leaves a stray meta key behind.

  KEYS[1] meta     HASH of the list
  ARGV[1] account
  ARGV[2] name
  ARGV[3] now      ms

  Returns 1 when renamed, 0 when there is no such list for the account.
]]
if redis.call('HGET', KEYS[1], 'account') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'name', ARGV[2], 'updated', ARGV[3])
return 1
