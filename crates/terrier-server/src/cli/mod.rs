//! The parts of the `terrierd` binary that are not the server: the token
//! subcommands ([`token`]). The library
//! (`lib.rs`) does not use them.

pub mod token;
