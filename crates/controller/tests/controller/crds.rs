//! The custom resource definitions: a snapshot of the YAML, and a structural
//! check that each document is a valid `apiextensions.k8s.io/v1` definition.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use remaudit_controller::{crds, crds_yaml};
use serde::Deserialize;

fn parse_all(yaml: &str) -> Vec<CustomResourceDefinition> {
    serde_norway::Deserializer::from_str(yaml)
        .map(|doc| CustomResourceDefinition::deserialize(doc).expect("a CustomResourceDefinition"))
        .collect()
}

#[test]
fn crds_yaml_snapshot() {
    insta::assert_snapshot!("crds", crds_yaml());
}

#[test]
fn each_document_is_a_namespaced_v1alpha1_crd_with_a_status_subresource() {
    let parsed = parse_all(&crds_yaml());
    let expected = [
        (
            "remediation.kubernaut.io",
            "RemediationRequest",
            "remediationrequests",
        ),
        (
            "remediationprocessing.kubernaut.io",
            "RemediationProcessing",
            "remediationprocessings",
        ),
        ("aianalysis.kubernaut.io", "AIAnalysis", "aianalyses"),
        (
            "workflowexecution.kubernaut.io",
            "WorkflowExecution",
            "workflowexecutions",
        ),
    ];
    assert_eq!(parsed.len(), expected.len());
    for (crd, (group, kind, plural)) in parsed.iter().zip(expected) {
        assert_eq!(
            crd.metadata.name.as_deref(),
            Some(format!("{plural}.{group}").as_str())
        );
        assert_eq!(crd.spec.group, group);
        assert_eq!(crd.spec.names.kind, kind);
        assert_eq!(crd.spec.names.plural, plural);
        assert_eq!(crd.spec.scope, "Namespaced");
        let [version] = crd.spec.versions.as_slice() else {
            panic!("{kind}: one version expected");
        };
        assert_eq!(version.name, "v1alpha1");
        assert!(version.served && version.storage, "{kind}");
        assert!(
            version
                .subresources
                .as_ref()
                .and_then(|s| s.status.as_ref())
                .is_some(),
            "{kind}: status subresource"
        );
        let columns = version
            .additional_printer_columns
            .as_deref()
            .unwrap_or_default();
        assert!(
            columns
                .iter()
                .any(|c| c.name == "Phase" && c.json_path == ".status.phase"),
            "{kind}: a Phase column"
        );
        let schema = version
            .schema
            .as_ref()
            .and_then(|s| s.open_api_v3_schema.as_ref())
            .and_then(|s| s.properties.as_ref())
            .expect("a schema");
        assert!(
            schema.contains_key("spec") && schema.contains_key("status"),
            "{kind}"
        );
    }
}

#[test]
fn the_yaml_is_exactly_the_generated_definitions() {
    let expected: Vec<_> = crds()
        .into_iter()
        .map(|c| serde_json::to_value(c).expect("json"))
        .collect();
    let parsed: Vec<_> = parse_all(&crds_yaml())
        .into_iter()
        .map(|c| serde_json::to_value(c).expect("json"))
        .collect();
    assert_eq!(parsed, expected);
}
