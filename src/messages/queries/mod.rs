//! All SQL of the messages slice, by concern. The queue's own statements (claim, record,
//! leases) live in `delivery::queries`.

mod ingest;
mod log;
mod retention;
mod search;
mod search_pg;
mod tallies;

pub use ingest::*;
pub use log::*;
pub use retention::*;
pub use search::search;
pub use search_pg::WINDOW;
pub use tallies::*;
