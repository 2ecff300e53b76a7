//! How listings print: tables, ids only, `--format` templates, `docker port` lines.

use std::collections::BTreeMap;

use netd::api::types::{NetworkInfo, NetworkPolicy, PortMap, SandboxInfo};

pub fn short(id: &str) -> String {
    id.chars().take(12).collect()
}

fn print_table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.len());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut out = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<w$}   ", w = widths[i]));
            }
        }
        println!("{}", out.trim_end());
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}

/// Prints rows as a table, ids only (`-q`), or through a `--format` template whose
/// `{{.Key}}` placeholders name the columns.
fn print_rows(
    header: &[&str],
    keys: &[&str],
    rows: &[Vec<String>],
    quiet: bool,
    format: Option<&str>,
) {
    if quiet {
        rows.iter().for_each(|r| println!("{}", r[0]));
    } else if let Some(template) = format {
        let template = template.replace("\\t", "\t");
        for row in rows {
            let mut line = template.clone();
            for (key, cell) in keys.iter().zip(row) {
                line = line.replace(&format!("{{{{.{key}}}}}"), cell);
            }
            println!("{line}");
        }
    } else {
        print_table(header, rows);
    }
}

pub fn print_nodes(nodes: &[netd::cluster::NodeLease]) {
    let rows: Vec<Vec<String>> = nodes
        .iter()
        .map(|n| {
            vec![
                n.name.clone(),
                n.node_ip.to_string(),
                n.network.clone(),
                n.subnet.to_string(),
                n.backend.clone(),
                match n.expires_in {
                    Some(seconds) => humantime::format_duration(std::time::Duration::from_secs(
                        u64::try_from(seconds).unwrap_or(0),
                    ))
                    .to_string(),
                    None => "-".into(),
                },
            ]
        })
        .collect();
    print_table(
        &[
            "NAME",
            "NODE IP",
            "NETWORK",
            "SUBNET",
            "BACKEND",
            "EXPIRES IN",
        ],
        &rows,
    );
}

pub fn print_networks(list: &[NetworkInfo], quiet: bool, format: Option<&str>) {
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|n| {
            vec![
                short(&n.id),
                n.name.clone(),
                n.driver.clone(),
                n.scope.clone(),
            ]
        })
        .collect();
    let header = ["NETWORK ID", "NAME", "DRIVER", "SCOPE"];
    let keys = ["ID", "Name", "Driver", "Scope"];
    print_rows(&header, &keys, &rows, quiet, format);
}

pub fn print_sandboxes(list: &[SandboxInfo], quiet: bool, format: Option<&str>) {
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|s| {
            let nets = &s.network_settings.networks;
            let names: Vec<String> = nets.keys().cloned().collect();
            let ips: Vec<String> = nets.values().map(|n| n.ip_address.clone()).collect();
            vec![
                short(&s.id),
                ago(&s.created),
                if s.state.running { "Up" } else { "Dead" }.to_string(),
                if names.is_empty() {
                    s.host_config.network_mode.clone()
                } else {
                    names.join(",")
                },
                ips.join(","),
                port_lines(&s.network_settings.ports, None).join(", "),
                s.name.trim_start_matches('/').to_string(),
            ]
        })
        .collect();
    let header = [
        "CONTAINER ID",
        "CREATED",
        "STATUS",
        "NETWORKS",
        "IP ADDRESS",
        "PORTS",
        "NAMES",
    ];
    let keys = [
        "ID",
        "CreatedAt",
        "Status",
        "Networks",
        "IPAddress",
        "Ports",
        "Names",
    ];
    print_rows(&header, &keys, &rows, quiet, format);
}

/// `docker port` lines: `80/tcp -> 0.0.0.0:8080`, or just `0.0.0.0:8080` for one port.
pub fn port_lines(ports: &PortMap, only: Option<&str>) -> Vec<String> {
    let wanted = only.map(|p| {
        if p.contains('/') {
            p.to_string()
        } else {
            format!("{p}/tcp")
        }
    });
    let mut keys: Vec<&String> = ports.keys().collect();
    keys.sort_by_key(|k| {
        let (port, proto) = k.split_once('/').unwrap_or((k.as_str(), ""));
        (port.parse::<u32>().unwrap_or(0), proto.to_string())
    });
    let mut out = Vec::new();
    for key in keys {
        if wanted.as_ref().is_some_and(|w| w != key) {
            continue;
        }
        for binding in &ports[key] {
            let host = format!("{}:{}", binding.host_ip, binding.host_port);
            out.push(if wanted.is_some() {
                host
            } else {
                format!("{key} -> {host}")
            });
        }
    }
    out
}

fn ago(rfc3339: &str) -> String {
    let Ok(then) = humantime::parse_rfc3339_weak(rfc3339) else {
        return rfc3339.to_string();
    };
    let secs = std::time::SystemTime::now()
        .duration_since(then)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    match secs {
        0..=59 => format!("{secs} seconds ago"),
        60..=3599 => format!("{} minutes ago", secs / 60),
        3600..=86399 => format!("{} hours ago", secs / 3600),
        _ => format!("{} days ago", secs / 86400),
    }
}

/// `--filter label=KEY[=VALUE]` and `--filter name=NAME`, as `docker ps` takes them.
#[derive(Debug, Default)]
pub struct Filters {
    labels: Vec<(String, Option<String>)>,
    names: Vec<String>,
}

impl Filters {
    pub fn parse(specs: &[String]) -> anyhow::Result<Filters> {
        let mut filters = Filters::default();
        for spec in specs {
            match spec.split_once('=') {
                Some(("label", rest)) => {
                    let (key, value) = match rest.split_once('=') {
                        Some((k, v)) => (k.to_string(), Some(v.to_string())),
                        None => (rest.to_string(), None),
                    };
                    filters.labels.push((key, value));
                }
                Some(("name", name)) => filters.names.push(name.to_string()),
                _ => anyhow::bail!("--filter {spec}: give label=KEY, label=KEY=VALUE or name=NAME"),
            }
        }
        Ok(filters)
    }

    pub fn admit(&self, name: &str, labels: &BTreeMap<String, String>) -> bool {
        self.labels.iter().all(|(k, v)| match v {
            Some(v) => labels.get(k) == Some(v),
            None => labels.contains_key(k),
        }) && self.names.iter().all(|n| name.contains(n.as_str()))
    }
}

pub fn print_policies(list: &[NetworkPolicy]) {
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|p| {
            let selector = if p.spec.pod_selector.is_empty() {
                "<all>".to_string()
            } else {
                serde_json::to_string(&p.spec.pod_selector).unwrap_or_default()
            };
            let types: Vec<String> = p
                .spec
                .policy_types
                .iter()
                .map(|t| format!("{t:?}"))
                .collect();
            vec![
                p.metadata.namespace.clone(),
                p.metadata.name.clone(),
                selector,
                types.join(","),
            ]
        })
        .collect();
    print_table(
        &["NAMESPACE", "NAME", "POD-SELECTOR", "POLICY-TYPES"],
        &rows,
    );
}

/// `system info`, one `Key: value` line each, as `docker info` prints.
pub fn print_system_info(info: &netd::api::types::SystemInfo) {
    let uptime = humantime::format_duration(std::time::Duration::from_secs(info.uptime_seconds));
    println!("Version: {}", info.version);
    println!("Firewall backend: {}", info.firewall_backend);
    println!("Networks: {}", info.networks);
    println!("Sandboxes: {}", info.sandboxes);
    println!("Published ports: {}", info.published_ports);
    println!("Network policies: {}", info.policies);
    println!("Root directory: {}", info.root.display());
    println!("Run directory: {}", info.run_dir.display());
    println!(
        "Cluster store: {}",
        info.cluster_store.as_deref().unwrap_or("none")
    );
    println!("Uptime: {uptime}");
}
