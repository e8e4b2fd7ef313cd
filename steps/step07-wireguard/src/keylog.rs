//! `--keylog FILE`: the keys with which Wireshark's WireGuard dissector
//! decrypts a capture of this interface's sessions (its `wg.keylog_file`
//! preference). For test sessions only: whoever reads the file reads the
//! traffic.
//!
//! The format is that of wireguard-tools' `contrib/extract-handshakes`,
//! which reads the same keys out of the Linux module: for each handshake
//! this side starts or answers, a heading and four indented lines,
//!
//! ```text
//! New handshake session:
//!   LOCAL_STATIC_PRIVATE_KEY = <base64>
//!   REMOTE_STATIC_PUBLIC_KEY = <base64>
//!   LOCAL_EPHEMERAL_PRIVATE_KEY = <base64>
//!   PRESHARED_KEY = <base64>
//! ```
//!
//! Wireshark reads each `TYPE = KEY` line (leading spaces ignored, the
//! heading skipped) and needs all four: the static keys to find whom an
//! initiation is for (by its mac1) and to open it, our ephemeral key to
//! follow the handshake to the session keys, and the pre-shared key, which
//! it ties to the ephemeral key on the line before it (so that line must
//! come first).
//!
//! Which peer a handshake is with is known where the message is made, in
//! the device; the ephemeral key is drawn there too, through the
//! [`Entropy`] it was given. So the key log stays in the I/O shell: the
//! device draws its ephemeral keys from a [`LoggedEntropy`], which keeps
//! the last few, and the shell shows [`KeyLog::sent`] each handshake
//! message it sends. The message says the rest: its ephemeral public key
//! picks the private key, and its mac1, keyed with the receiver's public
//! key, picks the peer.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use anyhow::{Context, bail};
use step04_crypto::crypto::{TAG_LEN, mac};
use step04_crypto::entropy::{Entropy, OsEntropy};
use step04_crypto::keys;
use step04_crypto::noise::same;
use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::{Zeroize, Zeroizing};

use crate::device::Device;
use crate::noise::mac1_key;
use crate::wire::{HandshakeMessage, Initiation, MessageType, Response};

/// Ephemeral keys drawn and not yet logged, at most: a handshake whose
/// message was never sent (it failed) leaves one behind.
const RECENT: usize = 8;

type Recent = Arc<Mutex<VecDeque<StaticSecret>>>;

/// The device's randomness: the kernel's, with each ephemeral private key
/// kept for the [`KeyLog`] until the message that carries its public key
/// is sent.
pub struct LoggedEntropy {
    recent: Recent,
}

impl Entropy for LoggedEntropy {
    fn ephemeral(&mut self) -> StaticSecret {
        let secret = OsEntropy.ephemeral();
        let mut recent = self.recent.lock().unwrap_or_else(PoisonError::into_inner);
        if recent.len() == RECENT {
            recent.pop_front();
        }
        recent.push_back(secret.clone());
        secret
    }

    fn index(&mut self) -> u32 {
        OsEntropy.index()
    }

    fn fill(&mut self, buf: &mut [u8]) {
        OsEntropy.fill(buf)
    }
}

/// An open key log.
pub struct KeyLog {
    file: File,
    path: PathBuf,
    recent: Recent,
}

// ANCHOR: open
impl KeyLog {
    /// Opens the key log at `path` for appending, and the randomness to
    /// give the device. A new file is created with mode 0600; an existing
    /// one is appended to only if it is a regular file, ours, and mode
    /// 0600. A symbolic link is never followed (`O_NOFOLLOW`), and every
    /// check is made on the open descriptor, so the file cannot be swapped
    /// between the check and the writes.
    pub fn create(path: &Path) -> anyhow::Result<(KeyLog, LoggedEntropy)> {
        // O_NONBLOCK: opening a FIFO for writing would otherwise wait for a
        // reader; with it, the open fails or the check below refuses it.
        let flags = nix::fcntl::OFlag::O_NOFOLLOW.bits() | nix::fcntl::OFlag::O_NONBLOCK.bits();
        let created = OpenOptions::new()
            .append(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(flags)
            .open(path);
        let file = match created {
            Ok(file) => {
                // The umask may have taken bits away; the file is ours.
                file.set_permissions(std::fs::Permissions::from_mode(0o600))
                    .with_context(|| format!("making key log {} mode 0600", path.display()))?;
                file
            }
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                match OpenOptions::new().append(true).custom_flags(flags).open(path) {
                    Ok(file) => file,
                    Err(e) if e.raw_os_error() == Some(nix::errno::Errno::ELOOP as i32) => bail!(
                        "key log {} is a symbolic link, which is not followed: give the file's own path",
                        path.display()
                    ),
                    Err(e) => return Err(e).with_context(|| format!("opening key log {}", path.display())),
                }
            }
            Err(e) => return Err(e).with_context(|| format!("creating key log {}", path.display())),
        };
        check(&file, path)?;
        let recent = Recent::default();
        let log = KeyLog {
            file,
            path: path.to_path_buf(),
            recent: Arc::clone(&recent),
        };
        Ok((log, LoggedEntropy { recent }))
    }
}

/// An existing key log is appended to only if it could have been made by
/// [`KeyLog::create`]: a regular file, ours, readable and writable by us
/// alone.
fn check(file: &File, path: &Path) -> anyhow::Result<()> {
    let meta = file
        .metadata()
        .with_context(|| format!("checking key log {}", path.display()))?;
    if !meta.is_file() {
        bail!("key log {} is not a regular file", path.display());
    }
    let us = nix::unistd::geteuid().as_raw();
    if meta.uid() != us {
        bail!(
            "key log {} belongs to uid {}, not to us (uid {us}): remove it, or give another path",
            path.display(),
            meta.uid()
        );
    }
    let mode = meta.mode() & 0o7777;
    if mode != 0o600 {
        bail!(
            "key log {} has mode {mode:04o}, not 0600: whoever reads a key log can decrypt its sessions; \
             `chmod 600` it (if others may have read it, those sessions are exposed), or give another path",
            path.display()
        );
    }
    Ok(())
}
// ANCHOR_END: open

// ANCHOR: sent
impl KeyLog {
    /// Called with each message the interface sends. For a handshake
    /// message (an initiation or a response) whose ephemeral key was
    /// drawn from our [`LoggedEntropy`], writes its session to the log.
    /// Anything else is ignored; a failed write is logged, and the
    /// interface goes on.
    pub fn sent(&mut self, device: &Device, message: &[u8]) {
        let Some((ephemeral, covered, mac1)) = handshake_parts(message) else {
            return;
        };
        let ephemeral = PublicKey::from(ephemeral);
        let secret = {
            let mut recent = self.recent.lock().unwrap_or_else(PoisonError::into_inner);
            let Some(at) = recent.iter().position(|s| PublicKey::from(s) == ephemeral) else {
                return;
            };
            recent.remove(at)
        };
        let Some(secret) = secret else { return };
        // The peer the message was made for: its mac1 is keyed with the
        // receiver's public key (whitepaper section 5.4.4).
        // (`peer_info` copies each peer's pre-shared key: wipe the copies.)
        let mut peer = None;
        for id in device.peer_ids() {
            let Some(mut info) = device.peer_info(id) else {
                continue;
            };
            if peer.is_none() && same(&mac(&mac1_key(&info.public), covered), &mac1) {
                peer = Some((info.public, Zeroizing::new(info.psk)));
            }
            info.psk.zeroize();
        }
        let (Some((public, psk)), Some(local)) = (peer, device.private_bytes()) else {
            return;
        };
        let local = Zeroizing::new(local);
        let ephemeral = Zeroizing::new(secret.to_bytes());
        let text = session_text(&local, public.as_bytes(), &ephemeral, &psk);
        if let Err(e) = self.file.write_all(text.as_bytes()) {
            log::warn!("writing key log {} failed: {e}", self.path.display());
        }
    }
}

/// A handshake message's ephemeral public key, the bytes its mac1
/// covers, and its mac1.
fn handshake_parts(message: &[u8]) -> Option<([u8; 32], &[u8], [u8; TAG_LEN])> {
    let (ephemeral, at) = match MessageType::of(message)? {
        MessageType::Initiation => {
            let m = Initiation::new_checked(message).ok()?;
            (m.ephemeral(), m.mac1_at())
        }
        MessageType::Response => {
            let m = Response::new_checked(message).ok()?;
            (m.ephemeral(), m.mac1_at())
        }
        MessageType::CookieReply | MessageType::Data => return None,
    };
    let mac1 = message.get(at..at + TAG_LEN)?.try_into().ok()?;
    Some((ephemeral, message.get(..at)?, mac1))
}

/// One handshake session's lines, in extract-handshakes' format, the
/// pre-shared key after the ephemeral key it belongs to.
pub fn session_text(
    local_static: &[u8; 32],
    remote_public: &[u8; 32],
    ephemeral: &[u8; 32],
    psk: &[u8; 32],
) -> Zeroizing<String> {
    let mut text = Zeroizing::new(String::with_capacity(240));
    text.push_str("New handshake session:\n");
    for (name, key) in [
        ("LOCAL_STATIC_PRIVATE_KEY", local_static),
        ("REMOTE_STATIC_PUBLIC_KEY", remote_public),
        ("LOCAL_EPHEMERAL_PRIVATE_KEY", ephemeral),
        ("PRESHARED_KEY", psk),
    ] {
        let key = Zeroizing::new(keys::encode(key));
        text.push_str("  ");
        text.push_str(name);
        text.push_str(" = ");
        text.push_str(&key);
        text.push('\n');
    }
    text
}
// ANCHOR_END: sent

/// The ephemeral private keys in a key log, in order: this format's
/// indented lines and step 04's unindented ones.
pub fn ephemerals(text: &str) -> Vec<[u8; 32]> {
    text.lines()
        .filter_map(|line| line.trim_start().strip_prefix("LOCAL_EPHEMERAL_PRIVATE_KEY = "))
        .filter_map(|key| keys::decode(key.trim()).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn folder(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("step07-keylog-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn mode(path: &Path) -> u32 {
        std::fs::symlink_metadata(path).unwrap().mode() & 0o7777
    }

    fn refused(path: &Path) -> String {
        match KeyLog::create(path) {
            Ok(_) => panic!("{} was accepted", path.display()),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn a_new_key_log_is_0600_and_an_old_one_must_be_ours_and_0600() {
        let dir = folder("open");
        let path = dir.join("keys");
        drop(KeyLog::create(&path).unwrap());
        assert_eq!(mode(&path), 0o600);
        // An existing one of ours, 0600: appended to.
        std::fs::write(&path, "earlier\n").unwrap();
        let (mut log, _) = KeyLog::create(&path).unwrap();
        log.file.write_all(b"later\n").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "earlier\nlater\n");
        // Others may read it: refused, and left as it was.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(refused(&path).contains("has mode 0644, not 0600"));
        assert_eq!(mode(&path), 0o644);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        // A symbolic link, even to a good key log, is not followed.
        let link = dir.join("link");
        std::os::unix::fs::symlink(&path, &link).unwrap();
        assert!(refused(&link).contains("is a symbolic link"));
        let dangling = dir.join("dangling");
        std::os::unix::fs::symlink(dir.join("nowhere"), &dangling).unwrap();
        assert!(refused(&dangling).contains("is a symbolic link"));
        assert!(!dir.join("nowhere").exists(), "nothing made through the link");
        // A directory, a FIFO (without waiting for a reader).
        assert!(refused(&dir).contains("key log"));
        let fifo = dir.join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        assert!(refused(&fifo).contains("key log"));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_key_log_of_another_user_is_refused() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("SKIPPED: only root can make a file owned by another user");
            return;
        }
        let dir = folder("owner");
        let path = dir.join("keys");
        drop(KeyLog::create(&path).unwrap());
        nix::unistd::chown(&path, Some(nix::unistd::Uid::from_raw(65534)), None).unwrap();
        assert!(refused(&path).contains("belongs to uid 65534, not to us (uid 0)"));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn the_ephemeral_keys_of_either_format_are_read() {
        let text = session_text(&[1; 32], &[2; 32], &[3; 32], &[4; 32]);
        assert_eq!(ephemerals(&text), vec![[3; 32]]);
        let step04 = format!("LOCAL_EPHEMERAL_PRIVATE_KEY = {}\n", keys::encode(&[5; 32]));
        assert_eq!(ephemerals(&step04), vec![[5; 32]]);
    }
}
