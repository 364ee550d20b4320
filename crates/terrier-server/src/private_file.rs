//! Files and folders only their owner may use (tokens, keys, the store):
//! created with mode 0600 (files) or 0700 (folders) on Unix from the start,
//! so there is no moment when another user could open them.

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

/// Opens a file that terrierd alone owns (the store) for reading and
/// writing, creating it with mode 0600. An existing one with a looser mode
/// is narrowed to 0600: it may predate this rule, and it holds secrets.
pub fn open_owned(path: &Path) -> std::io::Result<std::fs::File> {
    let mut options = std::fs::OpenOptions::new();
    options.read(true).write(true).create(true).truncate(false);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let file = options.open(path)?;
    #[cfg(unix)]
    narrow(&file, path);
    Ok(file)
}

/// Creates `dir` and any missing parents with mode 0700. An existing folder
/// keeps its mode, with a warning if other users may enter it: it may be
/// one the operator shares with other software (a data dir of `/var/lib`),
/// where a chmod would break them, and each secret file in it is 0600.
pub fn create_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)?;
    #[cfg(unix)]
    warn_if_shared(dir);
    Ok(())
}

#[cfg(unix)]
fn narrow(file: &std::fs::File, path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let Ok(mode) = file.metadata().map(|m| m.permissions().mode() & 0o777) else { return };
    if mode & 0o077 == 0 {
        return;
    }
    match file.set_permissions(std::fs::Permissions::from_mode(0o600)) {
        Ok(()) => tracing::warn!(
            file = %path.display(),
            was = format!("{mode:o}"),
            "file was readable by other users; narrowed it to 0600 (it holds secrets)"
        ),
        Err(e) => tracing::warn!(
            file = %path.display(),
            mode = format!("{mode:o}"),
            error = %e,
            "file is readable by other users and could not be narrowed; chmod 600 it"
        ),
    }
}

#[cfg(unix)]
fn warn_if_shared(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let Ok(mode) = std::fs::metadata(dir).map(|m| m.permissions().mode() & 0o777) else { return };
    if mode & 0o077 != 0 {
        tracing::warn!(
            dir = %dir.display(),
            mode = format!("{mode:o}"),
            "folder with terrierd's secrets is open to other users; chmod 700 it unless it is shared on purpose"
        );
    }
}

#[cfg(all(test, unix))]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn new_folders_are_0700_and_existing_ones_keep_their_mode() {
        let tmp = tempfile::tempdir().unwrap();
        let nested = tmp.path().join("a/b");
        create_dir(&nested).unwrap();
        assert_eq!((mode(&tmp.path().join("a")), mode(&nested)), (0o700, 0o700));
        std::fs::set_permissions(&nested, std::fs::Permissions::from_mode(0o750)).unwrap();
        create_dir(&nested).unwrap();
        assert_eq!(mode(&nested), 0o750, "an existing folder is the operator's to change");
    }

    #[test]
    fn owned_files_are_created_0600_and_narrowed_to_it() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("store");
        open_owned(&path).unwrap().write_all(b"kept").unwrap();
        assert_eq!(mode(&path), 0o600);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        drop(open_owned(&path).unwrap());
        assert_eq!(mode(&path), 0o600);
        assert_eq!(std::fs::read(&path).unwrap(), b"kept", "opening does not truncate");
    }
}
