//! Every example under `config/valid` loads and validates; every one under
//! `config/invalid` is rejected with an error. Keeps the examples (and the
//! documentation that shows them) honest.

use std::path::PathBuf;

use terrier_server::ServerConfig;

fn examples(kind: &str) -> Vec<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../config").join(kind);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no examples in {}", dir.display());
    files
}

#[test]
fn valid_examples_load() {
    for path in examples("valid") {
        let config = ServerConfig::from_toml_file(&path).unwrap_or_else(|e| panic!("{}: {e:#}", path.display()));
        config.validate().unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }
}

#[test]
fn invalid_examples_are_rejected() {
    for path in examples("invalid") {
        let loaded = ServerConfig::from_toml_file(&path).map_err(|e| format!("{e:#}"));
        let checked = loaded.and_then(|c| c.validate().map_err(|e| e.to_string()));
        assert!(checked.is_err(), "{} was accepted", path.display());
    }
}

#[test]
fn documented_keys_match_the_config() {
    // Every key of the full example appears in docs/CONFIG.md.
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/CONFIG.md")).unwrap();
    let full =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../config/valid/terrierd.toml")).unwrap();
    for line in full.lines() {
        let line = line.trim_start_matches("# ").trim();
        if let Some((key, _)) = line.split_once(" = ") {
            if !key.contains(' ') {
                assert!(doc.contains(&format!("`{key}`")), "docs/CONFIG.md does not document `{key}`");
            }
        }
    }
}
