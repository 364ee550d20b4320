//! Two agents that share a device name (the default name is the host name,
//! and many Raspberry Pis are called `raspberrypi`) would take the session
//! from each other forever, each seeing only "replaced". A new connection
//! still replaces the old one — that is how a device comes back after a NAT
//! rebinding or a token rotation — but when a *different* agent takes the
//! name over `limits.max_takeovers_per_minute` times within a minute, the
//! next one is refused with 409 and a reason naming the conflict, and the
//! admin API shows it. Once refused, other agents stay refused while they
//! keep trying (each refusal holds the conflict `CONFLICT_HOLD` longer), so
//! the agent online keeps the name instead of the two trading it every
//! minute; when it goes offline, the name is free again.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The window takeovers are counted in.
pub const WINDOW: Duration = Duration::from_secs(60);
/// How long after a refusal other agents are refused outright.
pub const CONFLICT_HOLD: Duration = Duration::from_secs(600);
/// Names tracked at most; past it, names with no takeover in the window go.
const MAX_NAMES: usize = 10_000;

/// Recent takeovers by another agent, per device name, on this node.
#[derive(Default)]
pub struct Takeovers {
    /// Name -> what happened to it lately.
    names: Mutex<HashMap<String, NameHistory>>,
}

/// Takeovers of one name.
#[derive(Default)]
struct NameHistory {
    /// When another agent took the name over, oldest first, within the window.
    at: VecDeque<Instant>,
    /// The last newcomer refused: the conflict, shown in the admin API.
    refused: Option<Refused>,
}

/// A newcomer refused because the name is in conflict.
#[derive(Debug, Clone)]
pub struct Refused {
    /// When.
    pub at: Instant,
    /// The refused agent's address.
    pub from: IpAddr,
}

impl Takeovers {
    /// Another agent (not the one online) asks for `name` at `now`: `true`
    /// when it may take the name over (counted), `false` when the name changed
    /// hands `max_per_minute` times in the last minute already, or an agent
    /// was refused it within `CONFLICT_HOLD`.
    pub fn take_over(&self, name: &str, from: IpAddr, max_per_minute: u32, now: Instant) -> bool {
        let mut names = self.names.lock().expect("takeovers lock");
        if names.len() >= MAX_NAMES && !names.contains_key(name) {
            names.retain(|_, h| h.prune(now));
            if names.len() >= MAX_NAMES {
                // Every tracked name is in use: let this one in uncounted
                // rather than grow without bound.
                return true;
            }
        }
        let history = names.entry(name.to_owned()).or_default();
        history.prune(now);
        if history.refused.is_some() || history.at.len() >= max_per_minute as usize {
            history.refused = Some(Refused { at: now, from });
            return false;
        }
        history.at.push_back(now);
        true
    }

    /// The last agent refused `name` while the conflict holds, if any.
    pub fn refused(&self, name: &str, now: Instant) -> Option<Refused> {
        let names = self.names.lock().expect("takeovers lock");
        names.get(name)?.refused.clone().filter(|r| now.duration_since(r.at) < CONFLICT_HOLD)
    }
}

impl NameHistory {
    /// Forgets what is older than the window; `true` while anything is left.
    fn prune(&mut self, now: Instant) -> bool {
        while self.at.front().is_some_and(|t| now.duration_since(*t) >= WINDOW) {
            self.at.pop_front();
        }
        if self.refused.as_ref().is_some_and(|r| now.duration_since(r.at) >= CONFLICT_HOLD) {
            self.refused = None;
        }
        !self.at.is_empty() || self.refused.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_takeover_past_the_limit_is_refused_while_the_other_agent_keeps_trying() {
        let takeovers = Takeovers::default();
        let (t0, ip) = (Instant::now(), "192.0.2.9".parse().unwrap());
        let at = |secs| t0 + Duration::from_secs(secs);
        for i in 0..3 {
            assert!(takeovers.take_over("pi", ip, 3, at(i)));
        }
        assert!(!takeovers.take_over("pi", ip, 3, at(4)));
        assert_eq!(takeovers.refused("pi", at(5)).unwrap().from, ip);
        assert!(takeovers.take_over("other", ip, 3, t0), "names count apart");
        // Retrying once a minute keeps being refused: each refusal holds the conflict.
        for minute in 1..=20 {
            assert!(!takeovers.take_over("pi", ip, 3, at(4 + 60 * minute)), "minute {minute}");
        }
        let last = at(4 + 60 * 20);
        assert!(takeovers.take_over("pi", ip, 3, last + CONFLICT_HOLD), "the hold ends");
    }

    #[test]
    fn two_takeovers_a_minute_are_never_refused() {
        let takeovers = Takeovers::default();
        let (t0, ip) = (Instant::now(), "192.0.2.9".parse().unwrap());
        for i in 0..100 {
            assert!(takeovers.take_over("pi", ip, 3, t0 + Duration::from_secs(30 * i)));
        }
    }
}
