//! Turns serde's "unknown field" message into one an operator can act on:
//! the misspelt key and the nearest known one ("did you mean ...?"), and
//! the whole list only when nothing is close.

/// `message` (from serde/toml) reworded when it is about an unknown key;
/// any other message is returned as it is.
pub fn explain(message: &str) -> String {
    let Some((key, known)) = unknown_field(message) else { return message.to_owned() };
    match terrier_transport::suggest::nearest(key, &known) {
        Some(close) => format!("unknown key `{key}` (did you mean `{close}`?)"),
        None if known.is_empty() => format!("unknown key `{key}`"),
        None => format!("unknown key `{key}`; the keys here are {}", known.join(", ")),
    }
}

/// The unknown key and the expected ones, from serde's
/// "unknown field `x`, expected one of `a`, `b`" (or "expected `a`").
fn unknown_field(message: &str) -> Option<(&str, Vec<&str>)> {
    let rest = message.trim().strip_prefix("unknown field `")?;
    let (key, rest) = rest.split_once('`')?;
    let list = rest.split_once("expected").map_or("", |(_, l)| l.trim_start_matches(" one of"));
    let known = list.split(',').map(|k| k.trim().trim_matches('`')).filter(|k| !k.is_empty()).collect();
    Some((key, known))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn misspelt_and_cut_short_keys_get_the_nearest_one() {
        let message = "unknown field `listen_adress`, expected one of `listen`, `domain`, `tcp_bind`";
        assert_eq!(explain(message), "unknown key `listen_adress` (did you mean `listen`?)");
        let message = "unknown field `max_pending`, expected one of `heartbeat_interval`, `max_pending_streams`";
        assert_eq!(explain(message), "unknown key `max_pending` (did you mean `max_pending_streams`?)");
        assert_eq!(
            explain("unknown field `domian`, expected `domain`"),
            "unknown key `domian` (did you mean `domain`?)"
        );
        let far = explain("unknown field `colour`, expected one of `listen`, `domain`");
        assert_eq!(far, "unknown key `colour`; the keys here are listen, domain");
        assert_eq!(explain("invalid type: string \"x\", expected u16"), "invalid type: string \"x\", expected u16");
    }
}
