-- ARGV: prefix, name, sub, ports ("svc=port;..."), session, node, since, now.
-- Writes back a lease a node holds online after Redis lost it. Returns the
-- lease now stored (another session's, if one took the name meanwhile), or
-- "NOSUB" / "NOPORT" when the old addresses went to someone else.
local name, sub, ports_s, session, node = ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local since, now = ARGV[7], tonumber(ARGV[8])
local lease = load(name)
if lease and is_live(lease, now) and lease.session ~= '' then return reply(lease) end
if lease then delete(lease) end
local owner = redis.call('GET', P .. 'sub:' .. sub)
if owner and owner ~= name then return redis.error_reply('NOSUB') end
local ports = parse_ports(ports_s)
for _, port in pairs(ports) do
  owner = redis.call('GET', P .. 'port:' .. port)
  if owner and owner ~= name then return redis.error_reply('NOPORT') end
end
redis.call('SET', P .. 'sub:' .. sub, name)
for _, port in pairs(ports) do redis.call('SET', P .. 'port:' .. port, name) end
lease = { name = name, sub = sub, ports = format_ports(ports), session = session, node = node,
  since = since, seen = tostring(now), exp = '', parked = '' }
-- Only the session's own ports are written back; parked ones were not checked.
redis.call('HSET', P .. 'lease:' .. name, 'name', name, 'sub', sub, 'ports', lease.ports,
  'session', session, 'node', node, 'since', since, 'seen', lease.seen, 'exp', '', 'parked', '')
set_expiry(lease, nil)
redis.call('SADD', P .. 'node:' .. node, name)
return reply(lease)
