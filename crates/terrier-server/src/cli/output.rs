//! Where `terrierd` writes: its answer on stdout (the banner and URLs when
//! serving, a token or a list for a subcommand), log lines on stderr, so
//! `terrierd > urls.txt` or `$(terrierd token create ...)` get only the
//! answer. Colour only for a terminal, and never with `NO_COLOR` set.

use std::io::IsTerminal;

/// Installs the log subscriber: `filter` (a tracing filter), text or JSON
/// lines, on stderr.
pub fn init_logging(filter: &str, json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter).unwrap_or_else(|_| "info".into());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        let ansi = colour(std::io::stderr().is_terminal(), std::env::var_os("NO_COLOR").as_deref());
        builder.with_ansi(ansi).init();
    }
}

/// Colour on a terminal, unless `NO_COLOR` is set to anything but the empty
/// string (<https://no-color.org>).
fn colour(terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    terminal && no_color.is_none_or(|v| v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        use std::ffi::OsStr;
        assert!(colour(true, None));
        assert!(colour(true, Some(OsStr::new(""))));
        assert!(!colour(true, Some(OsStr::new("1"))));
        assert!(!colour(false, None));
    }
}
