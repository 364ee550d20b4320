//! The parts of the `terrierd` binary that are not the server: the token
//! subcommands ([`token`]), where output goes ([`output`]) and giving
//! memory back after bursts ([`memory`]). The library (`lib.rs`) does not
//! use them.

pub mod memory;
pub mod output;
pub mod token;
