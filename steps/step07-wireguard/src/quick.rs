//! `up` and `down`: placeholder until the wg-quick part lands.
use std::path::Path;
use std::process::ExitCode;

pub fn up(_program: &str, _config: &Path, _verbose: u8) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not yet")
}

pub fn down(_program: &str, _config: &Path, _verbose: u8) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not yet")
}
