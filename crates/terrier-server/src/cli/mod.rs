//! The parts of the `terrierd` binary that are not the server: the token
//! subcommands ([`token`]) and where output goes ([`output`]). The library
//! (`lib.rs`) does not use them.

pub mod output;
pub mod token;
