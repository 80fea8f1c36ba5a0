-- Publish a batch into one stream (docs/multi-node.md). Atomic: Redis runs a script
-- to its end before any other command, so seqs are contiguous whichever hub calls it.
--
-- KEYS: 1 meta hash, 2 events Stream, 3 images hash, 4 idempotency key
-- ARGV: 1 epoch to use if the stream has none, 2 maxHistorySize, 3 the fingerprint of
--       the events, kept with the key (the hub compares it on a repeat), 4 its lifetime in ms, 5 the hub's timestamp,
--       6 workflow session id, 7 config JSON, 8 metadata JSON, 9 created-at,
--       10 channel, 11 number of events, then 11 fields per event:
--       type, head, mid, tail, command op, command name, command id,
--       screenshot id, its mime type, its sha256, its bytes.
-- An event's payload is head .. seq .. mid .. timestamp .. tail: the hub serialized it
-- with those two fields cut out, since only this script knows them.
-- Returns {"ok", epoch, first seq, timestamp, created, resolved command ids...},
-- {"dup", "<epoch>\n<first seq>\n<count>\n<fingerprint>"} or {"closed"}.

local meta, events, images, idem = KEYS[1], KEYS[2], KEYS[3], KEYS[4]

if ARGV[3] ~= '' then
  local prior = redis.call('GET', idem)
  if prior then return {'dup', prior} end
end

local state = redis.call('HMGET', meta, 'epoch', 'seq', 'ts', 'status', 'cmds')
local epoch, seq, last_ts, status, cmds = state[1], tonumber(state[2] or '0'), state[3] or '', state[4], state[5]
local created = 0
if not epoch then
  -- No state: a new stream, or a Redis that lost its data. Either way a new epoch,
  -- whose history starts empty and whose seqs start at 1.
  epoch, seq, status, cmds, created = ARGV[1], 0, 'INITIALIZING', false, 1
  redis.call('DEL', events, images)
  redis.call('HSET', meta, 'epoch', epoch, 'wf', ARGV[6], 'config', ARGV[7],
    'meta', ARGV[8], 'created', ARGV[9])
end
if status == 'CLOSED' then return {'closed'} end
if status == 'INITIALIZING' then status = 'ACTIVE' end

local ts = ARGV[5]
if ts < last_ts then ts = last_ts end  -- fixed-width RFC 3339: text order is time order

local running, running_changed = nil, false
local function load_running()
  if running == nil then
    running = {}
    if cmds then running = cjson.decode(cmds) end
  end
end
local function drop_running(id)
  for i = #running, 1, -1 do
    if running[i][1] == id then table.remove(running, i) end
  end
end

local count, base = tonumber(ARGV[11]), 11
local first = seq + 1
local types, payloads, resolved = {}, {}, {}
for i = 1, count do
  local a = base + (i - 1) * 11
  local kind, head, mid, tail = ARGV[a + 1], ARGV[a + 2], ARGV[a + 3], ARGV[a + 4]
  local op, name, id = ARGV[a + 5], ARGV[a + 6], ARGV[a + 7]
  if op ~= '' then
    load_running()
    running_changed = true
    if op == 's' then
      drop_running(id)
      running[#running + 1] = {id, name}
    elseif op == 'f' then
      drop_running(id)
    else -- 'F': no id given; the newest running command of that name, else id as it is
      local found = id
      for j = #running, 1, -1 do
        if running[j][2] == name then found = running[j][1]; table.remove(running, j); break end
      end
      if found ~= id then
        local needle = '"commandId":"' .. id .. '"'
        local at = string.find(tail, needle, 1, true)
        tail = string.sub(tail, 1, at - 1) .. '"commandId":"' .. found .. '"' .. string.sub(tail, at + #needle)
      end
      resolved[#resolved + 1] = found
    end
  end
  seq = seq + 1
  -- %d, not Lua's own number formatting, which writes 1e+15 from 10^14 on.
  local seq_text = string.format('%d', seq)
  local payload = head .. seq_text .. mid .. ts .. tail
  local shot = ARGV[a + 8]
  if shot ~= '' then
    add_image(images, shot, ARGV[a + 9], ARGV[a + 10], ARGV[a + 11])
    redis.call('XADD', events, seq_text .. '-0', 't', kind, 'p', payload, 's', shot)
  else
    redis.call('XADD', events, seq_text .. '-0', 't', kind, 'p', payload)
  end
  types[i] = kind
  payloads[i] = payload
end

trim(events, images, tonumber(ARGV[2]))

redis.call('HSET', meta, 'seq', seq, 'ts', ts, 'status', status)
if running_changed then redis.call('HSET', meta, 'cmds', cjson.encode(running)) end
redis.call('HINCRBY', meta, 'total', count)

redis.call('SPUBLISH', ARGV[10],
  'E' .. epoch .. '\n' .. string.format('%d', first) .. '\n' .. table.concat(types, ',') .. '\n' .. table.concat(payloads, '\n'))

if ARGV[3] ~= '' then
  redis.call('SET', idem, epoch .. '\n' .. string.format('%d', first) .. '\n' .. count .. '\n' .. ARGV[3], 'PX', ARGV[4])
end
local reply = {'ok', epoch, first, ts, created}
for _, id in ipairs(resolved) do reply[#reply + 1] = id end
return reply
