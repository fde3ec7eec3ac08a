//! The `leuko` command line: a thin layer over the `leuko` library.

mod cmd;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// Classify and count leukocytes (white blood cells) in stained blood-smear photographs.
#[derive(Debug, Parser)]
#[command(name = "leuko", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Class counts and excluded rows of the BCCD data set; `data audit` finds photos of the same cell.
    Data(cmd::data::DataCommand),
    /// Make a stratified, grouped (leakage-free), seeded train/validation/test split.
    Split(cmd::split::SplitArgs),
    /// Find every leukocyte in photos and crop it to 128x128.
    Isolate(cmd::isolate::IsolateArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Data(c) => cmd::data::run(c),
        Command::Split(a) => cmd::split::run(a),
        Command::Isolate(a) => cmd::isolate::run(a),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}
