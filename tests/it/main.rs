//! The integration tests, as one binary (one link instead of one per file).

mod common;
mod data_fixtures;
mod data_real;
mod default_model;
mod finetune;
mod fuzz;
mod inputs;
mod isolate_cli;
mod isolate_real;
mod isolate_synthetic;
mod model;
mod predict_cli;
mod report;
mod review;
mod serve;
mod serve_browser;
mod stain;
mod train;
