//! Integration tests against the real servers started by `scripts/testenv` (Kafka, MongoDB,
//! kube-apiserver + etcd + kube-controller-manager on 127.0.0.1). One test binary, so the heavy
//! dependencies are linked once; every test gets its own topics, databases and namespaces, so
//! they run in parallel.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod connector_output;
mod engine_outage;
mod engine_outputs;
mod engine_policies;
mod engine_run;
mod install_helm;
mod install_rbac;
mod kafka_smoke;
mod kube_smoke;
mod mongodb_smoke;
mod operator_autoscaling;
mod operator_bad_objects;
mod operator_e2e;
mod operator_examples;
mod operator_leader;
mod operator_process;
mod operator_reconcile;
mod pr_update_vectors;
mod projection_changes;
mod projection_writes;
mod reliability;
mod script_strategy;
mod strategy_automatic;
mod support;
