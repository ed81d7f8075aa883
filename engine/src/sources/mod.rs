//! Sources as DataFusion tables that read on the executors: the client plans the partitions
//! (one query each), the plan carries them to the scheduler and executors ([`crate::codec`]),
//! and each executor task streams its own partitions straight from the source system.

pub mod files;
pub mod plan;
pub mod progress;
pub mod pushdown;
pub mod table;

pub use files::SourceFiles;
pub use plan::SourcePlan;
pub use progress::ReadProgress;
pub use table::SourceTable;

use datafusion::datasource::listing::ListingTableUrl;
use datafusion::prelude::SessionContext;
use sluice_connectors::files::{Format, Listing};

use crate::error::{Error, Result};

/// Plans reading the files at `url` (a folder or one file, in any registered store) whose names
/// end in `extension` (all when None) as source `name`: `partitions` parallel reads of pieces of
/// about `piece_bytes`.
#[allow(clippy::too_many_arguments)]
pub async fn plan_files(
    ctx: &SessionContext,
    name: &str,
    url: &str,
    extension: Option<&str>,
    format: Format,
    partitions: usize,
    piece_bytes: u64,
) -> Result<SourcePlan> {
    let listing = ListingTableUrl::parse(url).map_err(|e| Error::Config(format!("source '{name}': url '{url}': {e}")))?;
    let store_url = listing.object_store();
    let store = ctx.runtime_env().object_store(&store_url)?;
    let files = Listing { source: name, url, store, store_url: store_url.as_str(), prefix: listing.prefix(), extension };
    let plan = sluice_connectors::files::plan(files, format, partitions, piece_bytes).await?;
    Ok(SourcePlan::Files(plan))
}
