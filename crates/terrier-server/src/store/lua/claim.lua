-- ARGV: prefix, name, session, node, now, grace_ms, services (a,b), subdomain candidates (x,y),
--       port candidates (1,2), port min, port max, most ports held (announced + parked)
-- Returns the lease as an array, or an error reply "NOSUB" / "NOPORT" without writing.
local name, session, node = ARGV[2], ARGV[3], ARGV[4]
local now, grace = tonumber(ARGV[5]), tonumber(ARGV[6])
local services = split(ARGV[7])
local sub_candidates = split(ARGV[8])
local port_candidates = split(ARGV[9])
local min, max = tonumber(ARGV[10]), tonumber(ARGV[11])
local max_held = tonumber(ARGV[12])

local lease = load(name)
if lease and not is_live(lease, now) then
  delete(lease)
  lease = nil
end

-- Phase 1: decide everything; fail before writing anything.
-- A reserved subdomain wins, also over the one a live lease had.
local reserved = redis.call('HGET', P .. 'reservations', name)
local sub, old_sub
if reserved then
  sub = reserved
  if lease and lease.sub ~= reserved then old_sub = lease.sub end
elseif lease then
  sub = lease.sub
else
  for _, c in ipairs(sub_candidates) do
    if redis.call('EXISTS', P .. 'sub:' .. c) == 0 and redis.call('HEXISTS', P .. 'reserved', c) == 0 then
      sub = c
      break
    end
  end
  if not sub then return redis.error_reply('NOSUB') end
end
local old_ports = lease and parse_ports(lease.ports) or {}
local wanted = {}
for _, svc in ipairs(services) do wanted[svc] = true end
local ports, parked, taken, freed = {}, {}, {}, {}
local function keep(svc, port)
  if port >= min and port <= max then ports[svc] = port else table.insert(freed, port) end
end
-- A parked port still ours and in time comes back with its service or
-- stays parked; Redis may have expired its key already by its own clock.
for svc, p in pairs(lease and parse_parked(lease.parked) or {}) do
  if p.until_ms <= now or redis.call('GET', P .. 'port:' .. p.port) ~= name then
    table.insert(freed, p.port)
  elseif wanted[svc] then
    keep(svc, p.port)
  else
    parked[svc] = p
  end
end
-- A service missing from this session keeps its port for a grace period.
for svc, port in pairs(old_ports) do
  if wanted[svc] then
    keep(svc, port)
  elseif grace > 0 then
    parked[svc] = { port = port, until_ms = now + grace }
  else
    table.insert(freed, port)
  end
end
-- At most max_held ports in all: past it, the parked ports due soonest go
-- (a device announcing new services at every connect must not collect the range).
local parked_list = {}
for svc, p in pairs(parked) do table.insert(parked_list, { svc = svc, p = p }) end
table.sort(parked_list, function(a, b) return a.p.until_ms < b.p.until_ms end)
local room = max_held - #services
for i = 1, #parked_list - math.max(room, 0) do
  table.insert(freed, parked_list[i].p.port)
  parked[parked_list[i].svc] = nil
end
for _, svc in ipairs(services) do
  if not ports[svc] then
    local p = pick_port(port_candidates, min, max, taken)
    if not p then return redis.error_reply('NOPORT') end
    taken[p] = true
    ports[svc] = p
  end
end

-- Phase 2: write.
if old_sub and redis.call('GET', P .. 'sub:' .. old_sub) == name then redis.call('DEL', P .. 'sub:' .. old_sub) end
for _, port in ipairs(freed) do free_port(name, port) end
if lease and lease.node ~= '' and lease.node ~= node then
  redis.call('SREM', P .. 'node:' .. lease.node, name)
end
redis.call('SET', P .. 'sub:' .. sub, name)
for _, port in pairs(ports) do redis.call('SET', P .. 'port:' .. port, name) end
lease = {
  name = name, sub = sub, ports = format_ports(ports), session = session, node = node,
  since = tostring(now), seen = tostring(now), exp = '', parked = format_parked(parked),
}
redis.call('HSET', P .. 'lease:' .. name, 'name', name, 'sub', sub, 'ports', lease.ports,
  'session', session, 'node', node, 'since', lease.since, 'seen', lease.seen, 'exp', '',
  'parked', lease.parked)
set_expiry(lease, nil)
index_parked(name, parked)
redis.call('SADD', P .. 'node:' .. node, name)
return reply(lease)
