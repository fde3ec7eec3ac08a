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
    /// Train a classifier from an experiment config.
    Train(cmd::train::TrainArgs),
    /// Record what a model's training photos look like, so that photos unlike them are flagged.
    Profile(cmd::profile::ProfileArgs),
    /// Evaluate a trained model on a split's test part: kappa, accuracy, per-class scores.
    Evaluate(cmd::train::EvaluateArgs),
    /// Reproduce the four-step study: baseline → balanced → isolated → final, with the comparison table.
    CaseStudy(cmd::train::CaseStudyArgs),
    /// Local web app and JSON API: drop photos, see each leukocyte classified and counted.
    Serve(cmd::serve::ServeArgs),
    /// Classify every leukocyte in photos: one row per cell (table, CSV or JSON).
    Predict(cmd::predict::PredictArgs),
    /// Differential count of a sample as one self-contained HTML report.
    Report(cmd::report::ReportArgs),
    /// Throughput benchmarks (figures, not tests).
    Bench(cmd::bench::BenchArgs),
}

fn main() -> ExitCode {
    leuko::runtime::tune_allocator();
    // A closed pipe (`leuko data audit | head`) ends the program quietly, as it does `cat`,
    // instead of a panic at the next `println!`.
    #[cfg(unix)]
    // SAFETY: restoring the default disposition of SIGPIPE before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    // Usage errors exit with 1 (2 means "some inputs could not be read").
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { 1 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    let result = match cli.command {
        Command::Data(c) => cmd::data::run(c),
        Command::Split(a) => cmd::split::run(a),
        Command::Isolate(a) => cmd::isolate::run(a),
        Command::Train(a) => cmd::train::run_train(a),
        Command::Evaluate(a) => cmd::train::run_evaluate(a),
        Command::CaseStudy(a) => cmd::train::run_case_study(a),
        Command::Serve(a) => cmd::serve::run(a),
        Command::Predict(a) => cmd::predict::run(a),
        Command::Report(a) => cmd::report::run(a),
        Command::Profile(a) => cmd::profile::run(a),
        Command::Bench(a) => cmd::bench::run(a),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            let code = if e.downcast_ref::<cmd::NoPhotos>().is_some() {
                2
            } else {
                1
            };
            ExitCode::from(code)
        }
    }
}
