//! Network policy in Kubernetes' format (`networking.k8s.io/v1` NetworkPolicy) for netd's
//! sandboxes: reading and checking policies, label selectors, and the firewall state
//! (chains and kernel sets) they come to.

pub mod labels;
pub mod model;
mod parse;
pub mod render;

use std::collections::BTreeSet;

use serde_json::Value;

pub use labels::{LabelChange, LabelSelector, Labels};
pub use model::{NetworkPolicy, PolicyType};
pub use render::{policy_rules, IpSet, PolicyEndpoint, PolicyRules};

use crate::error::ModelError;

/// Reads every NetworkPolicy in `text`: YAML (several documents allowed) or JSON, objects
/// or `List`s of them. All are checked before any is returned, so a file is taken whole or
/// not at all. `namespace` is the one given on the command line, if any.
pub fn parse_policies(
    text: &str,
    namespace: Option<&str>,
) -> Result<Vec<NetworkPolicy>, ModelError> {
    let documents: Vec<Value> = serde_saphyr::from_multiple(text)
        .map_err(|e| ModelError::invalid("policy file", format!("not YAML or JSON: {e}")))?;
    let mut out: Vec<NetworkPolicy> = Vec::new();
    let several = documents.len() > 1;
    for (i, document) in documents.iter().enumerate() {
        if document.is_null() {
            continue;
        }
        let path = if several {
            format!("document {}: ", i + 1)
        } else {
            String::new()
        };
        let policies =
            parse::policies_of_document(document, "", namespace).map_err(|e| match e {
                ModelError::Invalid { field, reason } => ModelError::Invalid {
                    field: format!("{path}{field}"),
                    reason,
                },
                other => other,
            })?;
        out.extend(policies);
    }
    if out.is_empty() {
        return Err(ModelError::invalid("policy file", "holds no NetworkPolicy"));
    }
    let mut seen = BTreeSet::new();
    for policy in &out {
        if !seen.insert(policy.key()) {
            return Err(ModelError::invalid(
                "metadata.name",
                format!("policy {} is given twice", policy.key()),
            ));
        }
    }
    Ok(out)
}
