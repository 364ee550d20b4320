//! The agent's end-to-end tests, in one test binary: each file below is
//! one area. One binary links the dependencies once instead of once per
//! file, which keeps the test build small and quick to link.

mod support;

mod agent_process;
mod check;
mod half_open;
mod misdirected;
mod proxy;
mod reconnect;
mod secure;
mod terrierd_tls;
