-- ARGV: prefix, name, label, now. Reserves subdomain `label` for device
-- `name`, replacing its earlier reservation. Error reply "TAKEN" when another
-- device reserved it or holds it in a live lease.
local name, label, now = ARGV[2], ARGV[3], tonumber(ARGV[4])
local owner = redis.call('HGET', P .. 'reserved', label)
if owner and owner ~= name then return redis.error_reply('TAKEN') end
local holder = redis.call('GET', P .. 'sub:' .. label)
if holder and holder ~= name then
  local other = load(holder)
  if other and other.sub == label and is_live(other, now) then return redis.error_reply('TAKEN') end
end
local old = redis.call('HGET', P .. 'reservations', name)
if old and old ~= label then redis.call('HDEL', P .. 'reserved', old) end
redis.call('HSET', P .. 'reserved', label, name)
redis.call('HSET', P .. 'reservations', name, label)
return 1
