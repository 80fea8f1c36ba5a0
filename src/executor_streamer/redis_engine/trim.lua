-- Shared by the scripts below it: trim a stream's events to `keep`, releasing the
-- screenshots that only trimmed events used (each image counts the events using it).
local function release(images, shot)
  if redis.call('HINCRBY', images, shot .. ':n', -1) <= 0 then
    redis.call('HDEL', images, shot .. ':d', shot .. ':m', shot .. ':h', shot .. ':n')
  end
end

local function release_entries(images, entries)
  for _, entry in ipairs(entries) do
    local fields = entry[2]
    for f = 1, #fields, 2 do
      if fields[f] == 's' then release(images, fields[f + 1]) end
    end
  end
end

local function trim(events, images, keep)
  local size = redis.call('XLEN', events)
  if size > keep then
    release_entries(images, redis.call('XRANGE', events, '-', '+', 'COUNT', size - keep))
    redis.call('XTRIM', events, 'MAXLEN', keep)
  end
  return math.max(size - keep, 0)
end

local function add_image(images, shot, mime, sha, data)
  if redis.call('HSETNX', images, shot .. ':d', data) == 1 then
    redis.call('HSET', images, shot .. ':m', mime, shot .. ':h', sha)
  end
  redis.call('HINCRBY', images, shot .. ':n', 1)
end
