//! The pure helpers of dereference: which Secrets and ConfigMaps a SystemOfRecord makes the
//! operator read.

use serde_json::json;

use super::{config_map_names, secret_names};
use crate::operator::fixtures::sor_with;

#[test]
fn names_of_the_referenced_secrets_and_config_maps() {
    let cases = [
        (
            "everything referenced, names deduplicated",
            json!({}),
            vec!["kafka-ca", "kafka-user", "mongo"],
            vec!["crm-functions", "crm-schemas"],
        ),
        (
            "no authentication, no CA, no ConfigMaps",
            json!({ "spec": {
                "kafka": { "authentication": { "type": "none", "usernameSecretRef": null,
                                               "passwordSecretRef": null },
                           "tls": { "enabled": false, "caSecretRef": null } },
                "erSchemaRef": null, "projectionChangesSchemaRef": null,
                "customFunctionsRef": null } }),
            vec!["mongo"],
            vec![],
        ),
        (
            "username and password in two Secrets, the schemas in two ConfigMaps",
            json!({ "spec": {
                "kafka": { "authentication": {
                    "passwordSecretRef": { "name": "kafka-password", "key": "p" } } },
                "projectionChangesSchemaRef": { "name": "pc-schema", "key": "pc.json" } } }),
            vec!["kafka-ca", "kafka-password", "kafka-user", "mongo"],
            vec!["crm-functions", "crm-schemas", "pc-schema"],
        ),
        (
            "only the functions ConfigMap",
            json!({ "spec": { "erSchemaRef": null, "projectionChangesSchemaRef": null } }),
            vec!["kafka-ca", "kafka-user", "mongo"],
            vec!["crm-functions"],
        ),
    ];
    for (name, patch, secrets, config_maps) in cases {
        let sor = sor_with(patch);
        assert_eq!(secret_names(&sor).into_iter().collect::<Vec<_>>(), secrets, "{name}");
        assert_eq!(config_map_names(&sor).into_iter().collect::<Vec<_>>(), config_maps, "{name}");
    }
}
