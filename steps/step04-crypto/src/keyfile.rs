//! Files that hold secrets: private key files, and the key log.
//!
//! A program that often runs as root reads a key from a path a user gave
//! it and writes ephemeral keys to another. Each file is opened once,
//! with `O_NOFOLLOW` (a symbolic link planted at the path is refused, not
//! followed to some other file), and then checked on the open descriptor
//! (`fstat`, not a second lookup by name, which another process could
//! change in between): a regular file, owned by the user we run as, that
//! nobody else may read or write. Key text read from a file lives in a
//! buffer that is wiped when dropped.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::fcntl::OFlag;
use x25519_dalek::StaticSecret;
use zeroize::Zeroizing;

use crate::keys::{self, KeyError};

/// The most a key file may hold: a key, a newline, and room for a
/// comment-free editor's habits. Anything longer is not a key file.
const MAX_KEY_FILE: u64 = 256;

/// Which kind of secret file, for messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    KeyFile,
    KeyLog,
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::KeyFile => "key file",
            Kind::KeyLog => "key log",
        })
    }
}

/// Why a secret file was refused. Each message names the file and says
/// what to do.
#[derive(Debug)]
pub enum Error {
    /// Opening (or creating) it failed.
    Open {
        kind: Kind,
        path: PathBuf,
        source: io::Error,
    },
    /// The path is a symbolic link.
    Symlink { kind: Kind, path: PathBuf },
    /// Something to create is there already.
    Exists { kind: Kind, path: PathBuf },
    /// A directory, a device, a FIFO...
    NotAFile { kind: Kind, path: PathBuf },
    /// Owned by another user.
    NotOurs {
        kind: Kind,
        path: PathBuf,
        owner: u32,
        us: u32,
    },
    /// Group or others may read or write it.
    Mode { kind: Kind, path: PathBuf, mode: u32 },
    /// Reading or writing it failed.
    Io {
        kind: Kind,
        path: PathBuf,
        source: io::Error,
    },
    /// A key file that does not hold a key.
    NotAKey { path: PathBuf, source: KeyError },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Open { kind, path, source } => write!(f, "opening {kind} {}: {source}", path.display()),
            Error::Symlink { kind, path } => write!(
                f,
                "{kind} {} is a symbolic link, which is not followed: give the path of the file itself",
                path.display()
            ),
            Error::Exists { kind, path } => write!(
                f,
                "{kind} {} exists already and is not overwritten: remove it first, or choose another name",
                path.display()
            ),
            Error::NotAFile { kind, path } => write!(f, "{kind} {} is not a regular file", path.display()),
            Error::NotOurs {
                kind,
                path,
                owner,
                us,
            } => write!(
                f,
                "{kind} {} belongs to user {owner}, and this program runs as user {us}: \
                 only a file of our own is trusted with a secret (`chown {us} {}` if it is yours)",
                path.display(),
                path.display()
            ),
            Error::Mode { kind, path, mode } => write!(
                f,
                "{kind} {} has mode {mode:03o}, so others may read it; run `chmod 600 {}` {}",
                path.display(),
                path.display(),
                match kind {
                    Kind::KeyFile => "(and make a new key if others did)",
                    Kind::KeyLog => "(whoever read it can decrypt the sessions it logged)",
                }
            ),
            Error::Io { kind, path, source } => write!(f, "{kind} {}: {source}", path.display()),
            Error::NotAKey { path, source } => write!(
                f,
                "{} does not hold a private key (make one with `genkey`): {source}",
                path.display()
            ),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Open { source, .. } | Error::Io { source, .. } => Some(source),
            Error::NotAKey { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// Open flags for every secret file: no symbolic links, and no blocking
/// on a FIFO planted at the path (the type check then refuses it).
fn flags() -> i32 {
    (OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK).bits()
}

fn open_error(kind: Kind, path: &Path, source: io::Error) -> Error {
    let path = path.to_path_buf();
    match source.raw_os_error() {
        Some(e) if e == nix::errno::Errno::ELOOP as i32 => Error::Symlink { kind, path },
        Some(e) if e == nix::errno::Errno::EEXIST as i32 => Error::Exists { kind, path },
        _ => Error::Open { kind, path, source },
    }
}

// ANCHOR: check
/// Checks an open secret file on its descriptor: a regular file, ours,
/// and closed to group and others.
pub fn check(kind: Kind, path: &Path, file: &File) -> Result<(), Error> {
    let meta = file.metadata().map_err(|source| Error::Io {
        kind,
        path: path.to_path_buf(),
        source,
    })?;
    if !meta.file_type().is_file() {
        return Err(Error::NotAFile {
            kind,
            path: path.to_path_buf(),
        });
    }
    let us = nix::unistd::geteuid().as_raw();
    if meta.uid() != us {
        return Err(Error::NotOurs {
            kind,
            path: path.to_path_buf(),
            owner: meta.uid(),
            us,
        });
    }
    let mode = meta.mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(Error::Mode {
            kind,
            path: path.to_path_buf(),
            mode,
        });
    }
    Ok(())
}
// ANCHOR_END: check

// ANCHOR: key_file
/// Reads a private key from `path`: a file of our own that nobody else
/// may read or write (a key others can read is no longer secret), opened
/// once and checked on its descriptor.
pub fn read_key_file(path: &Path) -> Result<StaticSecret, Error> {
    let kind = Kind::KeyFile;
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(flags())
        .open(path)
        .map_err(|e| open_error(kind, path, e))?;
    check(kind, path, &file)?;
    let mut text = Zeroizing::new(String::with_capacity(MAX_KEY_FILE as usize + 1));
    file.take(MAX_KEY_FILE + 1)
        .read_to_string(&mut text)
        .map_err(|source| Error::Io {
            kind,
            path: path.to_path_buf(),
            source,
        })?;
    keys::parse_secret(&text).map_err(|source| Error::NotAKey {
        path: path.to_path_buf(),
        source,
    })
}
// ANCHOR_END: key_file

/// Creates a new key file at `path` for writing: mode 0600 from the
/// start, never an existing file (`O_EXCL`, which also refuses a
/// symbolic link), checked on its descriptor like one read.
pub fn create_key_file(path: &Path) -> Result<File, Error> {
    let kind = Kind::KeyFile;
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(flags())
        .open(path)
        .map_err(|e| open_error(kind, path, e))?;
    check(kind, path, &file)?;
    Ok(file)
}

/// Opens the key log at `path` for appending, creating it with mode
/// 0600. An existing file is appended to only if it passes [`check`]:
/// ours, and closed to others.
pub fn open_key_log(path: &Path) -> Result<File, Error> {
    let kind = Kind::KeyLog;
    let file = OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .custom_flags(flags())
        .open(path)
        .map_err(|e| open_error(kind, path, e))?;
    check(kind, path, &file)?;
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;

    /// A fresh directory for one test, removed when dropped.
    struct Dir(tempfile::TempDir);

    impl Dir {
        fn new() -> Self {
            Self(tempfile::tempdir().unwrap())
        }
        fn join(&self, name: &str) -> PathBuf {
            self.0.path().join(name)
        }
    }

    fn write_key(path: &Path, mode: u32) {
        let mut f = File::create(path).unwrap();
        writeln!(f, "{}", keys::encode(&[5u8; 32])).unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn a_key_file_others_can_read_is_refused() {
        let dir = Dir::new();
        let path = dir.join("k.key");
        write_key(&path, 0o644);
        let err = read_key_file(&path).err().unwrap().to_string();
        assert!(err.contains("mode 644") && err.contains("chmod 600"), "{err}");
        for mode in [0o640, 0o604, 0o660, 0o602] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            assert!(
                matches!(read_key_file(&path), Err(Error::Mode { .. })),
                "{mode:o}"
            );
        }
        for mode in [0o600, 0o400] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            assert_eq!(read_key_file(&path).unwrap().to_bytes(), [5u8; 32], "{mode:o}");
        }
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::write(&path, "not a key\n").unwrap();
        assert!(read_key_file(&path).err().unwrap().to_string().contains("genkey"));
        std::fs::write(&path, "A".repeat(10_000)).unwrap();
        assert!(matches!(read_key_file(&path), Err(Error::NotAKey { .. })));
    }

    #[test]
    fn a_key_file_of_another_user_is_refused() {
        let dir = Dir::new();
        let path = if nix::unistd::geteuid().is_root() {
            // Root can give a file away: to nobody (65534).
            let path = dir.join("theirs.key");
            write_key(&path, 0o600);
            std::os::unix::fs::chown(&path, Some(65534), None).unwrap();
            path
        } else {
            // Anyone else reads a file of root's.
            PathBuf::from("/etc/passwd")
        };
        let err = read_key_file(&path).err().unwrap();
        assert!(matches!(err, Error::NotOurs { .. }), "{err}");
        assert!(err.to_string().contains("chown"), "{err}");
    }

    #[test]
    fn a_symbolic_link_to_a_key_is_not_followed() {
        let dir = Dir::new();
        let key = dir.join("real.key");
        write_key(&key, 0o600);
        let link = dir.join("link.key");
        std::os::unix::fs::symlink(&key, &link).unwrap();
        assert!(matches!(read_key_file(&link), Err(Error::Symlink { .. })));
        assert!(read_key_file(&key).is_ok());
    }

    #[test]
    fn only_regular_files_are_keys() {
        let dir = Dir::new();
        let sub = dir.join("sub");
        std::fs::create_dir(&sub).unwrap();
        std::fs::set_permissions(&sub, std::fs::Permissions::from_mode(0o700)).unwrap();
        let err = read_key_file(&sub).err().unwrap();
        assert!(matches!(err, Error::NotAFile { .. } | Error::Io { .. }), "{err}");
        // A FIFO would block a plain open until a writer came.
        let fifo = dir.join("fifo");
        assert!(
            std::process::Command::new("mkfifo")
                .arg("-m")
                .arg("600")
                .arg(&fifo)
                .status()
                .unwrap()
                .success()
        );
        assert!(matches!(read_key_file(&fifo), Err(Error::NotAFile { .. })));
        assert!(matches!(
            open_key_log(&fifo),
            Err(Error::Open { .. } | Error::NotAFile { .. })
        ));
    }

    #[test]
    fn a_new_key_file_is_0600_and_never_an_old_one() {
        let dir = Dir::new();
        let path = dir.join("new.key");
        let mut f = create_key_file(&path).unwrap();
        writeln!(f, "{}", keys::encode(&[6u8; 32])).unwrap();
        drop(f);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(read_key_file(&path).unwrap().to_bytes(), [6u8; 32]);
        // Not twice, and not through a link (even one to nowhere).
        assert!(matches!(create_key_file(&path), Err(Error::Exists { .. })));
        let link = dir.join("dangling.key");
        std::os::unix::fs::symlink(dir.join("elsewhere"), &link).unwrap();
        assert!(matches!(create_key_file(&link), Err(Error::Exists { .. })));
        assert!(!dir.join("elsewhere").exists());
    }

    #[test]
    fn a_key_log_is_ours_and_private_or_refused() {
        let dir = Dir::new();
        let path = dir.join("a.keylog");
        let mut f = open_key_log(&path).unwrap();
        f.write_all(b"one\n").unwrap();
        drop(f);
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        // Appended to, not truncated.
        open_key_log(&path).unwrap().write_all(b"two\n").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "one\ntwo\n");
        // An existing file others can read is refused, and left alone.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            open_key_log(&path),
            Err(Error::Mode { mode: 0o644, .. })
        ));
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "one\ntwo\n");
        // A link is not followed, even to a file of ours.
        let link = dir.join("link.keylog");
        std::os::unix::fs::symlink(&path, &link).unwrap();
        assert!(matches!(open_key_log(&link), Err(Error::Symlink { .. })));
    }
}
