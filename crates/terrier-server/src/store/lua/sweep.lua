-- ARGV: prefix, now. Deletes leases whose grace period ended, then frees the
-- parked ports whose time ran out. Returns { expired names, { name, service,
-- port, ... } of the freed parked ports } (Redis may already have expired
-- the keys of both).
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
local unparked = {}
for _, name in ipairs(redis.call('ZRANGEBYSCORE', P .. 'parking', '-inf', now)) do
  local lease = load(name)
  if lease then
    local kept = {}
    for svc, p in pairs(parse_parked(lease.parked)) do
      if p.until_ms <= now then
        free_port(name, p.port)
        table.insert(unparked, name)
        table.insert(unparked, svc)
        table.insert(unparked, tostring(p.port))
      else
        kept[svc] = p
      end
    end
    redis.call('HSET', P .. 'lease:' .. name, 'parked', format_parked(kept))
    index_parked(name, kept)
  else
    redis.call('ZREM', P .. 'parking', name)
  end
end
return { out, unparked }
