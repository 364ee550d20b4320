//! Running the real binaries in tests: a command with nothing inherited from
//! the environment that would change its behaviour, and a bounded run to exit.

use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;

/// `program` without any inherited variable starting with `env_prefix`
/// (e.g. `TERRIERD_`), no stdin, killed when dropped.
pub fn clean_command(program: &str, env_prefix: &str) -> Command {
    let mut command = Command::new(program);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with(env_prefix) {
            command.env_remove(key);
        }
    }
    command.stdin(Stdio::null()).kill_on_drop(true);
    command
}

/// Runs `command` with `args` to completion (at most 10 s) and returns its output.
pub async fn run_to_exit(mut command: Command, args: &[&str]) -> std::process::Output {
    let output = command.args(args).stdout(Stdio::piped()).stderr(Stdio::piped()).output();
    tokio::time::timeout(Duration::from_secs(10), output)
        .await
        .unwrap_or_else(|_| panic!("{command:?} exits within 10 s"))
        .expect("run the binary")
}
