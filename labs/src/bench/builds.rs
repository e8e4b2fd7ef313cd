//! How each contestant was built: the compiler, the CPU its code was
//! compiled for, the profile and the version. Two benchmark files compare
//! honestly only when these match: the same step built for another CPU
//! (step 04's cipher runs about twice as fast with AVX2 compiled in, see
//! `.cargo/config.toml`), by another rustc, or unoptimized, is another
//! program.
//!
//! What a program's file records is read from the file itself, so the
//! answer is about the program that ran: a Rust binary keeps the version
//! of the rustc that built it in its ELF `.comment` section, and a Go
//! binary keeps its Go version and build settings (GOAMD64, the CPU level
//! it was compiled for) in its build information. What a Rust binary does
//! not record, the CPU its code targets, is known for the steps because
//! tunlab builds them with its own flags (see `labs/build.rs`).

use std::path::Path;

/// How one contestant was built; `None` where the program does not say.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Build {
    /// Its own version: `v0.0.20220316` for wireguard-go, `0.7.1` for
    /// boringtun, the workspace's for the steps, the kernel's for veth.
    pub version: Option<String>,
    /// The compiler, as the binary records it: `rustc 1.95.0 (59807616e
    /// 2026-04-14)`, `go1.19.8`.
    pub compiler: Option<String>,
    /// The CPU the code was compiled for: `native (znver4)` (rustc's `-C
    /// target-cpu`), or Go's `GOAMD64=v1`.
    pub target_cpu: Option<String>,
    /// The cargo profile: `release`, `dev`.
    pub profile: Option<String>,
}

impl Build {
    /// One line for the markdown table's notes: `rustc 1.95.0 (...),
    /// target CPU native (znver4), release profile`.
    pub fn line(&self) -> String {
        if self.compiler.is_none() && self.target_cpu.is_none() && self.profile.is_none() {
            // Not a program (the kernel's veth), or one not found.
            return match &self.version {
                Some(v) => format!("version {v}"),
                None => "not known".into(),
            };
        }
        let mut parts = Vec::new();
        if let Some(v) = &self.version {
            parts.push(format!("version {v}"));
        }
        if let Some(c) = &self.compiler {
            parts.push(format!("built by {c}"));
        }
        parts.push(match &self.target_cpu {
            Some(cpu) => format!("target CPU {cpu}"),
            None => "target CPU not recorded".into(),
        });
        if let Some(p) = &self.profile {
            parts.push(format!("{p} profile"));
        }
        parts.join(", ")
    }
}

/// The CPU the step binaries are compiled for: the `-C target-cpu` that
/// was in effect when tunlab was built (the steps are built by tunlab,
/// with the same flags), with `native` resolved to the CPU it meant.
pub const STEP_TARGET_CPU: &str = env!("TUNLAB_TARGET_CPU");
/// All the flags cargo gave rustc for tunlab (and so for the steps).
pub const STEP_RUSTFLAGS: &str = env!("TUNLAB_RUSTFLAGS");
/// The rustc that built tunlab: `rustc 1.95.0 (59807616e 2026-04-14)`.
pub const RUSTC: &str = env!("TUNLAB_RUSTC_VERSION");

/// A step's binary, built by tunlab with `profile`.
pub fn of_step(binary: &Path, profile: &str) -> Build {
    Build {
        version: Some(env!("CARGO_PKG_VERSION").into()),
        compiler: rustc_of(binary),
        target_cpu: Some(STEP_TARGET_CPU.into()),
        profile: Some(profile.into()),
    }
}

/// wireguard-go: Go records its version and build settings.
pub fn of_go_program(binary: &Path, version: Option<String>) -> Build {
    let info = std::fs::read(binary).ok().and_then(|b| go_build_info(&b));
    Build {
        version,
        compiler: info.as_ref().map(|i| i.go.clone()),
        target_cpu: info.and_then(|i| i.settings.into_iter().find(|s| s.starts_with("GOAMD64="))),
        profile: None,
    }
}

/// A Rust program tunlab did not build (boringtun-cli): the rustc from
/// its `.comment`, and the profile `cargo install` records in
/// `~/.cargo/.crates2.json` if it installed it. The CPU its code targets
/// is recorded nowhere (`cargo install` uses the target's default unless
/// RUSTFLAGS said otherwise), so it stays unknown.
pub fn of_installed_rust_program(binary: &Path, version: Option<String>) -> Build {
    Build {
        version,
        compiler: rustc_of(binary),
        target_cpu: None,
        profile: installed_profile(binary),
    }
}

/// The profile `cargo install` recorded for the crate that installed
/// `binary`, from `.crates2.json` in the folder above its `bin/`.
fn installed_profile(binary: &Path) -> Option<String> {
    let name = binary.file_name()?.to_str()?;
    let home = binary.parent()?.parent()?;
    let text = std::fs::read_to_string(home.join(".crates2.json")).ok()?;
    let json: serde_json::Value = serde_json::from_str(&text).ok()?;
    json["installs"].as_object()?.values().find_map(|install| {
        let bins = install["bins"].as_array()?;
        bins.iter()
            .any(|b| b.as_str() == Some(name))
            .then(|| install["profile"].as_str().map(str::to_string))?
    })
}

/// `rustc 1.95.0 (59807616e 2026-04-14)`, from the `rustc version ...`
/// string rustc leaves in a binary's ELF `.comment` section.
pub fn rustc_of(binary: &Path) -> Option<String> {
    let bytes = std::fs::read(binary).ok()?;
    let comment = elf_section(&bytes, ".comment")?;
    comment
        .split(|&b| b == 0)
        .filter_map(|s| std::str::from_utf8(s).ok())
        .find_map(|s| s.strip_prefix("rustc version "))
        .map(|v| format!("rustc {v}"))
}

/// The bytes of the section called `name` of a 64-bit little-endian ELF
/// file (the System V ABI's section header table), or `None`.
pub fn elf_section<'a>(elf: &'a [u8], name: &str) -> Option<&'a [u8]> {
    // e_ident: the magic, ELFCLASS64 (2), ELFDATA2LSB (1).
    if elf.get(..6)? != b"\x7fELF\x02\x01" {
        return None;
    }
    let u16_at = |at: usize| Some(u16::from_le_bytes(elf.get(at..at + 2)?.try_into().ok()?));
    let u32_at = |at: usize| Some(u32::from_le_bytes(elf.get(at..at + 4)?.try_into().ok()?));
    let u64_at = |at: usize| {
        let v = u64::from_le_bytes(elf.get(at..at + 8)?.try_into().ok()?);
        usize::try_from(v).ok()
    };
    let shoff = u64_at(0x28)?;
    let shentsize = usize::from(u16_at(0x3a)?);
    let shnum = usize::from(u16_at(0x3c)?);
    let shstrndx = usize::from(u16_at(0x3e)?);
    if shentsize < 0x40 {
        return None;
    }
    // (sh_name, sh_offset, sh_size) of section `i`.
    let header = |i: usize| {
        let at = shoff.checked_add(i.checked_mul(shentsize)?)?;
        Some((u32_at(at)? as usize, u64_at(at + 0x18)?, u64_at(at + 0x20)?))
    };
    let bytes = |offset: usize, size: usize| elf.get(offset..offset.checked_add(size)?);
    let (_, names_at, names_len) = header(shstrndx)?;
    let names = bytes(names_at, names_len)?;
    (0..shnum).find_map(|i| {
        let (name_at, offset, size) = header(i)?;
        let this = names.get(name_at..)?.split(|&b| b == 0).next()?;
        (this == name.as_bytes()).then(|| bytes(offset, size))?
    })
}

/// What a Go binary says of its build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GoBuildInfo {
    /// `go1.19.8`.
    pub go: String,
    /// The `build` lines of its module information: `-compiler=gc`,
    /// `GOARCH=amd64`, `GOAMD64=v1`, ...
    pub settings: Vec<String>,
}

/// The build information Go (1.18 and later) writes into every binary: a
/// 32-byte header starting `\xff Go buildinf:`, whose flags byte (at 15)
/// has bit 2 set when the version and the module information follow as
/// two length-prefixed strings (lengths as unsigned varints), as Go's own
/// `debug/buildinfo` reads it.
pub fn go_build_info(binary: &[u8]) -> Option<GoBuildInfo> {
    const MAGIC: &[u8] = b"\xff Go buildinf:";
    let at = binary.windows(MAGIC.len()).position(|w| w == MAGIC)?;
    let header = binary.get(at..at + 32)?;
    if header[15] & 0x2 == 0 {
        return None;
    }
    let mut rest = &binary[at + 32..];
    let mut string = || {
        let (len, used) = uvarint(rest)?;
        let s = rest.get(used..used.checked_add(len)?)?;
        rest = &rest[used + len..];
        Some(String::from_utf8_lossy(s).into_owned())
    };
    let go = string()?;
    let modinfo = string().unwrap_or_default();
    let settings = modinfo
        .lines()
        .filter_map(|l| l.strip_prefix("build\t"))
        .map(str::to_string)
        .collect();
    Some(GoBuildInfo { go, settings })
}

/// An unsigned varint (7 bits a byte, low bits first) and its length.
fn uvarint(bytes: &[u8]) -> Option<(usize, usize)> {
    let mut value: u64 = 0;
    for (i, &b) in bytes.iter().enumerate().take(10) {
        value |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some((usize::try_from(value).ok()?, i + 1));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The test binary is a Rust program built by the same rustc as
    /// tunlab: its `.comment` names that rustc.
    #[test]
    fn a_rust_binary_names_the_rustc_that_built_it() {
        let exe = std::env::current_exe().unwrap();
        let found = rustc_of(&exe).expect("a rustc version in .comment");
        assert_eq!(found, RUSTC);
        assert!(rustc_of(Path::new("/nonexistent")).is_none());
    }

    #[test]
    fn sections_of_broken_files_are_none() {
        let exe = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        assert!(elf_section(&exe, ".comment").is_some());
        assert!(elf_section(&exe, ".no-such-section").is_none());
        for cut in [0, 5, 0x40, 0x100] {
            assert!(elf_section(&exe[..cut], ".comment").is_none(), "cut at {cut}");
        }
        let mut bad = exe.clone();
        bad[0x28..0x30].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(elf_section(&bad, ".comment").is_none());
    }

    #[test]
    fn go_build_information() {
        let mut binary = b"junk".to_vec();
        binary.extend_from_slice(b"\xff Go buildinf:\x08\x02");
        binary.extend_from_slice(&[0; 16]);
        binary.push(8);
        binary.extend_from_slice(b"go1.19.8");
        let modinfo = b"path\tgolang.zx2c4.com/wireguard\nbuild\t-compiler=gc\nbuild\tGOAMD64=v1\n";
        binary.push(modinfo.len() as u8);
        binary.extend_from_slice(modinfo);
        let info = go_build_info(&binary).unwrap();
        assert_eq!(info.go, "go1.19.8");
        assert_eq!(info.settings, ["-compiler=gc", "GOAMD64=v1"]);
        // Cut anywhere: no panic, and no version from half a string.
        for cut in 0..binary.len() - modinfo.len() - 1 {
            assert!(go_build_info(&binary[..cut]).is_none(), "cut at {cut}");
        }
        assert_eq!(uvarint(&[0xb1, 0x01]), Some((177, 2)));
        assert_eq!(uvarint(&[0x80; 11]), None);
    }

    #[test]
    fn the_step_target_cpu_is_known() {
        assert!(!STEP_TARGET_CPU.is_empty());
        // On x86_64, .cargo/config.toml asks for the building machine's CPU
        // (unless RUSTFLAGS replaced it).
        if cfg!(target_arch = "x86_64")
            && !STEP_RUSTFLAGS.is_empty()
            && STEP_RUSTFLAGS.contains("target-cpu=native")
        {
            assert!(STEP_TARGET_CPU.starts_with("native ("), "{STEP_TARGET_CPU}");
        }
    }
}
