-- ARGV: prefix, now. Deletes leases whose grace period ended; returns their
-- names (Redis may already have expired their keys).
local now = tonumber(ARGV[2])
local names = redis.call('ZRANGEBYSCORE', P .. 'expiring', '-inf', now)
local out = {}
for _, name in ipairs(names) do
  local lease = load(name)
  if lease and is_live(lease, now) then
    -- Came back online meanwhile (claim clears the entry; be safe).
    redis.call('ZREM', P .. 'expiring', name)
  else
    if lease then delete(lease) else redis.call('ZREM', P .. 'expiring', name) end
    table.insert(out, name)
  end
end
return out
