-- Store records whose seqs the caller assigned (HistoryStore.write, docs/architecture.md):
-- all of them or, if any seq does not follow its stream's last, none.
-- KEYS: per write, its meta hash, events Stream and images hash.
-- ARGV: number of writes, then per write: maxHistorySize, state fields as alternating
-- names and values (count first), record count, then per record: seq, type, payload,
-- screenshot id, its mime type, its sha256, its bytes.
local writes, at = tonumber(ARGV[1]), 2
local plan, expected = {}, {}
for w = 1, writes do
  local meta = KEYS[(w - 1) * 3 + 1]
  local item = {meta = meta, events = KEYS[(w - 1) * 3 + 2], images = KEYS[(w - 1) * 3 + 3]}
  item.keep = tonumber(ARGV[at]); at = at + 1
  local nstate = tonumber(ARGV[at]); at = at + 1
  item.state = {}
  for i = 1, nstate do item.state[i] = ARGV[at]; at = at + 1 end
  local count = tonumber(ARGV[at]); at = at + 1
  item.first, item.count = at, count
  local last = expected[meta]
  if last == nil then last = tonumber(redis.call('HGET', meta, 'seq') or '-1') end
  for r = 1, count do
    local seq = tonumber(ARGV[at])
    if last > 0 and seq ~= last + 1 then
      return redis.error_reply('seq ' .. seq .. ' does not follow ' .. last)
    end
    last = seq
    at = at + 7
  end
  expected[meta] = last
  plan[w] = item
end
for _, item in ipairs(plan) do
  local at = item.first
  for r = 1, item.count do
    local seq, kind, payload, shot = ARGV[at], ARGV[at + 1], ARGV[at + 2], ARGV[at + 3]
    if shot ~= '' then
      add_image(item.images, shot, ARGV[at + 4], ARGV[at + 5], ARGV[at + 6])
      redis.call('XADD', item.events, seq .. '-0', 't', kind, 'p', payload, 's', shot)
    else
      redis.call('XADD', item.events, seq .. '-0', 't', kind, 'p', payload)
    end
    redis.call('HSET', item.meta, 'seq', seq)
    at = at + 7
  end
  if #item.state > 0 then redis.call('HSET', item.meta, unpack(item.state)) end
  trim(item.events, item.images, item.keep)
end
return writes
