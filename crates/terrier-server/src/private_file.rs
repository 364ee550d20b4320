//! Files only their owner may read (tokens, keys): created with mode 0600
//! on Unix from the start, never chmod-ed afterwards.

use std::io::Write;
use std::path::Path;

/// Writes `bytes` to `path` (replacing it), readable only by its owner.
pub fn write(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut file = open(path, false)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// Opens `path` for writing with mode 0600; `create_new` fails if it exists.
pub fn open(path: &Path, create_new: bool) -> std::io::Result<std::fs::File> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true);
    if create_new {
        options.create_new(true);
    } else {
        options.create(true).truncate(true);
    }
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)
}
