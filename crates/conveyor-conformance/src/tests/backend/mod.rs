//! The capability traits' properties (status, stats, cancel, dead letters, cron, idempotency).

mod admin;
mod keys;
mod leases;
mod lifecycle;
mod replay;
mod scheduling;
mod workers;

pub use admin::*;
pub use keys::*;
pub use leases::*;
pub use lifecycle::*;
pub use replay::*;
pub use scheduling::*;
pub use workers::*;
