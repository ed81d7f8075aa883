//! Runs SQL statements on a cluster and formats their results.

use arrow::record_batch::RecordBatch;
use arrow::util::pretty::pretty_format_batches;
use datafusion::prelude::SessionContext;

use crate::error::Result;

/// Runs `sql` (one statement) and collects its result.
pub async fn run(ctx: &SessionContext, sql: &str) -> Result<Vec<RecordBatch>> {
    let spin = crate::progress::spinner("running query");
    let result = async { ctx.sql(sql).await?.collect().await }.await;
    spin.finish_and_clear();
    Ok(result?)
}

/// `name` as a quoted SQL identifier (any character, `"` doubled).
pub fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Formats at most `max_rows` rows as a table, with a line saying how many were left out.
pub fn format_table(batches: &[RecordBatch], max_rows: usize) -> Result<String> {
    let total: usize = batches.iter().map(|b| b.num_rows()).sum();
    let mut shown = Vec::new();
    let mut left = max_rows;
    for b in batches {
        if left == 0 {
            break;
        }
        let n = b.num_rows().min(left);
        shown.push(b.slice(0, n));
        left -= n;
    }
    let mut out = if shown.is_empty() && !batches.is_empty() {
        pretty_format_batches(&batches[..1])?.to_string()
    } else {
        pretty_format_batches(&shown)?.to_string()
    };
    out.push('\n');
    if total > max_rows {
        out.push_str(&format!("{total} rows ({} not shown; raise --max-rows to see more)\n", total - max_rows));
    } else {
        out.push_str(&format!("{total} row{}\n", if total == 1 { "" } else { "s" }));
    }
    Ok(out)
}
