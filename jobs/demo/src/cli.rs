//! `sluice demo`.

use std::path::PathBuf;

use clap::Args;
use sluice_engine::cli::{ClusterArgs, Say};

use crate::{DemoOptions, Result};

/// `sluice demo`.
#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Accounts to generate (orders and device events scale with it).
    #[arg(long, default_value_t = 2_000_000)]
    rows: usize,
    /// Output directory (lake/, models/, predictions/ are replaced).
    #[arg(long, default_value = "sluice-demo")]
    out: PathBuf,
    /// Seed of the data and the split.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Put the lake in a datastore of the workspace, e.g. az://container/demo (default: OUT/lake).
    #[arg(long, value_name = "URL")]
    lake: Option<String>,
    #[command(flatten)]
    cluster: ClusterArgs,
}

impl DemoArgs {
    pub async fn run(self, say: Say) -> Result<()> {
        let (ctx, _cluster) = self.cluster.session().await?;
        let options = DemoOptions { rows: self.rows, out: self.out, seed: self.seed, lake: self.lake };
        let summary = crate::run(&ctx, &options).await?;
        say.out(format!("\n{}", summary.table));
        let total: f64 = summary.stages.iter().map(|s| s.elapsed.as_secs_f64()).sum();
        say.out(format!("model        {} ({})", summary.model_id, summary.model_path.display()));
        say.out(format!("predictions  {} ({} rows, one per test-split account)", summary.predictions, summary.test.rows));
        say.out(format!(
            "test         AUC {:.4}  accuracy {:.4}  log loss {:.4}  churn rate {:.3}",
            summary.test.auc, summary.test.accuracy, summary.test.log_loss, summary.test.positive_rate
        ));
        say.out(format!("total        {total:.1} s"));
        Ok(())
    }
}
