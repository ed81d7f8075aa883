//! The engine's integration tests, one module per area, linked into one test binary.
//! Run one module with `cargo test -p sluice-engine --test it postgres::`.

mod common;

mod assets;
mod cluster;
mod mysql;
mod postgres;
mod storage;
