//! The API's operations by name: what a route and method do (`POST /networks` creates a
//! network), so that metrics, the log and `netctl system events` speak of operations and
//! objects rather than of raw paths.

use axum::http::Method;
use serde_json::Value;

/// One kind of operation: the type of object it acts on and the action, as Docker's
/// events name them (`network` `create`, `sandbox` `connect`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Operation {
    /// `network_create`: the metrics label.
    pub name: &'static str,
    pub object: &'static str,
    pub action: &'static str,
}

const fn op(name: &'static str, object: &'static str, action: &'static str) -> Operation {
    Operation {
        name,
        object,
        action,
    }
}

/// What netd's own API does at a route (axum's matched path) and method; `None` for a
/// route that is not an operation of this table (an unknown path).
pub fn netd(method: &Method, route: &str) -> Option<Operation> {
    let m = method.as_str();
    Some(match (m, route) {
        ("GET", "/_ping") => op("ping", "system", "ping"),
        ("GET", "/networks") => op("network_list", "network", "list"),
        ("POST", "/networks") => op("network_create", "network", "create"),
        ("POST", "/networks/prune") => op("network_prune", "network", "prune"),
        ("GET", "/networks/{name}") => op("network_inspect", "network", "inspect"),
        ("DELETE", "/networks/{name}") => op("network_remove", "network", "destroy"),
        ("POST", "/networks/{name}/connect") => op("network_connect", "network", "connect"),
        ("POST", "/networks/{name}/disconnect") => {
            op("network_disconnect", "network", "disconnect")
        }
        ("GET", "/sandboxes") => op("sandbox_list", "sandbox", "list"),
        ("POST", "/sandboxes") => op("sandbox_run", "sandbox", "start"),
        ("POST", "/sandboxes/attach") => op("sandbox_attach", "sandbox", "attach"),
        ("DELETE", "/containers/{id}") => op("sandbox_detach", "sandbox", "detach"),
        ("GET", "/sandboxes/{name}") => op("sandbox_inspect", "sandbox", "inspect"),
        ("DELETE", "/sandboxes/{name}") => op("sandbox_remove", "sandbox", "destroy"),
        ("POST", "/sandboxes/{name}/processes") => op("sandbox_exec", "sandbox", "exec"),
        ("POST", "/sandboxes/{name}/labels") => op("sandbox_label", "sandbox", "label"),
        ("GET", "/policies") => op("policy_list", "policy", "list"),
        ("POST", "/policies") => op("policy_apply", "policy", "apply"),
        ("GET", "/policies/{namespace}/{name}") => op("policy_inspect", "policy", "inspect"),
        ("DELETE", "/policies/{namespace}/{name}") => op("policy_remove", "policy", "destroy"),
        ("POST", "/system/reconcile") => op("system_reconcile", "system", "reconcile"),
        ("GET", "/system/info") => op("system_info", "system", "info"),
        ("GET", "/system/events") => op("system_events", "system", "events"),
        ("GET", "/cluster/nodes") => op("node_list", "node", "list"),
        ("DELETE", "/cluster/nodes/{name}") => op("node_remove", "node", "destroy"),
        _ => return None,
    })
}

/// The same for the Docker network API (`--docker-socket`), at `/` or under a version
/// (`/v1.47/networks/create`).
pub fn docker(method: &Method, route: &str) -> Option<Operation> {
    let route = route.strip_prefix("/{version}").unwrap_or(route);
    let m = method.as_str();
    Some(match (m, route) {
        ("GET" | "HEAD", "/_ping") => op("ping", "system", "ping"),
        ("GET", "/version") => op("version", "system", "version"),
        ("GET", "/networks") => op("network_list", "network", "list"),
        ("POST", "/networks/create") => op("network_create", "network", "create"),
        ("POST", "/networks/prune") => op("network_prune", "network", "prune"),
        ("GET", "/networks/{id}") => op("network_inspect", "network", "inspect"),
        ("DELETE", "/networks/{id}") => op("network_remove", "network", "destroy"),
        ("POST", "/networks/{id}/connect") => op("network_connect", "network", "connect"),
        ("POST", "/networks/{id}/disconnect") => op("network_disconnect", "network", "disconnect"),
        _ => return None,
    })
}

/// An operation that changes something (logged at INFO, and an event); the rest read.
pub fn changes(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD)
}

/// The objects an operation touched, by type: a network, a sandbox, a policy, a node, an
/// OCI container id.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Objects {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
}

impl Objects {
    fn slot(&mut self, object: &str) -> Option<&mut Option<String>> {
        match object {
            "network" => Some(&mut self.network),
            "sandbox" => Some(&mut self.sandbox),
            "policy" => Some(&mut self.policy),
            "node" => Some(&mut self.node),
            "container" => Some(&mut self.container),
            _ => None,
        }
    }

    fn set(&mut self, object: &str, value: &str) {
        if value.is_empty() {
            return;
        }
        if let Some(slot) = self.slot(object) {
            if slot.is_none() {
                *slot = Some(value.to_string());
            }
        }
    }

    /// The value for a filter key (`network`, `sandbox` or Docker's `container`, ...).
    pub fn get(&self, key: &str) -> Option<&str> {
        let value = match key {
            "network" => &self.network,
            "sandbox" => &self.sandbox,
            "policy" => &self.policy,
            "node" => &self.node,
            "container" | "id" => &self.container,
            _ => return None,
        };
        value.as_deref()
    }

    /// Reads them from what the request and its answer carry: the path's parameters
    /// first, then the request's fields, then the answer's (a name netd chose, the
    /// policies a file held).
    pub fn of(
        operation: &Operation,
        params: &[(String, String)],
        request: Option<&Value>,
        answer: Option<&Value>,
    ) -> Objects {
        let mut objects = Objects::default();
        let param = |key: &str| {
            params
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.as_str())
        };
        match (
            operation.object,
            param("namespace"),
            param("name"),
            param("id"),
        ) {
            ("policy", Some(namespace), Some(name), _) => {
                objects.set("policy", &format!("{namespace}/{name}"))
            }
            ("sandbox", _, _, Some(id)) => objects.set("container", id),
            (object, _, Some(name), _) | (object, _, _, Some(name)) => objects.set(object, name),
            _ => {}
        }
        let field = |v: Option<&Value>, key: &str| -> Option<String> {
            v?.get(key)?.as_str().map(str::to_string)
        };
        for body in [request, answer] {
            if let Some(name) = field(body, "name").or_else(|| field(body, "Name")) {
                objects.set(operation.object, &name);
            }
            for (key, object) in [
                ("network", "network"),
                ("container", "sandbox"),
                ("Container", "sandbox"),
                ("container_id", "container"),
            ] {
                if let Some(value) = field(body, key) {
                    objects.set(object, &value);
                }
            }
        }
        if operation.object == "policy" && objects.policy.is_none() {
            let applied: Vec<&str> = answer
                .and_then(|a| a.get("applied"))
                .and_then(Value::as_array)
                .map(|list| {
                    list.iter()
                        .filter_map(|p| p.get("policy").and_then(Value::as_str))
                        .collect()
                })
                .unwrap_or_default();
            if !applied.is_empty() {
                objects.policy = Some(applied.join(","));
            }
        }
        objects
    }

    /// `network=mynet sandbox=web`, for the log.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        for (key, value) in [
            ("network", &self.network),
            ("sandbox", &self.sandbox),
            ("policy", &self.policy),
            ("node", &self.node),
            ("container", &self.container),
        ] {
            if let Some(value) = value {
                parts.push(format!("{key}={value}"));
            }
        }
        parts.join(" ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn params(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn objects_come_from_the_path_the_request_and_the_answer() {
        let connect = netd(&Method::POST, "/networks/{name}/connect").unwrap_or(op("", "", ""));
        let objects = Objects::of(
            &connect,
            &params(&[("name", "mynet")]),
            Some(&json!({"container": "web", "aliases": []})),
            Some(&json!({"Id": "abc"})),
        );
        assert_eq!(objects.describe(), "network=mynet sandbox=web");

        let run = netd(&Method::POST, "/sandboxes").unwrap_or(op("", "", ""));
        let objects = Objects::of(
            &run,
            &[],
            Some(&json!({"network": "mynet", "publish": []})),
            Some(&json!({"Id": "0123", "Name": "eager_turing"})),
        );
        assert_eq!(objects.describe(), "network=mynet sandbox=eager_turing");

        let apply = netd(&Method::POST, "/policies").unwrap_or(op("", "", ""));
        let objects = Objects::of(
            &apply,
            &[],
            Some(&json!({"text": "..."})),
            Some(
                &json!({"applied": [{"policy": "prod/web", "action": "created"},
                                     {"policy": "prod/db", "action": "unchanged"}]}),
            ),
        );
        assert_eq!(objects.policy.as_deref(), Some("prod/web,prod/db"));

        let remove =
            netd(&Method::DELETE, "/policies/{namespace}/{name}").unwrap_or(op("", "", ""));
        let objects = Objects::of(
            &remove,
            &params(&[("namespace", "prod"), ("name", "web")]),
            None,
            None,
        );
        assert_eq!(objects.get("policy"), Some("prod/web"));

        let detach = netd(&Method::DELETE, "/containers/{id}").unwrap_or(op("", "", ""));
        let objects = Objects::of(&detach, &params(&[("id", "c0ffee")]), None, None);
        assert_eq!(objects.get("container"), Some("c0ffee"));
    }

    #[test]
    fn unknown_routes_are_no_operation() {
        assert_eq!(netd(&Method::GET, "/nosuch"), None);
        assert_eq!(docker(&Method::POST, "/networks"), None);
        let versioned = docker(&Method::POST, "/{version}/networks/create");
        assert_eq!(versioned.map(|o| o.name), Some("network_create"));
        assert!(changes(&Method::DELETE));
        assert!(!changes(&Method::HEAD));
    }
}
