-- ARGV: prefix, name, service, avoid (1,2), port candidates (3,4), min, max.
-- Moves one service of a lease to a free port outside `avoid`.
local name, service = ARGV[2], ARGV[3]
local avoid = split(ARGV[4])
local candidates = split(ARGV[5])
local min, max = tonumber(ARGV[6]), tonumber(ARGV[7])
local lease = load(name)
if not lease then return redis.error_reply('NOLEASE') end
local taken = {}
for _, p in ipairs(avoid) do taken[tonumber(p)] = true end
local p = pick_port(candidates, min, max, taken)
if not p then return redis.error_reply('NOPORT') end
local ports = parse_ports(lease.ports)
local old = ports[service]
if old and redis.call('GET', P .. 'port:' .. old) == name then redis.call('DEL', P .. 'port:' .. old) end
ports[service] = p
lease.ports = format_ports(ports)
redis.call('SET', P .. 'port:' .. p, name)
redis.call('HSET', P .. 'lease:' .. name, 'ports', lease.ports)
if lease.exp ~= '' then redis.call('PEXPIREAT', P .. 'port:' .. p, tonumber(lease.exp)) end
return reply(lease)
