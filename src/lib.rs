//! rtu-operator: a Kubernetes operator that runs Fast Data Real-Time Updaters, and the consumer
//! engine its worker pods run. One binary, `rtu`; this library holds everything it does so the
//! integration tests can drive the same code.

pub mod api;
pub mod cli;
pub mod config;
pub mod engine;
pub mod local_workers;
pub mod operator;
pub mod probes;
pub mod process;
pub mod yaml;

#[cfg(test)]
mod dashboard_tests;
