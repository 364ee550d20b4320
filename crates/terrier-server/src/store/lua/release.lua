-- ARGV: prefix, name, session, now, grace_ms. Marks the lease offline if the
-- session still holds it; the lease and its index keys then expire with it.
local name, session = ARGV[2], ARGV[3]
local now, grace = tonumber(ARGV[4]), tonumber(ARGV[5])
local lease = load(name)
if not lease or lease.session ~= session then return 0 end
local exp = now + grace
redis.call('HSET', P .. 'lease:' .. name, 'session', '', 'seen', tostring(now), 'exp', tostring(exp))
redis.call('SREM', P .. 'node:' .. lease.node, name)
set_expiry(lease, exp)
return 1
