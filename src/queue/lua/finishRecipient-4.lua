--[[
  finishRecipient: one recipient of a message reached a final state (delivered, bounced, expired).
  When it was the last one, the body (the bulk of the memory) goes at once — nothing will render it
  again — and the record is kept for the retention period, then expires by itself.

  KEYS[1] meta  HASH {m:<id>}:meta
  KEYS[2] body  STRING {m:<id>}:body
  KEYS[3] links LIST {m:<id>}:links (click targets: kept as long as the record, then expire with it)
  KEYS[4] stats HASH {m:<id>}:stats (engagement counters: expire with the record; when they do not
                exist yet, the first tracking event creates them with the same retention)
  ARGV[1] ttlMs  how long the record of a finished message is kept
  ARGV[2] now    ms: the record's finishedAt when this was the last recipient

  Returns the recipients still pending, or -1 when the message is not stored (erased, purged).
]]
--@include finishMessage
return finishMessage(KEYS[1], KEYS[2], KEYS[3], KEYS[4], ARGV[1], ARGV[2])
