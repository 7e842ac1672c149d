--[[
  reserveFeedbackBytes: room in Redis for one more inbound feedback mail (feedback/raw-store.ts).
  The inbound MX is open to anyone (postmaster@, any VERP address a recipient has seen), and each
  mail is kept raw for retention.rawBounces: without a bound, a stream of large mail fills Redis,
  and with it every submission and delivery outcome fails. The bytes stored are counted by the day
  of their receipt; a day's count goes once every mail of that day has expired.

  KEYS[1] stored  HASH day number (ms / 86,400,000) → bytes of feedback mail received that day
  ARGV[1] day     today
  ARGV[2] oldest  the oldest day whose mail may still be stored (today − the retention in days)
  ARGV[3] bytes   the mail's size
  ARGV[4] cap     bytes stored at most (feedback.maxStored)

  An over-estimate: mail deleted before its time (an erasure, an account's deletion) still counts
  until its day goes. Returns 1 (counted: store it) or 0 (no room: refuse it for now).
]]
local flat = redis.call('HGETALL', KEYS[1])
local oldest = tonumber(ARGV[2])
local total = 0
for i = 1, #flat, 2 do
  if tonumber(flat[i]) < oldest then redis.call('HDEL', KEYS[1], flat[i])
  else total = total + tonumber(flat[i + 1]) end
end
if total + tonumber(ARGV[3]) > tonumber(ARGV[4]) then return 0 end
redis.call('HINCRBY', KEYS[1], ARGV[1], ARGV[3])
return 1
