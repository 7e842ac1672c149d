-- replaceAddress(text, needle, replacement[, exact]): every occurrence of `needle` (an address,
-- lower-case) in `text`, in any ASCII case, replaced (the erasure of an address: eraseRecipient-5.lua,
-- redactBody-1.lua); with `exact`, only as written.
local function replaceAddress(text, needle, replacement, exact)
  local lower = exact and text or string.lower(text)
  local parts, from = {}, 1
  while true do
    local s, e = string.find(lower, needle, from, true)
    if not s then break end
    parts[#parts + 1] = string.sub(text, from, s - 1)
    parts[#parts + 1] = replacement
    from = e + 1
  end
  if #parts == 0 then return text end
  parts[#parts + 1] = string.sub(text, from)
  return table.concat(parts)
end
