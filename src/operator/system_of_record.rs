//! The status of a SystemOfRecord: its projections and which RealTimeUpdater owns each (as the
//! updaters' own statuses say), and a `Ready` condition that is true when every projection is
//! kept by one. Recomputed when the SystemOfRecord or any of its updaters changes.

use std::sync::Arc;
use std::time::{Duration, Instant};

use kube::api::{ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::{Api, ResourceExt};
use serde_json::json;
use tracing::warn;

use super::reconcile::Context;
use super::status::now;
use crate::api::{
    Condition, ProjectionOwner, RealTimeUpdater, SystemOfRecord, SystemOfRecordStatus,
};

/// Why a SystemOfRecord's status could not be refreshed.
#[derive(Debug, thiserror::Error)]
pub enum SorStatusError {
    /// Listing the RealTimeUpdaters failed.
    #[error("list RealTimeUpdaters: {0}")]
    ListUpdaters(kube::Error),
    /// Writing the status failed.
    #[error("write status: {0}")]
    WriteStatus(kube::Error),
}

impl SorStatusError {
    fn reason(&self) -> &'static str {
        match self {
            SorStatusError::ListUpdaters(_) => "ListUpdatersFailed",
            SorStatusError::WriteStatus(_) => "StatusFailed",
        }
    }
}

/// Refreshes the status of one SystemOfRecord.
pub async fn reconcile(
    sor: Arc<SystemOfRecord>,
    ctx: Arc<Context>,
) -> Result<Action, SorStatusError> {
    let started = Instant::now();
    let result = refresh(&sor, &ctx).await;
    match &result {
        Ok(_) => ctx.monitor.reconcile_succeeded("SystemOfRecord", started.elapsed()),
        Err(e) => ctx.monitor.reconcile_failed("SystemOfRecord", e.reason(), started.elapsed()),
    }
    result
}

/// Back-off after a failed refresh.
pub fn error_policy(
    _sor: Arc<SystemOfRecord>,
    error: &SorStatusError,
    _ctx: Arc<Context>,
) -> Action {
    warn!(error = %error, "SystemOfRecord status refresh failed; retrying");
    Action::requeue(Duration::from_secs(10))
}

async fn refresh(sor: &SystemOfRecord, ctx: &Context) -> Result<Action, SorStatusError> {
    let namespace = sor.namespace().unwrap_or_default();
    let updaters = Api::<RealTimeUpdater>::namespaced(ctx.client.clone(), &namespace)
        .list(&ListParams::default())
        .await
        .map_err(SorStatusError::ListUpdaters)?
        .items;
    let previous = sor.status.clone().unwrap_or_default();
    let next = status(sor, &updaters, &previous, &now());
    if next != previous {
        Api::<SystemOfRecord>::namespaced(ctx.client.clone(), &namespace)
            .patch_status(
                &sor.name_any(),
                &PatchParams::default(),
                &Patch::Merge(json!({ "status": next })),
            )
            .await
            .map_err(SorStatusError::WriteStatus)?;
    }
    Ok(Action::await_change())
}

/// The status (pure): each projection's owner, and `Ready`.
pub fn status(
    sor: &SystemOfRecord,
    updaters: &[RealTimeUpdater],
    previous: &SystemOfRecordStatus,
    now: &str,
) -> SystemOfRecordStatus {
    let projections: Vec<ProjectionOwner> = sor
        .spec
        .projections
        .iter()
        .map(|p| ProjectionOwner {
            name: p.name.clone(),
            owner: updaters
                .iter()
                .filter(|u| u.spec.system_of_record_ref.name == sor.name_any())
                .find(|u| {
                    u.status
                        .iter()
                        .flat_map(|s| &s.projections)
                        .any(|q| q.name == p.name && q.state != "Refused")
                })
                .map(|u| u.name_any()),
        })
        .collect();
    let unowned: Vec<&str> =
        projections.iter().filter(|p| p.owner.is_none()).map(|p| p.name.as_str()).collect();
    let (state, reason, message) = if unowned.is_empty() {
        ("True", "AllProjectionsOwned", "every projection is kept by a RealTimeUpdater".to_string())
    } else {
        ("False", "UnownedProjections", format!("no RealTimeUpdater keeps {}", unowned.join(", ")))
    };
    let transition = previous
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready" && c.status == state)
        .map_or_else(|| now.to_string(), |c| c.last_transition_time.clone());
    SystemOfRecordStatus {
        observed_generation: sor.metadata.generation,
        projection_count: i32::try_from(projections.len()).unwrap_or(i32::MAX),
        projections,
        conditions: vec![Condition {
            type_: "Ready".into(),
            status: state.into(),
            observed_generation: sor.metadata.generation,
            last_transition_time: transition,
            reason: reason.into(),
            message,
        }],
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn owners_come_from_the_updaters_statuses() {
        let sor: SystemOfRecord = serde_json::from_value(json!({
            "metadata": { "name": "crm", "namespace": "ns", "generation": 3 },
            "spec": {
                "kafka": { "bootstrapServers": "k:9092" },
                "mongodb": { "uriSecretRef": { "name": "m", "key": "uri" }, "database": "crm" },
                "adapter": { "type": "debezium" },
                "projections": [
                    { "name": "a", "topics": ["t.a"], "fields": [{ "name": "id", "type": "String", "primaryKey": true }] },
                    { "name": "b", "topics": ["t.b"], "fields": [{ "name": "id", "type": "String", "primaryKey": true }] }
                ]
            }
        }))
        .unwrap();
        let updater: RealTimeUpdater = serde_json::from_value(json!({
            "metadata": { "name": "rtu-a", "namespace": "ns" },
            "spec": { "systemOfRecordRef": { "name": "crm" } },
            "status": { "projections": [{ "name": "a", "topics": ["t.a"], "state": "Active" }] }
        }))
        .unwrap();
        let s =
            status(&sor, std::slice::from_ref(&updater), &SystemOfRecordStatus::default(), "T1");
        assert_eq!(s.projection_count, 2);
        assert_eq!(s.projections[0].owner.as_deref(), Some("rtu-a"));
        assert_eq!(s.projections[1].owner, None);
        assert_eq!(s.conditions[0].status, "False");
        assert_eq!(s.conditions[0].message, "no RealTimeUpdater keeps b");
        assert_eq!(s.observed_generation, Some(3));
        let again = status(&sor, &[updater], &s, "T2");
        assert_eq!(again, s, "nothing changed: the same status, the same transition time");
    }
}
