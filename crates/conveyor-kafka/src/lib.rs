//! Conveyor's Kafka engine, part one: the job's wire format on Kafka ([`envelope`]), the
//! decoders that let plain producers in any language publish jobs ([`ingest`]), and the topic
//! layout ([`topics`]). The consumer-group engine builds on these.
//!
//! Everything here is pure (no broker connection), so the formats are guarded by fixture tests.

mod attempts;
mod config;
mod control;
mod cron;
mod dead;
#[cfg(test)]
mod decode_props;
pub mod delivery;
mod engine;
pub mod envelope;
mod error;
mod import;
pub mod ingest;
mod inspect;
mod intake;
mod keys;
pub mod offsets;
pub mod presence;
pub mod producer;
mod replay;
mod scan;
mod sent;
mod session;
mod state;
mod status;
pub mod topics;

pub use config::{Compression, Ingest, KafkaConfig};
pub use engine::KafkaEngine;
pub use envelope::{Envelope, Headers, Record};
pub use error::Error;
pub use ingest::{Format, IngestDecoder, Zone};
pub use intake::record_of;
pub use topics::{Level, TopicLayout};
