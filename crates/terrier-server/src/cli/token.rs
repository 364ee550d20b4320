//! `terrierd token create/list/revoke`: the operator's device tokens, in the
//! token store the server's own configuration names (`--config`,
//! `--data-dir`, `TERRIERD_*`).
//!
//! A token minted into a store the server does not read is refused with 401
//! and nothing says why, so these commands never create a store by
//! accident: an embedded store must already exist (the server made it) or
//! be asked for with `create --init`.

use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use terrier_server::auth::token::{self, Kind, Scope, TokenRecord};
use terrier_server::ServerConfig;

/// `terrierd token ...`
#[derive(Debug, clap::Subcommand)]
pub enum TokenCommand {
    /// Mint a token for one device name (or a fleet's name prefix) and print
    /// it once on stdout; only its hash is stored.
    Create {
        /// A token for scripts visiting the devices (sent as Authorization: Bearer), accepted
        /// where their [access] section takes credentials or a path takes "bearer"; it
        /// registers no device.
        #[arg(long)]
        visitors: bool,
        /// The one device name the token may register.
        #[arg(long, conflicts_with = "prefix", required_unless_present = "prefix")]
        name: Option<String>,
        /// Any device name starting with this may register (a fleet token).
        #[arg(long)]
        prefix: Option<String>,
        /// A note shown in `token list` (who or what the token is for).
        #[arg(long, default_value = "")]
        note: String,
        /// Make the token stop working after this long, e.g. 90d [default: never].
        #[arg(long, value_parser = humantime::parse_duration)]
        expires_in: Option<Duration>,
        /// Start a new token store in the data dir when it has none yet (before
        /// the server's first start). Without it, a data dir with no store is
        /// an error: the server would not see the token.
        #[arg(long)]
        init: bool,
    },
    /// List tokens: id, what they may register, when they were made.
    List,
    /// Revoke a token by id; devices using it are disconnected within auth.refresh_interval.
    Revoke {
        /// The token id (the part after `terrier_`, as `token list` shows).
        id: String,
    },
}

/// Runs `command` against the token store `config` names.
pub async fn run(config: &ServerConfig, command: TokenCommand) -> anyhow::Result<()> {
    let init = matches!(command, TokenCommand::Create { init: true, .. });
    let place = store_place(config, init)?;
    let store = terrier_server::auth::open_token_store(config).await?;
    match command {
        TokenCommand::Create { name, prefix, note, expires_in, visitors, .. } => {
            let scope = Scope::from_parts(name, prefix).map_err(anyhow::Error::msg)?;
            token::check_note(&note).map_err(anyhow::Error::msg)?;
            let now = terrier_server::store::now_ms();
            let expires_ms = match expires_in {
                Some(d) => Some(
                    u64::try_from(d.as_millis())
                        .ok()
                        .and_then(|ms| now.checked_add(ms))
                        .filter(|at| *at <= token::LATEST_EXPIRY_MS)
                        .ok_or_else(|| anyhow::anyhow!("--expires-in {d:?}: ends after the year 9999"))?,
                ),
                None => None,
            };
            let kind = if visitors { Kind::Visitor } else { Kind::Device };
            let mut minted = token::mint_kind(scope, kind, &note, now);
            minted.record.expires_ms = expires_ms;
            store.insert(&minted.record).await?;
            let what = if visitors { "visiting" } else { "registering" };
            eprintln!(
                "token {} created for {what} {} in {place}; it is shown only this once:",
                minted.record.id, minted.record.scope
            );
            println!("{}", minted.token);
        }
        TokenCommand::List => {
            let mut tokens = store.load().await?;
            tokens.sort_by_key(|t| t.created_ms);
            print!("{}", table(&tokens));
        }
        TokenCommand::Revoke { id } => {
            if !store.revoke(&id).await? {
                anyhow::bail!("no token with id {id:?} in {place} (see `terrierd token list`)");
            }
            eprintln!("token {id} revoked; devices using it are disconnected within auth.refresh_interval");
        }
    }
    Ok(())
}

/// Where the tokens live, in words for messages. An embedded store must
/// exist already (the server creates `terrier.redb` at its first start)
/// unless `init`.
fn store_place(config: &ServerConfig, init: bool) -> anyhow::Result<String> {
    if config.store != "embedded" {
        return Ok(terrier_server::config::redact_url(&config.store));
    }
    let dir = std::path::absolute(&config.data_dir).unwrap_or_else(|_| config.data_dir.clone());
    let place = dir.join("tokens.json").display().to_string();
    if init || has_store(&dir) {
        return Ok(place);
    }
    anyhow::bail!(
        "no token store in {}: no terrierd has used this data dir, so a token made here would not reach your server.\n\
         Name the server's data dir or config: --data-dir DIR or --config FILE \
         (or TERRIERD_DATA_DIR / TERRIERD_CONFIG), as the server is started with.\n\
         To start a new store there before the server's first start: terrierd token create --init ...",
        dir.display()
    )
}

/// Does `dir` hold a server's store or a token file?
fn has_store(dir: &Path) -> bool {
    ["terrier.redb", "tokens.json"].iter().map(|f| dir.join(f)).any(|p: PathBuf| p.exists())
}

/// `token list`'s table: columns as wide as their widest cell, times in UTC.
fn table(tokens: &[TokenRecord]) -> String {
    let header = ["ID", "FOR", "DEVICES", "CREATED (UTC)", "EXPIRES (UTC)", "NOTE"].map(str::to_owned);
    let mut rows = vec![header];
    for t in tokens {
        let expires = t.expires_ms.map_or_else(|| "never".to_owned(), utc);
        let kind = match t.kind {
            Kind::Device => "registering",
            Kind::Visitor => "visiting",
        };
        rows.push([t.id.clone(), kind.into(), t.scope.to_string(), utc(t.created_ms), expires, t.note.clone()]);
    }
    let mut widths = [0; 6];
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in rows {
        let line: Vec<String> = row.iter().zip(widths).map(|(cell, w)| format!("{cell:<w$}")).collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// Unix ms as `2026-12-04 10:31:05` (UTC, to the second).
fn utc(ms: u64) -> String {
    use std::fmt::Write;
    let time = UNIX_EPOCH + Duration::from_millis(ms);
    let mut text = String::new();
    // Past year 9999 RFC 3339 has no way to write it (an older store may hold such a time).
    if write!(text, "{}", humantime::format_rfc3339_seconds(time)).is_err() {
        return format!("{ms} ms after 1970");
    }
    text.replace('T', " ").trim_end_matches('Z').to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_columns_line_up_whatever_the_widths() {
        let mut long = token::mint(Scope::Prefix("a-very-long-fleet-prefix-for-many-devices-".into()), "", 0).record;
        long.expires_ms = Some(1_000);
        let short = token::mint(Scope::Name("t".into()), "kitchen", 86_400_000).record;
        let text = table(&[long, short]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[1].find("1970-01-01 00:00:00"), lines[0].find("CREATED (UTC)"), "{text}");
        assert_eq!(lines[2].find("1970-01-02 00:00:00"), lines[0].find("CREATED (UTC)"), "{text}");
        assert_eq!(lines[1].find("1970-01-01 00:00:01"), lines[0].find("EXPIRES (UTC)"), "{text}");
        assert_eq!(lines[2].find("never"), lines[0].find("EXPIRES (UTC)"), "{text}");
        assert!(!text.contains("GMT"), "{text}");
    }

    #[test]
    fn times_past_the_year_9999_print_without_panicking() {
        assert_eq!(utc(0), "1970-01-01 00:00:00");
        assert_eq!(utc(u64::MAX / 1000), format!("{} ms after 1970", u64::MAX / 1000));
    }
}
