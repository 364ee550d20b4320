-- ARGV: prefix, node, now, grace_ms. The node restarted: its sessions are
-- gone, so its online leases start their grace period now.
local node = ARGV[2]
local now, grace = tonumber(ARGV[3]), tonumber(ARGV[4])
local names = redis.call('SMEMBERS', P .. 'node:' .. node)
local n = 0
for _, name in ipairs(names) do
  local lease = load(name)
  if lease and lease.session ~= '' and lease.node == node then
    local exp = now + grace
    redis.call('HSET', P .. 'lease:' .. name, 'session', '', 'exp', tostring(exp))
    set_expiry(lease, exp)
    n = n + 1
  end
end
redis.call('DEL', P .. 'node:' .. node)
return n
