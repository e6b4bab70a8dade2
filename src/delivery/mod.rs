//! Delivery: the engine that moves messages from the queue to their providers, and how a
//! stored message becomes bytes on the wire.

pub mod alerts;
pub mod build;
pub mod claimer;
pub mod engine;
pub mod metrics;
pub mod outcome;
pub mod queries;
pub mod recorder;
pub mod sender;
pub(crate) mod signing;
pub(crate) mod slots;
pub mod smtp_sender;
pub mod system;

pub use engine::{EngineConfig, EngineHandle, start};
