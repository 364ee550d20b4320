//! [`TestAgent`]: `terrier_agent::run` in-process, with its events in a
//! watch channel so tests can wait for "connected".

use std::net::SocketAddr;
use std::time::Duration;

use terrier_agent::{AgentConfig, Connected, Event, Service, Target};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// A running in-process agent.
pub struct TestAgent {
    /// Its configuration.
    pub config: AgentConfig,
    events: watch::Receiver<Vec<Event>>,
    shutdown: CancellationToken,
    handle: Option<JoinHandle<Result<(), terrier_agent::Fatal>>>,
}

/// An agent configuration for tests: fast reconnects.
pub fn agent_config(server: url::Url, name: &str) -> AgentConfig {
    AgentConfig {
        server,
        name: name.into(),
        backoff_min: Duration::from_millis(100),
        backoff_max: Duration::from_millis(500),
        connect_timeout: Duration::from_secs(5),
        ..AgentConfig::default()
    }
}

/// A service target on loopback.
pub fn target(addr: SocketAddr) -> Target {
    Target { host: addr.ip().to_string(), port: addr.port() }
}

impl TestAgent {
    /// Starts an agent for `name` exposing `http` (if any) and `tcp` services.
    pub fn start(server: url::Url, name: &str, http: Option<SocketAddr>, tcp: &[(&str, SocketAddr)]) -> Self {
        let mut config = agent_config(server, name);
        config.http = http.map(|a| Service::http(target(a)));
        config.tcp = tcp.iter().map(|(id, a)| Service { id: (*id).into(), target: target(*a) }).collect();
        Self::start_with(config)
    }

    /// The most common device of the tests: a fresh [`crate::upstream::http_service`]
    /// behind an agent named `name`, connected; returns the agent and the
    /// `Host` visitors use for it.
    pub async fn web_device(server: url::Url, name: &str) -> (Self, String) {
        let web = crate::upstream::http_service().await;
        let mut agent = Self::start(server, name, Some(web), &[]);
        let host = crate::visitor::device_host(&agent.connected(1).await.subdomain);
        (agent, host)
    }

    /// Starts an agent with a full configuration.
    pub fn start_with(config: AgentConfig) -> Self {
        let (tx, events) = watch::channel(Vec::new());
        let shutdown = CancellationToken::new();
        let handle = tokio::spawn(terrier_agent::run(config.clone(), shutdown.clone(), move |event| {
            tx.send_modify(|all| all.push(event));
        }));
        Self { config, events, shutdown, handle: Some(handle) }
    }

    /// Waits (up to 10 s) for the `n`-th `connected` event (1-based).
    pub async fn connected(&mut self, n: usize) -> Connected {
        let name = self.config.name.clone();
        let mut events = self.events.clone();
        let wait = events.wait_for(|all| all.iter().filter(|e| matches!(e, Event::Connected(_))).count() >= n);
        let Ok(all) = tokio::time::timeout(Duration::from_secs(10), wait).await else {
            panic!("agent {name} connected {n} time(s) within 10 s; events: {:?}", self.events.borrow());
        };
        let connected = all
            .expect("agent events")
            .iter()
            .filter_map(|e| if let Event::Connected(c) = e { Some(c.clone()) } else { None })
            .nth(n - 1)
            .expect("n-th connected");
        connected
    }

    /// Waits (up to 10 s) until `count` events satisfy `matches`; returns
    /// the last of them. `what` names the wait in the panic.
    pub async fn wait_for(&self, what: &str, count: usize, matches: impl Fn(&Event) -> bool) -> Event {
        let mut events = self.events.clone();
        let wait = events.wait_for(|all| all.iter().filter(|e| matches(e)).count() >= count);
        let Ok(all) = tokio::time::timeout(Duration::from_secs(10), wait).await else {
            panic!("agent {}: {what} within 10 s; events: {:?}", self.config.name, self.events.borrow());
        };
        let found = all.expect("agent events").iter().filter(|e| matches(e)).nth(count - 1).expect("counted").clone();
        found
    }

    /// Every event so far.
    pub fn events(&self) -> Vec<Event> {
        self.events.borrow().clone()
    }

    /// Stops the agent (its sockets close as a killed process's would).
    pub async fn stop(mut self) -> Result<(), terrier_agent::Fatal> {
        self.shutdown.cancel();
        match self.handle.take() {
            Some(h) => tokio::time::timeout(Duration::from_secs(5), h).await.expect("agent stops").expect("agent task"),
            None => Ok(()),
        }
    }

    /// Waits for the agent to end on its own (a fatal error).
    pub async fn finished(mut self) -> Result<(), terrier_agent::Fatal> {
        let h = self.handle.take().expect("running");
        tokio::time::timeout(Duration::from_secs(10), h).await.expect("agent ends").expect("agent task")
    }
}

impl Drop for TestAgent {
    fn drop(&mut self) {
        self.shutdown.cancel();
        if let Some(h) = self.handle.take() {
            h.abort();
        }
    }
}
