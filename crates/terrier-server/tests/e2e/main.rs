//! terrierd's end-to-end tests, in one test binary: each file below is one
//! area (cluster, limits, TLS, ...). One binary links the dependencies once
//! instead of once per file, which keeps the test build small and quick to
//! link (23 binaries of ~57 MB each before).

mod access;
mod acme;
mod admin_api;
mod auth;
mod bad_input;
mod cluster;
mod config_examples;
mod dashboard;
mod errors;
mod faults;
mod forwarding;
mod http1_wire;
mod http_connections;
mod http_tunnel;
mod hygiene;
mod leases;
mod limits;
mod load;
mod metrics;
mod name_conflicts;
mod operator_process;
mod pool;
mod process;
mod request_log;
mod shutdown;
mod smuggling;
mod startup;
mod store_contract;
mod stuck_devices;
mod tcp_tunnel;
mod tls;
mod token_cli;
mod visitor_shares;
mod visitor_timeouts;
