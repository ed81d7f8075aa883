//! Sluice's benchmarks. Timings never decide a test; they are recorded in `bench/RESULTS.md`
//! with the command that produced them. The scoring benchmark against Spark, Ray Data, Daft and
//! a plain Rust loop lands with the batch-scoring work.
