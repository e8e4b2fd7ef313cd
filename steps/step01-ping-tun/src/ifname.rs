//! Interface names, checked before they go anywhere: into a TUN device's
//! creation, into an `ip` command, into an nftables script, into a sysctl
//! path. A name is written into the script of a root process
//! (`oifname "tun0" accept`); one with a quote, a space or a newline in it
//! would write rules of its own, and one with a slash would point a
//! sysctl path somewhere else.
//!
//! The kernel allows almost any bytes in a name (`dev_valid_name` refuses
//! only "", ".", "..", '/', ':' and white space, in at most 15 bytes:
//! IFNAMSIZ 16 with the NUL). We allow what names are made of in practice
//! and what no script or path can misread: letters, digits, `_`, `.` and
//! `-`, 1 to 15 bytes, not `.` or `..`, and not starting with `-` (which
//! `ip` would read as an option).

use std::fmt;

/// The longest interface name, in bytes (IFNAMSIZ less the NUL).
pub const MAX_LEN: usize = 15;

/// Why a string is not an interface name we accept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadName(pub String);

impl fmt::Display for BadName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "`{}` is not an interface name: use 1 to {MAX_LEN} letters, digits, `_`, `.` or `-` \
             (not starting with `-`), for example tun0",
            self.0.escape_debug()
        )
    }
}

impl std::error::Error for BadName {}

/// Checks that `name` is an interface name we accept.
pub fn check(name: &str) -> Result<(), BadName> {
    let ok = (1..=MAX_LEN).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
        && !name.starts_with('-')
        && name != "."
        && name != "..";
    if ok {
        Ok(())
    } else {
        Err(BadName(name.to_string()))
    }
}

/// For clap: `#[arg(long, value_parser = ifname::parse)]`, so a bad name
/// is a usage error (exit 2) that names the flag.
pub fn parse(name: &str) -> Result<String, BadName> {
    check(name).map(|()| name.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_in_use_are_accepted() {
        for name in ["tun0", "wg-vpn", "eth0.100", "veth_a1", "a", "abcdefghijklmno"] {
            assert_eq!(check(name), Ok(()), "{name}");
        }
    }

    #[test]
    fn names_a_script_or_a_path_could_misread_are_refused() {
        for name in [
            "",
            "abcdefghijklmnop",
            "tun0\" accept",
            "tun0\n",
            "a b",
            "../etc",
            "x/y",
            "eth0:1",
            ".",
            "..",
            "-f",
            "tün0",
            "tun;0",
            "tun0}",
        ] {
            assert!(check(name).is_err(), "{name:?}");
        }
        assert_eq!(
            check("a\"b").unwrap_err().to_string(),
            "`a\\\"b` is not an interface name: use 1 to 15 letters, digits, `_`, `.` or `-` \
             (not starting with `-`), for example tun0"
        );
    }
}
