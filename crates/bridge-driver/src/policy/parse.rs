//! Reading NetworkPolicy objects from the JSON tree of a YAML or JSON document, field by
//! field, so that every refusal names the field as the document spells it
//! (`spec.ingress[0].from[1].ipBlock.except[0]`) and nothing unknown slips through.

use std::collections::BTreeMap;

use ipnet::IpNet;
use serde_json::{Map, Value};

use super::labels::{
    is_dns_label, is_dns_subdomain, validate_label_key, validate_label_value, LabelSelector,
    Operator, Requirement,
};
use super::model::{
    EgressRule, IngressRule, IpBlock, Metadata, NetworkPolicy, Peer, PolicyPort, PolicySpec,
    PolicyType, Protocol, API_VERSION, KIND,
};
use crate::error::ModelError;

/// Metadata the API server sets; accepted (so `kubectl get -o yaml` output applies) and
/// dropped.
const SERVER_METADATA: &[&str] = &[
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "managedFields",
    "selfLink",
];

/// The policies of one document: a NetworkPolicy, or a `List`/`NetworkPolicyList` of them.
/// `namespace` is the one given on the command line, if any: an object without one gets
/// it (else `default`), an object with another one is refused, as kubectl refuses it.
pub fn policies_of_document(
    document: &Value,
    path: &str,
    namespace: Option<&str>,
) -> Result<Vec<NetworkPolicy>, ModelError> {
    let kind = document.get("kind").and_then(Value::as_str);
    if matches!(kind, Some("List") | Some("NetworkPolicyList")) {
        let mut object = Obj::new(document, path)?;
        object.take("apiVersion");
        object.take("kind");
        object.take("metadata");
        let items = object.list("items")?;
        object.finish()?;
        let mut out = Vec::new();
        for (i, item) in items.iter().enumerate() {
            out.extend(policies_of_document(
                item,
                &format!("{}[{i}]", join(path, "items")),
                namespace,
            )?);
        }
        return Ok(out);
    }
    Ok(vec![policy(document, path, namespace)?])
}

fn policy(value: &Value, path: &str, namespace: Option<&str>) -> Result<NetworkPolicy, ModelError> {
    let mut object = Obj::new(value, path)?;
    let api_version = object.string("apiVersion")?.unwrap_or_default();
    if api_version != API_VERSION {
        return Err(ModelError::invalid(
            object.field("apiVersion"),
            format!("{api_version:?}: only {API_VERSION} is understood"),
        ));
    }
    let kind = object.string("kind")?.unwrap_or_default();
    if kind != KIND {
        return Err(ModelError::invalid(
            object.field("kind"),
            format!("{kind:?}: only {KIND} is understood"),
        ));
    }
    let metadata = match object.take("metadata") {
        Some(m) => metadata(m, &object.field("metadata"), namespace)?,
        None => return Err(ModelError::invalid(object.field("metadata"), "is required")),
    };
    let spec = match object.take("spec") {
        Some(s) => spec(s, &object.field("spec"))?,
        None => return Err(ModelError::invalid(object.field("spec"), "is required")),
    };
    object.take("status");
    object.finish()?;
    Ok(NetworkPolicy {
        api_version,
        kind,
        metadata,
        spec,
    })
}

fn metadata(value: &Value, path: &str, namespace: Option<&str>) -> Result<Metadata, ModelError> {
    let mut object = Obj::new(value, path)?;
    let name = object
        .string("name")?
        .ok_or_else(|| ModelError::invalid(object.field("name"), "is required"))?;
    if !is_dns_subdomain(&name) {
        return Err(ModelError::invalid(
            object.field("name"),
            format!(
                "{name:?}: lower-case letters, digits, '-' and '.' (a DNS subdomain, at most 253)"
            ),
        ));
    }
    let own = object.string("namespace")?;
    let namespace = match (own, namespace) {
        (Some(own), Some(given)) if own != given => {
            return Err(ModelError::invalid(
                object.field("namespace"),
                format!("{own:?} is not the namespace given (--namespace {given})"),
            ))
        }
        (Some(own), _) => own,
        (None, given) => given.unwrap_or("default").to_string(),
    };
    if !is_dns_label(&namespace) {
        return Err(ModelError::invalid(
            object.field("namespace"),
            format!("{namespace:?}: lower-case letters, digits and '-' (a DNS label, at most 63)"),
        ));
    }
    let labels = object.labels("labels")?;
    let annotations = match object.take("annotations") {
        None | Some(Value::Null) => BTreeMap::new(),
        Some(Value::Object(map)) => {
            let mut out = BTreeMap::new();
            for (key, value) in map {
                let field = format!("{}.{key}", object.field("annotations"));
                validate_label_key(&field, key)?;
                let Some(value) = value.as_str() else {
                    return Err(ModelError::invalid(field, "must be a string"));
                };
                out.insert(key.clone(), value.to_string());
            }
            out
        }
        Some(_) => {
            return Err(ModelError::invalid(
                object.field("annotations"),
                "must be a map",
            ))
        }
    };
    for key in SERVER_METADATA {
        object.take(key);
    }
    object.finish()?;
    Ok(Metadata {
        name,
        namespace,
        labels,
        annotations,
    })
}

fn spec(value: &Value, path: &str) -> Result<PolicySpec, ModelError> {
    let mut object = Obj::new(value, path)?;
    let pod_selector = match object.take("podSelector") {
        Some(v) => selector(v, &object.field("podSelector"))?,
        None => {
            return Err(ModelError::invalid(
                object.field("podSelector"),
                "is required ({} selects every sandbox of the namespace)",
            ))
        }
    };
    let mut ingress = Vec::new();
    for (i, rule) in object.list("ingress")?.iter().enumerate() {
        let field = format!("{}[{i}]", object.field("ingress"));
        let mut r = Obj::new(rule, &field)?;
        let from = peers(&r.list("from")?, &r.field("from"))?;
        let ports = ports(&r.list("ports")?, &r.field("ports"))?;
        r.finish()?;
        ingress.push(IngressRule { from, ports });
    }
    let mut egress = Vec::new();
    for (i, rule) in object.list("egress")?.iter().enumerate() {
        let field = format!("{}[{i}]", object.field("egress"));
        let mut r = Obj::new(rule, &field)?;
        let to = peers(&r.list("to")?, &r.field("to"))?;
        let ports = ports(&r.list("ports")?, &r.field("ports"))?;
        r.finish()?;
        egress.push(EgressRule { to, ports });
    }
    let mut policy_types = Vec::new();
    if object.has("policyTypes") {
        let field = object.field("policyTypes");
        for (i, t) in object.list("policyTypes")?.iter().enumerate() {
            let kind = match t.as_str() {
                Some("Ingress") => PolicyType::Ingress,
                Some("Egress") => PolicyType::Egress,
                _ => {
                    return Err(ModelError::invalid(
                        format!("{field}[{i}]"),
                        format!("{t}: Ingress or Egress"),
                    ))
                }
            };
            if policy_types.contains(&kind) {
                return Err(ModelError::invalid(
                    format!("{field}[{i}]"),
                    format!("{kind:?} is given twice"),
                ));
            }
            policy_types.push(kind);
        }
        policy_types.sort();
    } else {
        // As the API server defaults it: Ingress always, Egress when egress rules are given.
        policy_types.push(PolicyType::Ingress);
        if !egress.is_empty() {
            policy_types.push(PolicyType::Egress);
        }
    }
    object.finish()?;
    Ok(PolicySpec {
        pod_selector,
        policy_types,
        ingress,
        egress,
    })
}

fn peers(values: &[Value], path: &str) -> Result<Vec<Peer>, ModelError> {
    let mut out = Vec::new();
    for (i, value) in values.iter().enumerate() {
        let field = format!("{path}[{i}]");
        let mut object = Obj::new(value, &field)?;
        let pod_selector = match object.take("podSelector") {
            Some(v) => Some(selector(v, &object.field("podSelector"))?),
            None => None,
        };
        let namespace_selector = match object.take("namespaceSelector") {
            Some(v) => Some(selector(v, &object.field("namespaceSelector"))?),
            None => None,
        };
        let ip_block = match object.take("ipBlock") {
            Some(v) => Some(ip_block(v, &object.field("ipBlock"))?),
            None => None,
        };
        object.finish()?;
        match (&pod_selector, &namespace_selector, &ip_block) {
            (None, None, None) => {
                return Err(ModelError::invalid(
                    field,
                    "a peer needs podSelector, namespaceSelector or ipBlock",
                ))
            }
            (_, _, Some(_)) if pod_selector.is_some() || namespace_selector.is_some() => {
                return Err(ModelError::invalid(
                    field,
                    "ipBlock cannot be combined with podSelector or namespaceSelector",
                ))
            }
            _ => {}
        }
        out.push(Peer {
            pod_selector,
            namespace_selector,
            ip_block,
        });
    }
    Ok(out)
}

fn ip_block(value: &Value, path: &str) -> Result<IpBlock, ModelError> {
    let mut object = Obj::new(value, path)?;
    let cidr = object
        .string("cidr")?
        .ok_or_else(|| ModelError::invalid(object.field("cidr"), "is required"))?;
    let cidr = parse_cidr(&object.field("cidr"), &cidr)?;
    let mut except = Vec::new();
    for (i, e) in object.list("except")?.iter().enumerate() {
        let field = format!("{}[{i}]", object.field("except"));
        let Some(text) = e.as_str() else {
            return Err(ModelError::invalid(field, "must be a CIDR string"));
        };
        let net = parse_cidr(&field, text)?;
        let inside = match (cidr, net) {
            (IpNet::V4(outer), IpNet::V4(inner)) => {
                outer.contains(&inner) && inner.prefix_len() > outer.prefix_len()
            }
            (IpNet::V6(outer), IpNet::V6(inner)) => {
                outer.contains(&inner) && inner.prefix_len() > outer.prefix_len()
            }
            _ => false,
        };
        if !inside {
            return Err(ModelError::invalid(
                field,
                format!("{net} is not strictly inside the block's cidr {cidr}"),
            ));
        }
        except.push(net);
    }
    object.finish()?;
    Ok(IpBlock { cidr, except })
}

fn parse_cidr(field: &str, text: &str) -> Result<IpNet, ModelError> {
    let net: IpNet = text.parse().map_err(|_| {
        ModelError::invalid(
            field,
            format!("{text:?} is not a CIDR (such as 10.0.0.0/8)"),
        )
    })?;
    if net.trunc() != net {
        return Err(ModelError::invalid(
            field,
            format!(
                "{text:?} has host bits set (the network is {})",
                net.trunc()
            ),
        ));
    }
    Ok(net)
}

fn ports(values: &[Value], path: &str) -> Result<Vec<PolicyPort>, ModelError> {
    let mut out = Vec::new();
    for (i, value) in values.iter().enumerate() {
        let field = format!("{path}[{i}]");
        let mut object = Obj::new(value, &field)?;
        let protocol = match object.string("protocol")?.as_deref() {
            None | Some("TCP") => Protocol::Tcp,
            Some("UDP") => Protocol::Udp,
            Some("SCTP") => Protocol::Sctp,
            Some(other) => {
                return Err(ModelError::invalid(
                    object.field("protocol"),
                    format!("{other:?}: TCP, UDP or SCTP"),
                ))
            }
        };
        let port = match object.take("port") {
            None | Some(Value::Null) => None,
            Some(Value::String(name)) => {
                return Err(ModelError::invalid(
                    object.field("port"),
                    format!("{name:?}: named ports are not supported; give the number"),
                ))
            }
            Some(v) => Some(port_number(&object.field("port"), v)?),
        };
        let end_port = match object.take("endPort") {
            None | Some(Value::Null) => None,
            Some(v) => Some(port_number(&object.field("endPort"), v)?),
        };
        match (port, end_port) {
            (None, Some(_)) => {
                return Err(ModelError::invalid(
                    object.field("endPort"),
                    "needs port (the start of the range)",
                ))
            }
            (Some(start), Some(end)) if end < start => {
                return Err(ModelError::invalid(
                    object.field("endPort"),
                    format!("{end} is below port {start}"),
                ))
            }
            _ => {}
        }
        object.finish()?;
        out.push(PolicyPort {
            protocol,
            port,
            end_port,
        });
    }
    Ok(out)
}

fn port_number(field: &str, value: &Value) -> Result<u16, ModelError> {
    value
        .as_u64()
        .and_then(|n| u16::try_from(n).ok())
        .filter(|n| *n >= 1)
        .ok_or_else(|| ModelError::invalid(field, format!("{value}: a port is 1-65535")))
}

fn selector(value: &Value, path: &str) -> Result<LabelSelector, ModelError> {
    if value.is_null() {
        return Ok(LabelSelector::default());
    }
    let mut object = Obj::new(value, path)?;
    let match_labels = object.labels("matchLabels")?;
    let mut match_expressions = Vec::new();
    for (i, e) in object.list("matchExpressions")?.iter().enumerate() {
        let field = format!("{}[{i}]", object.field("matchExpressions"));
        let mut r = Obj::new(e, &field)?;
        let key = r
            .string("key")?
            .ok_or_else(|| ModelError::invalid(r.field("key"), "is required"))?;
        validate_label_key(&r.field("key"), &key)?;
        let operator = match r.string("operator")?.as_deref() {
            Some("In") => Operator::In,
            Some("NotIn") => Operator::NotIn,
            Some("Exists") => Operator::Exists,
            Some("DoesNotExist") => Operator::DoesNotExist,
            other => {
                return Err(ModelError::invalid(
                    r.field("operator"),
                    format!("{other:?}: In, NotIn, Exists or DoesNotExist"),
                ))
            }
        };
        let mut values = Vec::new();
        for (j, v) in r.list("values")?.iter().enumerate() {
            let vfield = format!("{}[{j}]", r.field("values"));
            let Some(v) = v.as_str() else {
                return Err(ModelError::invalid(vfield, "must be a string"));
            };
            validate_label_value(&vfield, v)?;
            values.push(v.to_string());
        }
        match operator {
            Operator::In | Operator::NotIn if values.is_empty() => {
                return Err(ModelError::invalid(
                    r.field("values"),
                    format!("{operator:?} needs at least one value"),
                ))
            }
            Operator::Exists | Operator::DoesNotExist if !values.is_empty() => {
                return Err(ModelError::invalid(
                    r.field("values"),
                    format!("{operator:?} takes no values"),
                ))
            }
            _ => {}
        }
        r.finish()?;
        match_expressions.push(Requirement {
            key,
            operator,
            values,
        });
    }
    object.finish()?;
    Ok(LabelSelector {
        match_labels,
        match_expressions,
    })
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// An object being read: fields are taken one by one and whatever is left is unknown.
struct Obj<'a> {
    path: String,
    map: &'a Map<String, Value>,
    taken: Vec<&'a str>,
}

impl<'a> Obj<'a> {
    fn new(value: &'a Value, path: &str) -> Result<Self, ModelError> {
        match value {
            Value::Object(map) => Ok(Obj {
                path: path.to_string(),
                map,
                taken: Vec::new(),
            }),
            _ => Err(ModelError::invalid(
                if path.is_empty() { "document" } else { path },
                format!("must be an object, not {value}"),
            )),
        }
    }

    fn field(&self, key: &str) -> String {
        join(&self.path, key)
    }

    fn has(&self, key: &str) -> bool {
        self.map.get(key).is_some_and(|v| !v.is_null())
    }

    fn take(&mut self, key: &str) -> Option<&'a Value> {
        let (k, v) = self.map.get_key_value(key)?;
        self.taken.push(k.as_str());
        Some(v)
    }

    fn string(&mut self, key: &str) -> Result<Option<String>, ModelError> {
        match self.take(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(other) => Err(ModelError::invalid(
                self.field(key),
                format!("must be a string, not {other}"),
            )),
        }
    }

    fn list(&mut self, key: &str) -> Result<Vec<Value>, ModelError> {
        match self.take(key) {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::Array(items)) => Ok(items.clone()),
            Some(other) => Err(ModelError::invalid(
                self.field(key),
                format!("must be a list, not {other}"),
            )),
        }
    }

    fn labels(&mut self, key: &str) -> Result<BTreeMap<String, String>, ModelError> {
        let field = self.field(key);
        match self.take(key) {
            None | Some(Value::Null) => Ok(BTreeMap::new()),
            Some(Value::Object(map)) => {
                let mut out = BTreeMap::new();
                for (k, v) in map {
                    let f = format!("{field}.{k}");
                    validate_label_key(&f, k)?;
                    let Some(v) = v.as_str() else {
                        return Err(ModelError::invalid(f, format!("must be a string, not {v}")));
                    };
                    validate_label_value(&f, v)?;
                    out.insert(k.clone(), v.to_string());
                }
                Ok(out)
            }
            Some(other) => Err(ModelError::invalid(
                field,
                format!("must be a map of labels, not {other}"),
            )),
        }
    }

    /// Refuses the first field nothing took.
    fn finish(self) -> Result<(), ModelError> {
        match self.map.keys().find(|k| !self.taken.contains(&k.as_str())) {
            Some(unknown) => Err(ModelError::invalid(
                join(&self.path, unknown),
                "is not a field netd supports here",
            )),
            None => Ok(()),
        }
    }
}
