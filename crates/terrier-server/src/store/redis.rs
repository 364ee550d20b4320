//! The Redis store, for many nodes sharing state (works with Valkey too).
//!
//! Every operation that changes more than one key is one Lua script, so it
//! is atomic on the server: two nodes can never hand out one subdomain or one
//! port twice. Randomness stays in Rust (scripts are deterministic): the
//! caller passes candidate subdomains and ports, the script takes the first
//! free one, and a rare "all candidates taken" is retried with new ones.
//! Offline leases carry a Redis expiry (`PEXPIREAT`) equal to the end of
//! their grace period, so they vanish even if no node sweeps. The key layout
//! is documented at the top of `lua/common.lua`.

use std::collections::BTreeMap;
use std::ops::RangeInclusive;
use std::time::Duration;

use async_trait::async_trait;
use rand::Rng;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::Script;

use super::{Claim, FreedPort, Lease, NodeInfo, Online, ParkedPort, Reservation, Store, StoreError, Swept};

const COMMON: &str = include_str!("lua/common.lua");
/// Fresh candidates per attempt; with 51-bit subdomains, one is plenty.
const SUB_CANDIDATES: usize = 4;
/// Random port candidates per needed port before the script scans.
const PORT_CANDIDATES_PER_SERVICE: usize = 8;
/// Leases read per pipelined round trip when listing them all.
const LIST_CHUNK: usize = 500;
/// Attempts with fresh candidates when all were taken.
const CLAIM_ATTEMPTS: usize = 5;

/// A [`Store`] in Redis.
#[derive(Clone)]
pub struct RedisStore {
    /// Multiplexed connection that reconnects by itself.
    conn: ConnectionManager,
    /// Key prefix, so several deployments can share one Redis.
    prefix: String,
    /// The compiled scripts.
    scripts: Scripts,
}

#[derive(Clone)]
struct Scripts {
    claim: Script,
    release: Script,
    reassign: Script,
    sweep: Script,
    recover: Script,
    restore: Script,
    reserve: Script,
    unreserve: Script,
}

impl RedisStore {
    /// Connects to `url` (`redis://host:port/db`); keys start with `prefix`.
    /// Each command fails after `timeout` when Redis does not answer, so a
    /// Redis outage becomes a quick 503 for new devices, never a hang.
    pub async fn connect(url: &str, prefix: &str, timeout: Duration) -> Result<Self, StoreError> {
        let client = redis::Client::open(url).map_err(backend)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(1)
            .set_max_delay(timeout);
        let conn = ConnectionManager::new_with_config(client, config).await.map_err(backend)?;
        let script = |body: &str| Script::new(&format!("{COMMON}\n{body}"));
        Ok(Self {
            conn,
            prefix: prefix.to_owned(),
            scripts: Scripts {
                claim: script(include_str!("lua/claim.lua")),
                release: script(include_str!("lua/release.lua")),
                reassign: script(include_str!("lua/reassign.lua")),
                sweep: script(include_str!("lua/sweep.lua")),
                recover: script(include_str!("lua/recover.lua")),
                restore: script(include_str!("lua/restore.lua")),
                reserve: script(include_str!("lua/reserve.lua")),
                unreserve: script(include_str!("lua/unreserve.lua")),
            },
        })
    }

    fn key(&self, kind: &str, id: &str) -> String {
        format!("{}{kind}:{id}", self.prefix)
    }

    /// Every registered node id with its info (`None` once its TTL ran out).
    async fn node_table(&self) -> Result<Vec<(String, Option<NodeInfo>)>, StoreError> {
        let mut conn = self.conn.clone();
        let ids: Vec<String> = redis::cmd("SMEMBERS")
            .arg(format!("{}nodes", self.prefix))
            .query_async(&mut conn)
            .await
            .map_err(backend)?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<String> = ids.iter().map(|id| self.key("nodeinfo", id)).collect();
        let infos: Vec<Option<String>> = redis::cmd("MGET").arg(&keys).query_async(&mut conn).await.map_err(backend)?;
        Ok(ids
            .into_iter()
            .zip(infos)
            .map(|(id, info)| (id, info.and_then(|json| serde_json::from_str(&json).ok())))
            .collect())
    }

    async fn lease(&self, name: &str, now_ms: u64) -> Result<Option<Lease>, StoreError> {
        let mut conn = self.conn.clone();
        let fields: BTreeMap<String, String> =
            redis::cmd("HGETALL").arg(self.key("lease", name)).query_async(&mut conn).await.map_err(backend)?;
        if fields.is_empty() {
            return Ok(None);
        }
        let lease = decode_hash(&fields)?;
        Ok(lease.is_live(now_ms).then_some(lease))
    }
}

#[async_trait]
impl Store for RedisStore {
    async fn claim(&self, claim: Claim<'_>) -> Result<Lease, StoreError> {
        let mut conn = self.conn.clone();
        for _ in 0..CLAIM_ATTEMPTS {
            let subs: Vec<String> = (0..SUB_CANDIDATES).map(|_| terrier_transport::ids::random_subdomain()).collect();
            let ports = port_candidates(&claim.port_range, claim.services.len() * PORT_CANDIDATES_PER_SERVICE);
            let result: redis::RedisResult<[String; 9]> = self
                .scripts
                .claim
                .arg(&self.prefix)
                .arg(claim.name)
                .arg(claim.session)
                .arg(claim.node)
                .arg(claim.now_ms)
                .arg(claim.grace_ms)
                .arg(claim.services.join(","))
                .arg(subs.join(","))
                .arg(ports)
                .arg(*claim.port_range.start())
                .arg(*claim.port_range.end())
                .arg(super::MAX_HELD_PORTS)
                .invoke_async(&mut conn)
                .await;
            match result {
                Ok(fields) => return decode(fields),
                Err(e) if script_error(&e) == Some("NOSUB") => continue,
                Err(e) if script_error(&e) == Some("NOPORT") => return Err(StoreError::NoFreePort(claim.port_range)),
                Err(e) => return Err(backend(e)),
            }
        }
        Err(StoreError::Backend("no free subdomain after several attempts".into()))
    }

    async fn reassign_port(
        &self,
        name: &str,
        service: &str,
        avoid: &[u16],
        port_range: RangeInclusive<u16>,
    ) -> Result<Lease, StoreError> {
        let mut conn = self.conn.clone();
        let avoid: Vec<String> = avoid.iter().map(u16::to_string).collect();
        let result: redis::RedisResult<[String; 9]> = self
            .scripts
            .reassign
            .arg(&self.prefix)
            .arg(name)
            .arg(service)
            .arg(avoid.join(","))
            .arg(port_candidates(&port_range, PORT_CANDIDATES_PER_SERVICE))
            .arg(*port_range.start())
            .arg(*port_range.end())
            .invoke_async(&mut conn)
            .await;
        match result {
            Ok(fields) => decode(fields),
            Err(e) if script_error(&e) == Some("NOLEASE") => Err(StoreError::NoLease(name.to_owned())),
            Err(e) if script_error(&e) == Some("NOPORT") => Err(StoreError::NoFreePort(port_range)),
            Err(e) => Err(backend(e)),
        }
    }

    async fn release(&self, name: &str, session: &str, now_ms: u64, grace_ms: u64) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let _: i64 = self
            .scripts
            .release
            .arg(&self.prefix)
            .arg(name)
            .arg(session)
            .arg(now_ms)
            .arg(grace_ms)
            .invoke_async(&mut conn)
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn by_subdomain(&self, subdomain: &str, now_ms: u64) -> Result<Option<Lease>, StoreError> {
        let mut conn = self.conn.clone();
        let name: Option<String> =
            redis::cmd("GET").arg(self.key("sub", subdomain)).query_async(&mut conn).await.map_err(backend)?;
        match name {
            Some(name) => Ok(self.lease(&name, now_ms).await?.filter(|l| l.subdomain == subdomain)),
            None => Ok(None),
        }
    }

    async fn by_name(&self, name: &str, now_ms: u64) -> Result<Option<Lease>, StoreError> {
        self.lease(name, now_ms).await
    }

    async fn sweep(&self, now_ms: u64) -> Result<Swept, StoreError> {
        let mut conn = self.conn.clone();
        let (names, unparked): (Vec<String>, Vec<String>) =
            self.scripts.sweep.arg(&self.prefix).arg(now_ms).invoke_async(&mut conn).await.map_err(backend)?;
        // The keys may be gone already (Redis expired them), so only the
        // names are known; that is all a node needs to close listeners.
        let expired = names
            .into_iter()
            .map(|name| Lease {
                name,
                subdomain: String::new(),
                ports: BTreeMap::new(),
                parked: BTreeMap::new(),
                online: None,
                last_seen_ms: 0,
                expires_at_ms: Some(now_ms),
            })
            .collect();
        let mut freed = Vec::with_capacity(unparked.len() / 3);
        for triple in unparked.chunks_exact(3) {
            let port = triple[2].parse().map_err(|_| backend(format!("sweep freed a bad port {:?}", triple[2])))?;
            freed.push(FreedPort { name: triple[0].clone(), service: triple[1].clone(), port });
        }
        Ok(Swept { expired, unparked: freed })
    }

    async fn recover_node(&self, node: &str, now_ms: u64, grace_ms: u64) -> Result<usize, StoreError> {
        let mut conn = self.conn.clone();
        let n: usize = self
            .scripts
            .recover
            .arg(&self.prefix)
            .arg(node)
            .arg(now_ms)
            .arg(grace_ms)
            .invoke_async(&mut conn)
            .await
            .map_err(backend)?;
        Ok(n)
    }

    async fn register_node(&self, node: &NodeInfo, ttl_ms: u64) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let json = serde_json::to_string(node).map_err(backend)?;
        redis::pipe()
            .atomic()
            .cmd("SET")
            .arg(self.key("nodeinfo", &node.id))
            .arg(json)
            .arg("PX")
            .arg(ttl_ms)
            .ignore()
            .cmd("SADD")
            .arg(format!("{}nodes", self.prefix))
            .arg(&node.id)
            .ignore()
            .query_async::<()>(&mut conn)
            .await
            .map_err(backend)
    }

    async fn nodes(&self) -> Result<Vec<NodeInfo>, StoreError> {
        Ok(self.node_table().await?.into_iter().filter_map(|(_, info)| info).collect())
    }

    async fn dead_nodes(&self) -> Result<Vec<String>, StoreError> {
        let dead: Vec<String> =
            self.node_table().await?.into_iter().filter(|(_, info)| info.is_none()).map(|(id, _)| id).collect();
        if !dead.is_empty() {
            let mut conn = self.conn.clone();
            let _: i64 = redis::cmd("SREM")
                .arg(format!("{}nodes", self.prefix))
                .arg(&dead)
                .query_async(&mut conn)
                .await
                .map_err(backend)?;
        }
        Ok(dead)
    }

    async fn holders(&self, names: &[String]) -> Result<Vec<Option<String>>, StoreError> {
        if names.is_empty() {
            return Ok(Vec::new());
        }
        let mut conn = self.conn.clone();
        let mut pipe = redis::pipe();
        for name in names {
            pipe.cmd("HGET").arg(self.key("lease", name)).arg("session");
        }
        let sessions: Vec<Option<String>> = pipe.query_async(&mut conn).await.map_err(backend)?;
        Ok(sessions.into_iter().map(|s| s.filter(|s| !s.is_empty())).collect())
    }

    async fn restore(&self, lease: &Lease, now_ms: u64) -> Result<Lease, StoreError> {
        let mut conn = self.conn.clone();
        let online =
            lease.online.as_ref().ok_or_else(|| StoreError::Backend("restore needs an online lease".into()))?;
        let ports: Vec<String> = lease.ports.iter().map(|(s, p)| format!("{s}={p}")).collect();
        let result: redis::RedisResult<[String; 9]> = self
            .scripts
            .restore
            .arg(&self.prefix)
            .arg(&lease.name)
            .arg(&lease.subdomain)
            .arg(ports.join(";"))
            .arg(&online.session)
            .arg(&online.node)
            .arg(online.since_ms)
            .arg(now_ms)
            .invoke_async(&mut conn)
            .await;
        match result {
            Ok(fields) => decode(fields),
            Err(e) if script_error(&e) == Some("NOSUB") => {
                Err(StoreError::Backend(format!("subdomain {} was given to another device", lease.subdomain)))
            }
            Err(e) if script_error(&e) == Some("NOPORT") => {
                Err(StoreError::Backend("a port of the lease was given to another device".into()))
            }
            Err(e) => Err(backend(e)),
        }
    }

    async fn leases(&self, now_ms: u64) -> Result<Vec<Lease>, StoreError> {
        let mut conn = self.conn.clone();
        let pattern = format!("{}lease:*", self.prefix);
        let mut names = Vec::new();
        let mut cursor: u64 = 0;
        loop {
            // SCAN, not KEYS: it never blocks Redis for long on a big deployment.
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(500)
                .query_async(&mut conn)
                .await
                .map_err(backend)?;
            names.extend(
                keys.into_iter().filter_map(|k| k.strip_prefix(&pattern[..pattern.len() - 1]).map(str::to_owned)),
            );
            if next == 0 {
                break;
            }
            cursor = next;
        }
        names.sort();
        names.dedup();
        // One pipelined round trip per chunk instead of one per device.
        let mut leases = Vec::with_capacity(names.len());
        for chunk in names.chunks(LIST_CHUNK) {
            let mut pipe = redis::pipe();
            for name in chunk {
                pipe.cmd("HGETALL").arg(self.key("lease", name));
            }
            let rows: Vec<BTreeMap<String, String>> = pipe.query_async(&mut conn).await.map_err(backend)?;
            for fields in rows.into_iter().filter(|f| !f.is_empty()) {
                let lease = decode_hash(&fields)?;
                if lease.is_live(now_ms) {
                    leases.push(lease);
                }
            }
        }
        Ok(leases)
    }

    async fn reserve(&self, name: &str, subdomain: &str, now_ms: u64) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let result: redis::RedisResult<i64> =
            self.scripts.reserve.arg(&self.prefix).arg(name).arg(subdomain).arg(now_ms).invoke_async(&mut conn).await;
        match result {
            Ok(_) => Ok(()),
            Err(e) if script_error(&e) == Some("TAKEN") => Err(StoreError::SubdomainTaken(subdomain.to_owned())),
            Err(e) => Err(backend(e)),
        }
    }

    async fn unreserve(&self, name: &str) -> Result<bool, StoreError> {
        let mut conn = self.conn.clone();
        let n: i64 =
            self.scripts.unreserve.arg(&self.prefix).arg(name).invoke_async(&mut conn).await.map_err(backend)?;
        Ok(n == 1)
    }

    async fn reservations(&self) -> Result<Vec<Reservation>, StoreError> {
        let mut conn = self.conn.clone();
        let all: BTreeMap<String, String> = redis::cmd("HGETALL")
            .arg(format!("{}reservations", self.prefix))
            .query_async(&mut conn)
            .await
            .map_err(backend)?;
        Ok(all.into_iter().map(|(name, subdomain)| Reservation { name, subdomain }).collect())
    }

    async fn get_blob(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let mut conn = self.conn.clone();
        redis::cmd("GET").arg(self.key("blob", key)).query_async(&mut conn).await.map_err(backend)
    }

    async fn put_blob(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let mut cmd = match value.is_empty() {
            true => redis::cmd("DEL"),
            false => redis::cmd("SET"),
        };
        cmd.arg(self.key("blob", key));
        if !value.is_empty() {
            cmd.arg(value);
        }
        cmd.query_async::<()>(&mut conn).await.map_err(backend)
    }

    async fn blob_or_insert(&self, key: &str, value: &[u8]) -> Result<Vec<u8>, StoreError> {
        let mut conn = self.conn.clone();
        let key = self.key("blob", key);
        // SET NX decides the race; whoever lost reads the winner's value.
        redis::cmd("SET").arg(&key).arg(value).arg("NX").query_async::<()>(&mut conn).await.map_err(backend)?;
        let stored: Option<Vec<u8>> = redis::cmd("GET").arg(&key).query_async(&mut conn).await.map_err(backend)?;
        stored.ok_or_else(|| backend(format!("blob {key} vanished right after it was set")))
    }
}

/// Random ports of `range` as a comma-separated list.
fn port_candidates(range: &RangeInclusive<u16>, count: usize) -> String {
    let mut rng = rand::rng();
    (0..count).map(|_| rng.random_range(range.clone()).to_string()).collect::<Vec<_>>().join(",")
}

/// The code a script returned with `redis.error_reply`, if that is what `e`
/// is. Redis versions decorate script errors differently, so look for ours.
fn script_error(e: &redis::RedisError) -> Option<&'static str> {
    let text = e.to_string();
    ["NOSUB", "NOPORT", "NOLEASE", "TAKEN"].into_iter().find(|code| text.contains(code))
}

/// A lease from its hash fields (`HGETALL lease:<name>`).
fn decode_hash(fields: &BTreeMap<String, String>) -> Result<Lease, StoreError> {
    let get = |k: &str| fields.get(k).cloned().unwrap_or_default();
    decode([
        get("name"),
        get("sub"),
        get("ports"),
        get("session"),
        get("node"),
        get("since"),
        get("seen"),
        get("exp"),
        get("parked"),
    ])
}

/// A lease from its fields in this order: name, sub, ports, session, node,
/// since, seen, exp, parked (empty in leases written before parking existed).
fn decode(fields: [String; 9]) -> Result<Lease, StoreError> {
    let [name, subdomain, ports, session, node, since, seen, exp, parked] = fields;
    let number = |s: &str| -> Result<u64, StoreError> {
        s.parse().map_err(|_| StoreError::Backend(format!("corrupt lease {name:?}: {s:?} is not a number")))
    };
    let mut port_map = BTreeMap::new();
    for pair in ports.split(';').filter(|p| !p.is_empty()) {
        let (svc, port) =
            pair.split_once('=').ok_or_else(|| StoreError::Backend(format!("corrupt ports of {name:?}: {ports:?}")))?;
        let port = port.parse().map_err(|_| StoreError::Backend(format!("corrupt port of {name:?}: {pair:?}")))?;
        port_map.insert(svc.to_owned(), port);
    }
    let mut parked_map = BTreeMap::new();
    for entry in parked.split(';').filter(|p| !p.is_empty()) {
        let corrupt = || StoreError::Backend(format!("corrupt parked port of {name:?}: {entry:?}"));
        let (svc, rest) = entry.split_once('=').ok_or_else(corrupt)?;
        let (port, until) = rest.split_once('@').ok_or_else(corrupt)?;
        let port = port.parse().map_err(|_| corrupt())?;
        let until_ms = until.parse().map_err(|_| corrupt())?;
        parked_map.insert(svc.to_owned(), ParkedPort { port, until_ms });
    }
    let online = if session.is_empty() { None } else { Some(Online { session, node, since_ms: number(&since)? }) };
    let expires_at_ms = if exp.is_empty() { None } else { Some(number(&exp)?) };
    let last_seen_ms = number(&seen)?;
    Ok(Lease { name, subdomain, ports: port_map, parked: parked_map, online, last_seen_ms, expires_at_ms })
}

fn backend(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(e.to_string())
}
