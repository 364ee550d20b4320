//! The nearest known name to a misspelt one, for "did you mean ...?" in
//! configuration errors of terrierd and the agent alike.

/// The known key closest to `key`: one that contains it or starts it (a
/// key cut short or run on, `max_pending`, `listen_adress`), else one
/// within a third of its length in edits; the fewest edits first.
pub fn nearest<'a>(key: &str, known: &[&'a str]) -> Option<&'a str> {
    let key = key.to_ascii_lowercase();
    let within = key.chars().count() / 3 + 1;
    let part = |k: &str| k.contains(key.as_str()) || (k.len() >= 4 && key.starts_with(k));
    known
        .iter()
        .map(|k| (edits(&key, k), part(k), *k))
        .filter(|(d, part, _)| *part || *d <= within)
        .min_by_key(|(d, part, _)| (!part, *d))
        .map(|(_, _, k)| k)
}

/// Levenshtein distance between `a` and `b`, in characters.
fn edits(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitute = diagonal + usize::from(ca != *cb);
            diagonal = row[j + 1];
            row[j + 1] = substitute.min(row[j] + 1).min(row[j + 1] + 1);
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cut_short_run_on_and_misspelt_keys_find_theirs() {
        assert_eq!(nearest("max_pending", &["heartbeat_interval", "max_pending_streams"]), Some("max_pending_streams"));
        assert_eq!(nearest("listen_adress", &["listen", "domain"]), Some("listen"));
        assert_eq!(nearest("htp", &["http", "tcp", "name"]), Some("http"));
        assert_eq!(nearest("zzzzzz", &["http", "tcp"]), None);
    }

    #[test]
    fn edit_distance() {
        assert_eq!(edits("kitten", "sitting"), 3);
        assert_eq!(edits("", "abc"), 3);
        assert_eq!(edits("same", "same"), 0);
    }
}
