//! Records how tunlab itself is compiled, for `tunlab bench`: the CPU the
//! code is built for (`-C target-cpu`, which `.cargo/config.toml` sets to
//! `native` on x86_64, or RUSTFLAGS overrides) and the rustc that builds
//! it. tunlab builds the step binaries it measures with the same cargo
//! profile, flags and toolchain, so this is theirs too; bench.json records
//! it for every contestant, as two benchmark files can be compared only
//! when their builds are alike.

use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    // The flags cargo passes to rustc for this package, 0x1f between
    // them: RUSTFLAGS, or else the config files' `rustflags`.
    let encoded = std::env::var("CARGO_ENCODED_RUSTFLAGS").unwrap_or_default();
    let flags: Vec<&str> = encoded.split('\x1f').filter(|f| !f.is_empty()).collect();
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let cpus = Command::new(&rustc)
        .args(["--print", "target-cpus"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let target_cpu = match requested_cpu(&flags) {
        // `native` is whatever CPU builds: say which it was.
        Some(cpu) if cpu == "native" => match currently(&cpus, "native") {
            Some(host) => format!("native ({host})"),
            None => cpu,
        },
        Some(cpu) => cpu,
        None => match default_cpu(&cpus) {
            Some(cpu) => format!("{cpu} (the target's default)"),
            None => "the target's default".into(),
        },
    };
    let version = Command::new(&rustc)
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    println!("cargo:rustc-env=TUNLAB_TARGET_CPU={target_cpu}");
    println!("cargo:rustc-env=TUNLAB_RUSTFLAGS={}", flags.join(" "));
    println!("cargo:rustc-env=TUNLAB_RUSTC_VERSION={version}");
}

/// The last `-C target-cpu=X` (or `-Ctarget-cpu=X`) in `flags`: rustc
/// takes the last one given.
fn requested_cpu(flags: &[&str]) -> Option<String> {
    let mut cpu = None;
    let mut after_c = false;
    for flag in flags {
        let option = if after_c {
            Some(*flag)
        } else {
            flag.strip_prefix("-C").filter(|rest| !rest.is_empty())
        };
        after_c = *flag == "-C";
        if let Some(value) = option.and_then(|o| o.strip_prefix("target-cpu=")) {
            cpu = Some(value.to_string());
        }
    }
    cpu
}

/// `znver4` from rustc's line `native - Select the CPU of the current host
/// (currently znver4).`
fn currently(cpus: &str, name: &str) -> Option<String> {
    let line = cpus.lines().find(|l| l.split_whitespace().next() == Some(name))?;
    let (_, rest) = line.split_once("(currently ")?;
    Some(rest.split(')').next()?.to_string())
}

/// The CPU rustc's list calls the default target CPU (`x86-64`).
fn default_cpu(cpus: &str) -> Option<String> {
    let line = cpus.lines().find(|l| l.contains("default target CPU"))?;
    Some(line.split_whitespace().next()?.to_string())
}
