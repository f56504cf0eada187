//! The core engine's properties, observed only through worker events.

mod basics;
mod faults;
mod keys;

pub use basics::*;
pub use faults::*;
pub use keys::*;
