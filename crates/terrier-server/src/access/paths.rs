//! Per-path rules of a device: which requests are closed, open to anyone,
//! or need which credentials, chosen by path prefix and method before
//! anything reaches the device.
//!
//! A rule only protects what the device reads as the same path. Servers
//! disagree on `/a/../b`, `//b`, `/a;x`, `\` and `%2F`, so for a device
//! with path rules such paths are refused (400) rather than guessed; `%XX`
//! of an unreserved character is decoded (every server does), and matching
//! ignores ASCII case (many embedded servers do), so `/ADMIN` and
//! `/%61dmin` meet the rule for `/admin`.

use serde::{Deserialize, Serialize};

/// One rule as written in `[[access."<name>".paths]]`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PathRule {
    /// The path it covers: `/admin` covers `/admin` and everything under
    /// it (not `/administrator`); `/` covers every path.
    pub prefix: String,
    /// Methods it covers (`["GET", "POST"]`; `GET` covers `HEAD` too);
    /// empty: every method.
    #[serde(default)]
    pub methods: Vec<String>,
    /// Refuse every request it covers (403).
    #[serde(default)]
    pub deny: bool,
    /// Credentials accepted on it: `"basic"`, `"bearer"`; an empty list
    /// lets anyone in. Unset: as the device's other paths.
    #[serde(default)]
    pub accept: Option<Vec<Credential>>,
}

/// A kind of credential a visitor can show.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Credential {
    /// A user and password of the device's `basic_auth`.
    Basic,
    /// A token of the device's `bearer_tokens` (`Authorization: Bearer`).
    Bearer,
}

/// What a rule does to the requests it covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Refused (403).
    Deny,
    /// Let in with one of these credentials (none needed when both are false).
    Accept(Accepted),
}

/// The credentials a request may show; neither: anyone may enter.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Accepted {
    /// Basic auth.
    pub basic: bool,
    /// A bearer token.
    pub bearer: bool,
}

impl Accepted {
    /// Does this let anyone in?
    pub fn anyone(self) -> bool {
        !self.basic && !self.bearer
    }
}

/// A rule checked and lowercased.
#[derive(Debug)]
pub struct Compiled {
    /// The prefix, lowercase, without a trailing `/` unless it is `/`.
    prefix: String,
    /// Methods covered; empty: all.
    methods: Vec<http::Method>,
    /// What it does.
    action: Action,
}

impl Compiled {
    /// Checks `rule` of device `name`; `has` says which credentials the
    /// device's other paths take, what a rule without `accept` takes too. A
    /// rule accepting `basic` without users would let nobody in, which is
    /// what `deny` is for; `bearer` is always possible (the token store's
    /// visitor tokens).
    pub fn new(name: &str, rule: &PathRule, has: Accepted) -> Result<Self, String> {
        let at = || format!("access.\"{name}\".paths {:?}", rule.prefix);
        // A character a request's path only holds as `%XX` (a space, `?`,
        // `#`, `<`) would make a rule that never matches.
        let plain = rule.prefix.bytes().all(|b| is_unreserved(b) || b"/!$&'()*+,=:@".contains(&b));
        let normal = normal(&rule.prefix).filter(|p| plain && p != "*");
        let Some(prefix) = normal else {
            return Err(format!(
                "{}: a prefix starts with / and has only letters, digits, / and -._~!$&'()*+,=:@, \
                 no // or . and .. segments",
                at()
            ));
        };
        let mut methods = rule
            .methods
            .iter()
            .map(|m| match http::Method::from_bytes(m.as_bytes()) {
                Ok(method) if m.bytes().all(|b| b.is_ascii_uppercase()) => Ok(method),
                _ => Err(format!("{}: method {m:?} is not an uppercase HTTP method", at())),
            })
            .collect::<Result<Vec<_>, _>>()?;
        // Servers answer HEAD with their GET handler: it runs all the same.
        if methods.contains(&http::Method::GET) && !methods.contains(&http::Method::HEAD) {
            methods.push(http::Method::HEAD);
        }
        let action = match (&rule.accept, rule.deny) {
            (Some(_), true) => return Err(format!("{}: deny and accept cannot be combined", at())),
            (_, true) => Action::Deny,
            (None, false) => Action::Accept(has),
            (Some(kinds), false) => {
                let accepted =
                    Accepted { basic: kinds.contains(&Credential::Basic), bearer: kinds.contains(&Credential::Bearer) };
                // Bearer paths may rely on the store's visitor tokens alone.
                if accepted.basic && !has.basic {
                    return Err(format!("{}: accepts a credential the device has none of", at()));
                }
                Action::Accept(accepted)
            }
        };
        let prefix = if prefix.len() > 1 { prefix.trim_end_matches('/').to_owned() } else { prefix };
        Ok(Self { prefix, methods, action })
    }

    /// Does this rule cover `method` on `path` (from [`normal`])? The
    /// method in any case: some servers (Werkzeug) read `post` as `POST`.
    fn covers(&self, method: &http::Method, path: &str) -> bool {
        let under = self.prefix == "/"
            || path.strip_prefix(&self.prefix).is_some_and(|rest| rest.is_empty() || rest.starts_with('/'));
        under
            && (self.methods.is_empty()
                || self.methods.iter().any(|m| m.as_str().eq_ignore_ascii_case(method.as_str())))
    }
}

/// The action of the rule covering `method` on `path` (from [`normal`]):
/// the longest prefix wins, then the first listed. `None`: no rule covers it.
pub fn action(rules: &[Compiled], method: &http::Method, path: &str) -> Option<Action> {
    let mut best: Option<&Compiled> = None;
    for rule in rules.iter().filter(|r| r.covers(method, path)) {
        if best.is_none_or(|b| rule.prefix.len() > b.prefix.len()) {
            best = Some(rule);
        }
    }
    best.map(|rule| rule.action)
}

/// `path` as rules see it: `%XX` of an unreserved character decoded and
/// ASCII lowercased. `None` when it is not in a form every server reads
/// alike: dot segments, empty segments (`//`, a trailing `/` excepted),
/// `\`, `;`, an encoded `/`, `\`, `;` or `%`, a control byte, a bad
/// `%XX`, or `%XX` that decode to bytes that are not UTF-8 (overlong
/// `%c0%ae` is `.` to some decoders). `*` (`OPTIONS *`) is kept as it is.
pub fn normal(path: &str) -> Option<String> {
    if path == "*" {
        return Some("*".into());
    }
    if !path.starts_with('/') {
        return None;
    }
    let bytes = path.as_bytes();
    let mut out = String::with_capacity(path.len());
    let mut i = 0;
    let mut non_ascii = false;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%' {
            let hex = path.get(i + 1..i + 3)?;
            let decoded = u8::from_str_radix(hex, 16).ok()?;
            non_ascii |= !decoded.is_ascii();
            if is_unreserved(decoded) {
                out.push(char::from(decoded.to_ascii_lowercase()));
            } else if matches!(decoded, b'/' | b'\\' | b';' | b'%') || decoded.is_ascii_control() {
                return None;
            } else {
                out.push('%');
                out.extend(hex.chars().map(|c| c.to_ascii_lowercase()));
            }
            i += 3;
            continue;
        }
        if matches!(b, b'\\' | b';') || b.is_ascii_control() || !b.is_ascii() {
            return None;
        }
        out.push(char::from(b.to_ascii_lowercase()));
        i += 1;
    }
    if non_ascii && !decodes_to_utf8(&out) {
        return None;
    }
    let mut segments = out.split('/').skip(1).peekable();
    while let Some(segment) = segments.next() {
        // An empty segment is `//`, unless it is the last (a trailing `/`).
        if matches!(segment, "." | "..") || (segment.is_empty() && segments.peek().is_some()) {
            return None;
        }
    }
    Some(out)
}

/// Is `path` (from [`normal`]: every `%` starts a valid `%XX`) UTF-8 once
/// its `%XX` are decoded?
fn decodes_to_utf8(path: &str) -> bool {
    let mut decoded = Vec::with_capacity(path.len());
    let mut rest = path.as_bytes();
    while let [b, tail @ ..] = rest {
        match (b, tail) {
            (b'%', [hi, lo, tail @ ..]) => {
                let hex = [*hi, *lo];
                decoded.extend(std::str::from_utf8(&hex).ok().and_then(|h| u8::from_str_radix(h, 16).ok()));
                rest = tail;
            }
            _ => {
                decoded.push(*b);
                rest = tail;
            }
        }
    }
    std::str::from_utf8(&decoded).is_ok()
}

/// RFC 3986 §2.3: characters whose `%XX` form means the same.
fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_normalized_or_refused() {
        for (raw, seen) in [
            ("/", "/"),
            ("/Admin/Users", "/admin/users"),
            ("/%61dmin", "/admin"),
            ("/%2E%2Ehidden", "/..hidden"),
            ("/a%20b", "/a%20b"),
            ("/caf%C3%A9", "/caf%c3%a9"),
            ("/api/", "/api/"),
            ("*", "*"),
        ] {
            assert_eq!(normal(raw).as_deref(), Some(seen), "{raw}");
        }
        for unclear in [
            "/a/../admin",
            "/a/./b",
            "/%2e%2e/admin",
            "//admin",
            "/a//b",
            "/admin%2fx",
            "/admin%2Fx",
            "/admin;x",
            "/admin%3bx",
            "/a\\b",
            "/a%5cb",
            "/a%00",
            "/a%zz",
            "/a%2",
            "/a%25",
            "/%c0%ae%c0%ae/admin",
            "/%e0%80%ae",
            "/%ff",
            "/%c3",
            "admin",
            "/é",
            "/..",
            "/.",
        ] {
            assert_eq!(normal(unclear), None, "{unclear}");
        }
    }

    fn compiled(prefix: &str, methods: &[&str], deny: bool, accept: Option<Vec<Credential>>) -> Compiled {
        let rule =
            PathRule { prefix: prefix.into(), methods: methods.iter().map(|m| (*m).into()).collect(), deny, accept };
        Compiled::new("cam", &rule, Accepted { basic: true, bearer: true }).unwrap()
    }

    #[test]
    fn the_longest_prefix_covering_the_method_wins() {
        let rules = [
            compiled("/", &[], false, None),
            compiled("/api/", &[], false, Some(vec![Credential::Bearer])),
            compiled("/api/public", &["GET"], false, Some(vec![])),
            compiled("/admin", &[], true, None),
        ];
        let get = http::Method::GET;
        let bearer = Action::Accept(Accepted { basic: false, bearer: true });
        assert_eq!(action(&rules, &get, "/admin"), Some(Action::Deny));
        assert_eq!(action(&rules, &get, "/admin/users"), Some(Action::Deny));
        assert_eq!(
            action(&rules, &get, "/administrator"),
            Some(Action::Accept(Accepted { basic: true, bearer: true }))
        );
        assert_eq!(action(&rules, &get, "/api/x"), Some(bearer));
        assert_eq!(action(&rules, &get, "/api"), Some(bearer), "/api/ covers /api itself");
        assert_eq!(action(&rules, &get, "/api/public/a"), Some(Action::Accept(Accepted::default())));
        assert_eq!(action(&rules, &http::Method::POST, "/api/public/a"), Some(bearer), "GET only");
        let open = Some(Action::Accept(Accepted::default()));
        assert_eq!(action(&rules, &http::Method::HEAD, "/api/public/a"), open, "and HEAD");
        let lowercase = http::Method::from_bytes(b"get").unwrap();
        assert_eq!(action(&rules, &lowercase, "/api/public/a"), Some(Action::Accept(Accepted::default())), "any case");
        assert_eq!(action(&rules[1..], &get, "/other"), None);
    }

    #[test]
    fn bad_rules_are_config_errors() {
        let has = Accepted { basic: true, bearer: false };
        let rule = |prefix: &str| PathRule { prefix: prefix.into(), ..Default::default() };
        for bad in ["admin", "/a/../b", "//a", "/a;b", "/%61", "*", "/a b", "/a?b", "/a#b", "/a<b", "/a\"b"] {
            assert!(Compiled::new("cam", &rule(bad), has).is_err(), "{bad}");
        }
        let lowercase_method = PathRule { methods: vec!["get".into()], ..rule("/a") };
        assert!(Compiled::new("cam", &lowercase_method, has).unwrap_err().contains("method"));
        let both = PathRule { deny: true, accept: Some(vec![]), ..rule("/a") };
        assert!(Compiled::new("cam", &both, has).unwrap_err().contains("deny and accept"));
        let no_users = PathRule { accept: Some(vec![Credential::Basic]), ..rule("/a") };
        let tokens_only = Accepted { basic: false, bearer: true };
        assert!(Compiled::new("cam", &no_users, tokens_only).unwrap_err().contains("none of"));
    }
}
