-- ARGV: prefix, name. Drops the reservation of `name`; returns 1 if it had one.
local name = ARGV[2]
local label = redis.call('HGET', P .. 'reservations', name)
if not label then return 0 end
redis.call('HDEL', P .. 'reservations', name)
redis.call('HDEL', P .. 'reserved', label)
return 1
