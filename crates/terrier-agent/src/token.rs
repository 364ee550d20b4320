//! The device credential (`--token`, `--token-file`, `TERRIER_TOKEN`), sent
//! as `Authorization: Bearer` on every control and data socket. Kept in a
//! type whose `Debug` prints `***`, so it never reaches a log.

use std::path::Path;
use std::sync::Arc;

/// A device token.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(Arc<str>);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(***)")
    }
}

impl Token {
    /// A token given on the command line or in the environment; `what`
    /// names the source for the error message (never the value).
    pub fn new(raw: &str, what: &str) -> Result<Self, String> {
        let token = raw.trim();
        if token.is_empty() {
            return Err(format!("{what}: the token is empty"));
        }
        // It travels in an HTTP header: visible ASCII only.
        if !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(format!("{what}: the token must be printable ASCII without spaces"));
        }
        Ok(Self(token.into()))
    }

    /// Reads a token from a file (surrounding whitespace and newline ignored).
    pub fn from_file(path: &Path) -> Result<Self, String> {
        let raw = std::fs::read_to_string(path).map_err(|e| format!("--token-file {}: {e}", path.display()))?;
        Self::new(&raw, &format!("--token-file {}", path.display()))
    }

    /// The `Authorization` header value.
    pub fn bearer(&self) -> http::HeaderValue {
        let mut value =
            http::HeaderValue::from_str(&format!("Bearer {}", self.0)).expect("checked: visible ASCII only");
        value.set_sensitive(true);
        value
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_the_token_and_files_are_trimmed() {
        let dir = std::env::temp_dir().join(format!("terrier-token-{}", std::process::id()));
        std::fs::write(&dir, "s3cr3t-value\n").unwrap();
        let token = Token::from_file(&dir).unwrap();
        std::fs::remove_file(&dir).unwrap();
        assert!(!format!("{token:?}").contains("s3cr3t"));
        assert_eq!(token.bearer().to_str().unwrap(), "Bearer s3cr3t-value");
        assert!(Token::new("two words", "--token").unwrap_err().contains("--token"));
        assert!(Token::new("  \n", "TERRIER_TOKEN").is_err());
    }
}
