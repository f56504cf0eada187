//! The core engine's properties, observed only through worker events.

mod basics;
mod delayed;
mod faults;
mod keys;

pub use basics::*;
pub use delayed::*;
pub use faults::*;
pub use keys::*;
