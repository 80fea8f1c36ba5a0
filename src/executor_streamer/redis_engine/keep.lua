-- Keep the newest ARGV[1] events (compact, clear), or, with ARGV[2] set, remove the
-- events whose entry seq is below it (retention). Returns how many were removed.
-- KEYS: events Stream, images hash.
local events, images = KEYS[1], KEYS[2]
if ARGV[2] == '' then
  return trim(events, images, tonumber(ARGV[1]))
end
local old = redis.call('XRANGE', events, '-', '(' .. ARGV[2] .. '-0')
release_entries(images, old)
if #old > 0 then redis.call('XTRIM', events, 'MINID', ARGV[2] .. '-0') end
return #old
