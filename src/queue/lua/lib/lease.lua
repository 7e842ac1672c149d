-- Lease tokens (fencing). claim-2.lua leases its members under a token of its own: the HASH
-- "<dest>:owners" (member → token) beside the lease set, in the same hash tag; its name is the lease
-- set's with 'leases' replaced by 'owners'. An entry whose lease ran out, was reaped and claimed
-- again is leased under the new claim's token, so the first holder's late retry, bounce, hold, give
-- back or lease extension finds another token and changes nothing: it can neither requeue, bounce
-- nor keep alive an entry that another holder is sending. A lease with no token recorded (made
-- before tokens existed) is anyone's, as every lease was before.
local function leaseOwners(leases)
  return string.sub(leases, 1, -7) .. 'owners'
end

-- leaseState(leases, member, token): 1 leased under `token` (or under no token, or token '' = any),
-- 0 not leased, -1 leased under another token.
local function leaseState(leases, member, token)
  if not redis.call('ZSCORE', leases, member) then return 0 end
  if token == '' then return 1 end
  local cur = redis.call('HGET', leaseOwners(leases), member)
  if cur and cur ~= token then return -1 end
  return 1
end

-- takeLease(leases, member, token): removes the member's lease when leaseState says 1, and returns
-- what leaseState said. token '' takes it whoever holds it: a delivery is a fact, whoever made it.
local function takeLease(leases, member, token)
  local state = leaseState(leases, member, token)
  if state == 1 then
    redis.call('ZREM', leases, member)
    redis.call('HDEL', leaseOwners(leases), member)
  end
  return state
end
