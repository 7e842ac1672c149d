--[[
  addRef: adds (or moves later) one reference in an address's index, trimming the references past
  their lifetime (lib/addRef.lua). One call per address: each address's key is in its own slot, so
  src/store/address-index.ts indexAddresses sends one call per reference (auto-pipelined per node).

  KEYS[1] refs  ZSET {r:<digest>}:refs
  ARGV[1] at      ms, the reference's score
  ARGV[2] member  "m:<msgId>:<idx>" or "c:<campaignId>:<no>"
  ARGV[3] ttlMs   the references' lifetime (ingress/persist.ts refsTtlMs)

  Returns 1.
]]
--@include addRef
addRef(KEYS[1], ARGV[1], ARGV[2], ARGV[3])
return 1
