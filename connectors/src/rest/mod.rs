//! REST/JSON sources (CRM APIs): paginated by next link, cursor, offset or page number, with
//! bearer or OAuth2 client-credentials auth, retries with capped backoff, and incremental reads
//! by a modified-since parameter. Records are decoded leniently like every JSON source.

mod client;
mod config;
mod source;

pub use config::{Incremental, Pagination, RestAuth, RestConnection, RestRead};
pub use source::{RestPlan, plan, read_partition};
