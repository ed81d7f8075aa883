//! The integration tests of the `sluice` binary, one module per capability, linked into one test
//! binary (each file in tests/ used to be its own binary linking libtorch, DataFusion and Ballista
//! again). Run one module with `cargo test --test it mqtt::`.

mod common;

mod assets;
mod cli;
mod compose;
mod console;
mod endpoint;
mod failover;
mod flight;
mod models;
mod monitor;
mod mqtt;
mod onnx;
mod prepare;
mod rest;
mod runs;
mod score;
mod secrets;
mod sources;
mod split;
mod stream;
mod tls;
