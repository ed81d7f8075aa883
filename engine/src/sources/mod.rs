//! Sources as DataFusion tables that read on the executors: the client plans the partitions
//! (one query each), the plan carries them to the scheduler and executors ([`crate::codec`]),
//! and each executor task streams its own partitions straight from the source system.

pub mod files;
pub mod plan;
pub mod table;

pub use files::SourceFiles;
pub use plan::SourcePlan;
pub use table::SourceTable;

use datafusion::datasource::listing::ListingTableUrl;
use datafusion::prelude::SessionContext;
use sluice_connectors::json::JsonOptions;

use crate::error::{Error, Result};

/// Plans reading the NDJSON files at `url` (a folder or one file, in any registered store) as
/// source `name`: `partitions` parallel reads of pieces of about `piece_bytes`.
pub async fn plan_ndjson(
    ctx: &SessionContext,
    name: &str,
    url: &str,
    extension: &str,
    options: &JsonOptions,
    partitions: usize,
    piece_bytes: u64,
) -> Result<SourcePlan> {
    let listing = ListingTableUrl::parse(url).map_err(|e| Error::Config(format!("source '{name}': url '{url}': {e}")))?;
    let store_url = listing.object_store();
    let store = ctx.runtime_env().object_store(&store_url)?;
    let plan = sluice_connectors::files::plan(
        name,
        url,
        store,
        store_url.as_str(),
        listing.prefix(),
        extension,
        options,
        partitions,
        piece_bytes,
    )
    .await?;
    Ok(SourcePlan::Ndjson(plan))
}
