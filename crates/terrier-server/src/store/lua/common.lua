-- Shared helpers, prepended to every terrier script.
-- Key layout (P = prefix, e.g. "terrier:"):
--   P.."lease:"..name   hash: name, sub, ports ("svc=port;svc=port"), session ("" offline),
--                        node, since, seen, exp ("" while online; Unix ms when offline),
--                        parked ("svc=port@until;..." ports kept for services the session
--                        did not announce; absent in leases written before it existed)
--   P.."sub:"..label    string: name          (expires with the lease)
--   P.."port:"..port    string: name          (expires with the lease)
--   P.."node:"..node    set of names online on that node
--   P.."expiring"       sorted set: name scored by exp, for sweeps
--   P.."parking"        sorted set: name scored by its earliest parked `until`, for sweeps
--   P.."reservations"   hash: name -> reserved subdomain label (no expiry)
--   P.."reserved"       hash: reserved subdomain label -> name
local P = ARGV[1]

local function load(name)
  local raw = redis.call('HGETALL', P .. 'lease:' .. name)
  if #raw == 0 then return nil end
  local lease = {}
  for i = 1, #raw, 2 do lease[raw[i]] = raw[i + 1] end
  return lease
end

local function parse_ports(s)
  local ports, order = {}, {}
  for svc, port in string.gmatch(s or '', '([^=;]+)=(%d+)') do
    ports[svc] = tonumber(port)
    table.insert(order, svc)
  end
  return ports, order
end

-- Parked ports: svc -> { port = n, until = unix ms }.
local function parse_parked(s)
  local parked = {}
  for svc, port, untl in string.gmatch(s or '', '([^=;@]+)=(%d+)@(%d+)') do
    parked[svc] = { port = tonumber(port), until_ms = tonumber(untl) }
  end
  return parked
end

-- The keys of `t`, sorted: stored fields list services in one order.
local function sorted_keys(t)
  local keys = {}
  for k, _ in pairs(t) do table.insert(keys, k) end
  table.sort(keys)
  return keys
end

local function format_parked(parked)
  local parts = {}
  for _, svc in ipairs(sorted_keys(parked)) do
    table.insert(parts, svc .. '=' .. parked[svc].port .. '@' .. tostring(parked[svc].until_ms))
  end
  return table.concat(parts, ';')
end

-- Files a lease under its earliest parked `until` for sweeps, or takes it out.
local function index_parked(name, parked)
  local earliest
  for _, p in pairs(parked) do
    if not earliest or p.until_ms < earliest then earliest = p.until_ms end
  end
  if earliest then
    redis.call('ZADD', P .. 'parking', earliest, name)
  else
    redis.call('ZREM', P .. 'parking', name)
  end
end

-- Deletes the index key of `port` if `name` still holds it.
local function free_port(name, port)
  if redis.call('GET', P .. 'port:' .. port) == name then redis.call('DEL', P .. 'port:' .. port) end
end

local function format_ports(ports)
  local parts = {}
  for _, svc in ipairs(sorted_keys(ports)) do table.insert(parts, svc .. '=' .. ports[svc]) end
  return table.concat(parts, ';')
end

local function split(s)
  local out = {}
  for item in string.gmatch(s or '', '[^,]+') do table.insert(out, item) end
  return out
end

local function is_live(lease, now)
  return lease.session ~= '' or (lease.exp ~= '' and tonumber(lease.exp) > now)
end

-- Deletes a lease and the index keys that still point at it.
local function delete(lease)
  local name = lease.name
  if redis.call('GET', P .. 'sub:' .. lease.sub) == name then redis.call('DEL', P .. 'sub:' .. lease.sub) end
  local ports = parse_ports(lease.ports)
  for _, port in pairs(ports) do free_port(name, port) end
  for _, p in pairs(parse_parked(lease.parked)) do free_port(name, p.port) end
  redis.call('DEL', P .. 'lease:' .. name)
  redis.call('ZREM', P .. 'expiring', name)
  redis.call('ZREM', P .. 'parking', name)
  if lease.node and lease.node ~= '' then redis.call('SREM', P .. 'node:' .. lease.node, name) end
end

-- Sets (exp given) or clears (exp nil) the expiry of a lease and its index keys.
local function set_expiry(lease, exp)
  local keys = { P .. 'lease:' .. lease.name, P .. 'sub:' .. lease.sub }
  for _, port in pairs(parse_ports(lease.ports)) do table.insert(keys, P .. 'port:' .. port) end
  for _, key in ipairs(keys) do
    if exp then redis.call('PEXPIREAT', key, exp) else redis.call('PERSIST', key) end
  end
  -- A parked port's key ends with the lease or at its own `until`, whichever
  -- is first; a key another device took meanwhile is left alone.
  for _, p in pairs(parse_parked(lease.parked)) do
    local at = p.until_ms
    if exp and exp < at then at = exp end
    if redis.call('GET', P .. 'port:' .. p.port) == lease.name then redis.call('PEXPIREAT', P .. 'port:' .. p.port, at) end
  end
  if exp then
    redis.call('ZADD', P .. 'expiring', exp, lease.name)
  else
    redis.call('ZREM', P .. 'expiring', lease.name)
  end
end

-- A free port: a candidate first, then a scan of the range; nil if none.
local function pick_port(candidates, min, max, taken)
  local function ok(p)
    return not taken[p] and redis.call('EXISTS', P .. 'port:' .. p) == 0
  end
  for _, c in ipairs(candidates) do
    local p = tonumber(c)
    if p >= min and p <= max and ok(p) then return p end
  end
  for p = min, max do
    if ok(p) then return p end
  end
  return nil
end

local function reply(lease)
  return { lease.name, lease.sub, lease.ports, lease.session, lease.node, lease.since, lease.seen, lease.exp,
    lease.parked or '' }
end
