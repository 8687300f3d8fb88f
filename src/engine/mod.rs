//! The consumer engine every worker pod runs (`rtu engine`): from ingestion topics to MongoDB
//! projections and their outputs. It knows nothing of Kubernetes.

pub mod adapter;
pub mod announce;
pub mod backoff;
pub mod cast;
pub mod code;
pub mod consumer;
pub mod context;
pub mod dead_letter;
pub mod encode;
pub mod functions;
pub mod kafka;
pub mod metrics;
pub mod outputs;
pub mod projection;
pub mod script;
pub mod strategy;
pub mod writer;
