//! `leuko isolate` (issue 3).

use std::process::ExitCode;

/// Find every leukocyte in photos, crop it to 128x128.
#[derive(Debug, clap::Args)]
pub struct IsolateArgs {}

pub fn run(_args: IsolateArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not implemented yet")
}
