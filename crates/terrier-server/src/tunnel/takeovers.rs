//! Two agents that share a device name (the default name is the host name,
//! and many Raspberry Pis are called `raspberrypi`) would take the session
//! from each other forever, each seeing only "replaced". A new connection
//! still replaces the old one — that is how a device comes back after a NAT
//! rebinding or a token rotation — but when a *different* agent takes the
//! name over `limits.max_takeovers_per_minute` times within a minute, the
//! next one is refused with 409 and a reason naming the conflict, and the
//! admin API shows it. Once refused, other agents stay refused while they
//! keep trying (each refusal holds the conflict `CONFLICT_HOLD` longer), so
//! the name stops changing hands; when its agent goes offline, it is free.
//!
//! The agent that held the name when the takeovers began is never refused:
//! an attacker with a credential for the name cannot churn takeovers (fresh
//! `instance` ids cost nothing) to lock the device it belongs to out.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;

use super::session::AgentAt;
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
    /// The agent online when the first takeover in this history happened.
    holder: Option<AgentAt>,
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
    /// `newcomer`, another agent than `online` (the one holding `name`,
    /// `settled` when for a [`WINDOW`] or more), asks for it at `now`:
    /// `true` when it may take the name over (counted), `false` when the
    /// name changed hands `max_per_minute` times in the last minute already
    /// or an agent was refused it within `CONFLICT_HOLD`, unless `newcomer`
    /// held the name, settled, when this began (a holder that had just
    /// grabbed the name while its device was away gets no such protection).
    pub fn take_over(
        &self,
        name: &str,
        newcomer: &AgentAt,
        online: &AgentAt,
        settled: bool,
        max_per_minute: u32,
        now: Instant,
    ) -> bool {
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
        if history.at.is_empty() && history.refused.is_none() && settled {
            history.holder = Some(online.clone());
        }
        let original = history.holder.as_ref().is_some_and(|holder| newcomer.same_agent(holder));
        if !original && (history.refused.is_some() || history.at.len() >= max_per_minute as usize) {
            history.refused = Some(Refused { at: now, from: newcomer.remote.ip() });
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
        let busy = !self.at.is_empty() || self.refused.is_some();
        if !busy {
            self.holder = None;
        }
        busy
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agent(ip: &str, instance: &str) -> AgentAt {
        AgentAt { remote: format!("{ip}:40000").parse().unwrap(), instance: Some(instance.into()) }
    }

    #[test]
    fn the_takeover_past_the_limit_is_refused_while_the_other_agent_keeps_trying() {
        let takeovers = Takeovers::default();
        let (first, second) = (agent("192.0.2.1", "first"), agent("192.0.2.2", "second"));
        let t0 = Instant::now();
        let at = |secs| t0 + Duration::from_secs(secs);
        // The two trade the name: second takes it, first takes it back, ...
        assert!(takeovers.take_over("pi", &second, &first, true, 3, at(0)));
        assert!(takeovers.take_over("pi", &first, &second, true, 3, at(1)));
        assert!(takeovers.take_over("pi", &second, &first, true, 3, at(2)));
        assert!(takeovers.take_over("pi", &first, &second, true, 3, at(3)), "the first holder is never refused");
        assert!(!takeovers.take_over("pi", &second, &first, true, 3, at(4)));
        assert_eq!(takeovers.refused("pi", at(5)).unwrap().from, second.remote.ip());
        assert!(takeovers.take_over("other", &second, &first, true, 3, t0), "names count apart");
        // Retrying once a minute keeps being refused: each refusal holds the conflict.
        for minute in 1..=20 {
            assert!(!takeovers.take_over("pi", &second, &first, true, 3, at(4 + 60 * minute)), "minute {minute}");
        }
        let last = at(4 + 60 * 20);
        assert!(takeovers.take_over("pi", &second, &first, true, 3, last + CONFLICT_HOLD), "the hold ends");
    }

    #[test]
    fn fresh_instance_ids_cannot_lock_the_holder_out() {
        let takeovers = Takeovers::default();
        let device = agent("192.0.2.1", "device");
        let t0 = Instant::now();
        let mut online = device.clone();
        for i in 0..3 {
            let attacker = agent("198.51.100.7", &format!("fresh-{i}"));
            assert!(takeovers.take_over("door", &attacker, &online, true, 3, t0));
            online = attacker;
        }
        assert!(takeovers.take_over("door", &device, &online, false, 3, t0), "the device gets its name back");
        let attacker = agent("198.51.100.7", "fresh-9");
        assert!(!takeovers.take_over("door", &attacker, &device, false, 3, t0), "and keeps it");
    }

    #[test]
    fn a_holder_that_just_grabbed_the_name_is_not_protected() {
        let takeovers = Takeovers::default();
        let (device, grabber) = (agent("192.0.2.1", "device"), agent("198.51.100.7", "grabber"));
        let t0 = Instant::now();
        // The grabber took the name while the device was away; the device
        // comes back, and the two trade it: the grabber is not the holder.
        assert!(takeovers.take_over("door", &device, &grabber, false, 3, t0));
        assert!(takeovers.take_over("door", &grabber, &device, false, 3, t0));
        assert!(takeovers.take_over("door", &device, &grabber, false, 3, t0));
        assert!(!takeovers.take_over("door", &grabber, &device, false, 3, t0), "plain counting applies");
    }

    #[test]
    fn two_takeovers_a_minute_are_never_refused() {
        let takeovers = Takeovers::default();
        let (a, b) = (agent("192.0.2.1", "a"), agent("192.0.2.2", "b"));
        for i in 0..100 {
            assert!(takeovers.take_over("pi", &b, &a, true, 3, Instant::now() + Duration::from_secs(30 * i)));
        }
    }
}
