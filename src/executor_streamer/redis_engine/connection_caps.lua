-- Take a connection slot for a subject (RateLimits.hold_connection across hubs).
-- KEYS: 1 the subject's sorted set of slots, scored by when each lapses.
-- ARGV: 1 now (ms), 2 when this slot lapses unless renewed (ms), 3 the limit, 4 the slot.
-- Returns 1 if taken, 0 if the subject already holds the limit.
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[3]) then return 0 end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[4])
redis.call('PEXPIREAT', KEYS[1], ARGV[2])
return 1
