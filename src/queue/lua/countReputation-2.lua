--[[
  countReputation: adds an outcome count to a sender's reputation bucket, once per call.

  KEYS[1] bucket  HASH {a:<account>}:rep:<bucketStart>, "<scope>|<kind>" → count (store/reputation.ts)
  KEYS[2] call    STRING {a:<account>}:repdone:<id>, kept ARGV[2] once counted (lib/callAnswer.lua)
  ARGV[1] ttlMs   the bucket's TTL from now
  ARGV[2] keepMs  how long the call's id is kept
  ARGV[3..]       field, increment, field, increment, …

  A count run twice would double a sender's complaints or deliveries: a complaint rate of 0.30 % read
  0.40 %, and the sender was paused. The id is random per call (the client's own resend), or one the
  caller derives from what it counts (a feedback mail's processing retried after a crash counts its
  copy once too).

  Returns 1 when counted, 0 when the call was counted before.
]]
--@include callAnswer
if earlierAnswer(KEYS[2]) then return 0 end
for i = 3, #ARGV - 1, 2 do
  redis.call('HINCRBY', KEYS[1], ARGV[i], ARGV[i + 1])
end
redis.call('PEXPIRE', KEYS[1], ARGV[1])
keepAnswer(KEYS[2], '1', ARGV[2])
return 1
