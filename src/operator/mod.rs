//! The controller: leader election between operator replicas and the operator's telemetry.

pub mod leader;
pub mod telemetry;
