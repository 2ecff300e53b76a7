//! Labels and label selectors, with Kubernetes' rules for what a key and a value may be
//! and what a selector matches.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::ModelError;

/// A sandbox's (or a namespace's) labels.
pub type Labels = BTreeMap<String, String>;

/// The label that puts a sandbox in a namespace (`default` when absent).
pub const NAMESPACE_LABEL: &str = "netd.namespace";

/// The label every namespace carries with its own name, which `namespaceSelector`s match.
pub const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// The namespace of a sandbox with these labels.
pub fn namespace_of(labels: &Labels) -> &str {
    labels
        .get(NAMESPACE_LABEL)
        .map(String::as_str)
        .unwrap_or("default")
}

/// A namespace's labels: only its name, as netd has no namespace objects.
pub fn namespace_labels(namespace: &str) -> Labels {
    Labels::from([(NAMESPACE_NAME_LABEL.to_string(), namespace.to_string())])
}

/// `matchLabels` and `matchExpressions`, all of which must hold; empty selects everything.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LabelSelector {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub match_labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub match_expressions: Vec<Requirement>,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Requirement {
    pub key: String,
    pub operator: Operator,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Operator {
    In,
    NotIn,
    Exists,
    DoesNotExist,
}

impl LabelSelector {
    pub fn is_empty(&self) -> bool {
        self.match_labels.is_empty() && self.match_expressions.is_empty()
    }

    pub fn matches(&self, labels: &Labels) -> bool {
        self.match_labels
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
            && self.match_expressions.iter().all(|r| r.matches(labels))
    }
}

impl Requirement {
    pub fn matches(&self, labels: &Labels) -> bool {
        let value = labels.get(&self.key);
        match self.operator {
            Operator::In => value.is_some_and(|v| self.values.contains(v)),
            Operator::NotIn => value.is_none_or(|v| !self.values.contains(v)),
            Operator::Exists => value.is_some(),
            Operator::DoesNotExist => value.is_none(),
        }
    }
}

/// A label key as Kubernetes takes it: `[prefix/]name`, the prefix a DNS subdomain of at
/// most 253 characters, the name at most 63 of letters, digits, `-`, `_` and `.`, starting
/// and ending with a letter or digit.
pub fn validate_label_key(field: &str, key: &str) -> Result<(), ModelError> {
    let (prefix, name) = match key.split_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    if let Some(prefix) = prefix {
        if !is_dns_subdomain(prefix) {
            return Err(ModelError::invalid(
                field,
                format!("label key {key:?}: the prefix must be a DNS subdomain (lower-case letters, digits, '-' and '.', at most 253)"),
            ));
        }
    }
    if name.is_empty() || !is_label_name(name) {
        return Err(ModelError::invalid(
            field,
            format!("label key {key:?}: the name must be 1-63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit"),
        ));
    }
    Ok(())
}

/// A label value: empty, or what a key's name part may be.
pub fn validate_label_value(field: &str, value: &str) -> Result<(), ModelError> {
    if value.is_empty() || is_label_name(value) {
        return Ok(());
    }
    Err(ModelError::invalid(
        field,
        format!("label value {value:?}: at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit"),
    ))
}

fn is_label_name(s: &str) -> bool {
    let bytes = s.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes[0].is_ascii_alphanumeric()
        && bytes[bytes.len() - 1].is_ascii_alphanumeric()
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// A DNS subdomain (RFC 1123): what Kubernetes object names and label prefixes are.
pub fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(is_dns_label)
}

/// A DNS label (RFC 1123): what Kubernetes namespace names are.
pub fn is_dns_label(s: &str) -> bool {
    let bytes = s.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes[0].is_ascii_alphanumeric()
        && bytes[bytes.len() - 1].is_ascii_alphanumeric()
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
}

/// `KEY=VALUE` (set) or `KEY-` (remove), as `kubectl label` and `netctl label` take them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LabelChange {
    Set(String, String),
    Remove(String),
}

impl LabelChange {
    pub fn parse(field: &str, text: &str) -> Result<LabelChange, ModelError> {
        if let Some((key, value)) = text.split_once('=') {
            validate_label_key(field, key)?;
            validate_label_value(field, value)?;
            return Ok(LabelChange::Set(key.to_string(), value.to_string()));
        }
        if let Some(key) = text.strip_suffix('-') {
            validate_label_key(field, key)?;
            return Ok(LabelChange::Remove(key.to_string()));
        }
        Err(ModelError::invalid(
            field,
            format!("{text:?}: give KEY=VALUE to set a label or KEY- to remove one"),
        ))
    }

    pub fn apply(&self, labels: &mut Labels) {
        match self {
            LabelChange::Set(key, value) => {
                labels.insert(key.clone(), value.clone());
            }
            LabelChange::Remove(key) => {
                labels.remove(key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn requirement(key: &str, operator: Operator, values: &[&str]) -> LabelSelector {
        LabelSelector {
            match_labels: BTreeMap::new(),
            match_expressions: vec![Requirement {
                key: key.into(),
                operator,
                values: values.iter().map(|v| v.to_string()).collect(),
            }],
        }
    }

    #[test]
    fn selectors_match_as_kubernetes_defines() {
        let web = labels(&[("app", "web"), ("tier", "front")]);
        let bare = labels(&[]);
        assert!(LabelSelector::default().matches(&web));
        assert!(LabelSelector::default().matches(&bare));
        let by_label = LabelSelector {
            match_labels: BTreeMap::from([("app".into(), "web".into())]),
            match_expressions: Vec::new(),
        };
        assert!(by_label.matches(&web) && !by_label.matches(&bare));
        let r#in = requirement("tier", Operator::In, &["front", "back"]);
        assert!(r#in.matches(&web) && !r#in.matches(&bare));
        let not_in = requirement("tier", Operator::NotIn, &["front"]);
        assert!(!not_in.matches(&web) && not_in.matches(&bare));
        let exists = requirement("app", Operator::Exists, &[]);
        assert!(exists.matches(&web) && !exists.matches(&bare));
        let absent = requirement("app", Operator::DoesNotExist, &[]);
        assert!(!absent.matches(&web) && absent.matches(&bare));
    }

    #[test]
    fn keys_and_values_follow_kubernetes() {
        for good in [
            "app",
            "example.com/app",
            "a_b.c-d",
            "kubernetes.io/metadata.name",
        ] {
            assert!(validate_label_key("k", good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "-app",
            "app-",
            "Example.com/app",
            "a/b/c",
            "/app",
            &"x".repeat(64),
        ] {
            assert!(validate_label_key("k", bad).is_err(), "{bad}");
        }
        for good in ["", "web", "v1.2_3"] {
            assert!(validate_label_value("v", good).is_ok(), "{good}");
        }
        for bad in ["-web", "a b", &"x".repeat(64)] {
            assert!(validate_label_value("v", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn label_changes_set_and_remove() {
        let mut l = labels(&[("app", "web")]);
        LabelChange::parse("l", "tier=front").unwrap().apply(&mut l);
        LabelChange::parse("l", "app-").unwrap().apply(&mut l);
        assert_eq!(l, labels(&[("tier", "front")]));
        assert!(LabelChange::parse("l", "app").is_err());
        assert!(LabelChange::parse("l", "bad key=x").is_err());
    }
}
