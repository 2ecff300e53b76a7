//! Network policy by traffic, as Calico's connectivity checks do it: sandboxes with labels
//! in two namespaces, and the "internet" as an outside peer; every pair is probed over TCP
//! and UDP on several ports, and the observed matrix must equal the one Kubernetes'
//! NetworkPolicy semantics give, computed here independently of netd from the same
//! policy objects.

// Tests fail by panicking with a reason.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::io::Write;
use std::net::Ipv4Addr;
use std::process::Stdio;
use std::time::Duration;

use netd_tests::cluster::{cluster_host, create_cluster_network, wait_for_network, Etcd, Underlay};
use netd_tests::{run, Server, TestHost, INTERNET_IP};
use serde_json::{json, Value};

const PROBE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tools/policyprobe.py");
/// What every sandbox serves.
const PORTS: &[(&str, u16)] = &[("tcp", 80), ("tcp", 8080), ("udp", 5353)];

#[derive(Debug, Clone)]
struct Pod {
    name: String,
    namespace: String,
    labels: BTreeMap<String, String>,
    ip: Ipv4Addr,
    netns: String,
    /// Which of the world's hosts runs it.
    host: usize,
}

/// A probe's far end: a sandbox, or an address outside.
#[derive(Debug, Clone)]
enum Target {
    Pod(Pod),
    Outside(Ipv4Addr),
}

// ---- Kubernetes semantics, from the API reference, on the policy objects as JSON ----

fn selects(selector: &Value, labels: &BTreeMap<String, String>) -> bool {
    let by_label = selector["matchLabels"].as_object().is_none_or(|m| {
        m.iter()
            .all(|(k, v)| labels.get(k).map(String::as_str) == v.as_str())
    });
    let by_expression = selector["matchExpressions"].as_array().is_none_or(|list| {
        list.iter().all(|e| {
            let value = labels.get(e["key"].as_str().unwrap());
            let values: Vec<&str> = e["values"]
                .as_array()
                .map(|v| v.iter().map(|x| x.as_str().unwrap()).collect())
                .unwrap_or_default();
            match e["operator"].as_str().unwrap() {
                "In" => value.is_some_and(|v| values.contains(&v.as_str())),
                "NotIn" => value.is_none_or(|v| !values.contains(&v.as_str())),
                "Exists" => value.is_some(),
                "DoesNotExist" => value.is_none(),
                other => panic!("operator {other}"),
            }
        })
    });
    by_label && by_expression
}

fn namespace_of(policy: &Value) -> &str {
    policy["metadata"]["namespace"]
        .as_str()
        .unwrap_or("default")
}

fn types(policy: &Value) -> Vec<String> {
    match policy["spec"]["policyTypes"].as_array() {
        Some(list) => list
            .iter()
            .map(|t| t.as_str().unwrap().to_string())
            .collect(),
        None => {
            let mut out = vec!["Ingress".to_string()];
            if policy["spec"]["egress"]
                .as_array()
                .is_some_and(|e| !e.is_empty())
            {
                out.push("Egress".into());
            }
            out
        }
    }
}

fn in_block(block: &Value, ip: Ipv4Addr) -> bool {
    let contains = |cidr: &str| {
        let (net, len) = cidr.split_once('/').unwrap();
        let net: Ipv4Addr = net.parse().unwrap();
        let len: u32 = len.parse().unwrap();
        let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
        u32::from(ip) & mask == u32::from(net) & mask
    };
    contains(block["cidr"].as_str().unwrap())
        && !block["except"]
            .as_array()
            .is_some_and(|e| e.iter().any(|x| contains(x.as_str().unwrap())))
}

fn peer_matches(peer: &Value, policy_namespace: &str, target: &Target) -> bool {
    match target {
        Target::Outside(ip) => peer.get("ipBlock").is_some_and(|b| in_block(b, *ip)),
        Target::Pod(pod) => {
            if peer.get("ipBlock").is_some() {
                return false;
            }
            let namespace_ok = match peer.get("namespaceSelector") {
                Some(selector) => selects(
                    selector,
                    &BTreeMap::from([(
                        "kubernetes.io/metadata.name".to_string(),
                        pod.namespace.clone(),
                    )]),
                ),
                None => pod.namespace == policy_namespace,
            };
            namespace_ok
                && peer
                    .get("podSelector")
                    .is_none_or(|s| selects(s, &pod.labels))
        }
    }
}

fn port_matches(ports: &Value, proto: &str, port: u16) -> bool {
    let Some(list) = ports.as_array().filter(|l| !l.is_empty()) else {
        return true;
    };
    list.iter().any(|p| {
        let protocol = p["protocol"].as_str().unwrap_or("TCP").to_ascii_lowercase();
        let start = p["port"].as_u64().map(|n| n as u16);
        let end = p["endPort"].as_u64().map(|n| n as u16).or(start);
        protocol == proto && start.is_none_or(|s| (s..=end.unwrap()).contains(&port))
    })
}

/// Whether `direction` ("Ingress"/"Egress") lets `own` talk with `other`.
fn direction_allows(
    policies: &[Value],
    direction: &str,
    own: &Pod,
    other: &Target,
    proto: &str,
    port: u16,
) -> bool {
    let selecting: Vec<&Value> = policies
        .iter()
        .filter(|p| namespace_of(p) == own.namespace)
        .filter(|p| types(p).iter().any(|t| t == direction))
        .filter(|p| selects(&p["spec"]["podSelector"], &own.labels))
        .collect();
    if selecting.is_empty() {
        return true;
    }
    let (rules_key, peers_key) = match direction {
        "Ingress" => ("ingress", "from"),
        _ => ("egress", "to"),
    };
    selecting.iter().any(|policy| {
        policy["spec"][rules_key]
            .as_array()
            .into_iter()
            .flatten()
            .any(|rule| {
                let peers_ok = match rule[peers_key].as_array().filter(|l| !l.is_empty()) {
                    None => true,
                    Some(peers) => peers
                        .iter()
                        .any(|peer| peer_matches(peer, namespace_of(policy), other)),
                };
                peers_ok && port_matches(&rule["ports"], proto, port)
            })
    })
}

fn expected(policies: &[Value], src: &Pod, dst: &Target, proto: &str, port: u16) -> bool {
    let egress = direction_allows(policies, "Egress", src, dst, proto, port);
    let ingress = match dst {
        Target::Pod(pod) => direction_allows(
            policies,
            "Ingress",
            pod,
            &Target::Pod(src.clone()),
            proto,
            port,
        ),
        Target::Outside(_) => true,
    };
    egress && ingress
}

// ---- the world: sandboxes, servers, probes ----

/// The test hosts (one, or two in a cluster), each with its own "internet", the
/// network `net` on all of them, and the sandboxes with their probe servers.
struct World {
    _servers: Vec<Server>,
    hosts: Vec<TestHost>,
    pods: Vec<Pod>,
    /// The subnet of `net` (the whole cluster subnet on a cluster network).
    subnet: &'static str,
    cluster: Option<(Etcd, Underlay)>,
}

/// A sandbox to start: name, namespace, labels.
type PodSpec = (
    &'static str,
    &'static str,
    &'static [(&'static str, &'static str)],
);

/// The sandboxes every world starts with.
const PODS: &[PodSpec] = &[
    ("a", "prod", &[("app", "web")]),
    ("b", "prod", &[("app", "api"), ("tier", "back")]),
    ("c", "prod", &[("app", "db"), ("tier", "back")]),
    ("d", "dev", &[("app", "web")]),
];

impl World {
    /// One host.
    fn new() -> World {
        let mut host = TestHost::new();
        host.add_internet();
        host.netctl_ok(&["network", "create", "--subnet", "10.41.0.0/24", "net"]);
        let mut world = World::of(vec![host], "10.41.0.0/24", None);
        for (name, namespace, labels) in PODS {
            world.add_pod(0, name, namespace, labels);
        }
        world
    }

    /// Two hosts of a cluster with a vxlan network; the sandboxes alternate between them.
    fn cluster() -> World {
        let mut underlay = Underlay::new();
        let etcd = Etcd::start(&mut underlay, &["192.168.60.101"]);
        let mut hosts: Vec<TestHost> = (1..=2u8)
            .map(|n| cluster_host(&underlay, &etcd, n, &format!("node{n}"), &[]))
            .collect();
        for host in &mut hosts {
            host.add_internet();
        }
        create_cluster_network(&hosts[0], "vxlan", "10.245.0.0/16", "net");
        wait_for_network(&hosts.iter().collect::<Vec<_>>(), "net", 2);
        let mut world = World::of(hosts, "10.245.0.0/16", Some((etcd, underlay)));
        for (i, (name, namespace, labels)) in PODS.iter().enumerate() {
            world.add_pod(i % 2, name, namespace, labels);
        }
        // Every host knows every sandbox: each resolves every name (what a node publishes
        // of its sandboxes carries their labels too).
        for (a, b) in [("a", "b"), ("b", "a")] {
            for pod in &world.pods {
                let found = TestHost::eventually(Duration::from_secs(5), || {
                    let out = world.host_of(a).exec(a, &["getent", "hosts", &pod.name]);
                    out.status.success()
                });
                assert!(found, "{} does not resolve on {b}'s peer", pod.name);
            }
        }
        world
    }

    fn of(hosts: Vec<TestHost>, subnet: &'static str, cluster: Option<(Etcd, Underlay)>) -> World {
        let mut world = World {
            _servers: Vec::new(),
            hosts,
            pods: Vec::new(),
            subnet,
            cluster,
        };
        for i in 0..world.hosts.len() {
            let inet = world.hosts[i]
                .internet_cmd("python3", &[PROBE, "serve", "tcp:80"])
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .expect("internet server");
            world._servers.push(ready(inet));
        }
        world
    }

    /// The policy keys in the cluster store, as `key=value` lines.
    fn stored_policies(&self) -> String {
        let (etcd, _) = self.cluster.as_ref().expect("a cluster world");
        etcd.dump("/netd/policies/")
    }

    fn host_of(&self, name: &str) -> &TestHost {
        let pod = self.pods.iter().find(|p| p.name == name).unwrap();
        &self.hosts[pod.host]
    }

    fn add_pod(&mut self, host: usize, name: &str, namespace: &str, labels: &[(&str, &str)]) {
        let mut args = vec![
            "run".to_string(),
            "--name".into(),
            name.into(),
            "--network".into(),
            "net".into(),
            "--label".into(),
            format!("netd.namespace={namespace}"),
        ];
        for (k, v) in labels {
            args.push("--label".into());
            args.push(format!("{k}={v}"));
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let on = &self.hosts[host];
        on.netctl_ok(&args);
        let netns = on.inspect(name)["NetworkSettings"]["SandboxKey"]
            .as_str()
            .unwrap()
            .to_string();
        let specs: Vec<String> = PORTS.iter().map(|(p, n)| format!("{p}:{n}")).collect();
        let mut serve = vec![PROBE, "serve"];
        serve.extend(specs.iter().map(String::as_str));
        let server = TestHost::in_netns(&netns, "python3", &serve)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("server");
        self._servers.push(ready(server));
        let mut labels: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        labels.insert("netd.namespace".into(), namespace.into());
        self.pods.push(Pod {
            name: name.into(),
            namespace: namespace.into(),
            labels,
            ip: on.ip_of(name, "net").parse().unwrap(),
            netns,
            host,
        });
    }

    fn relabel(&mut self, name: &str, change: &str) {
        self.host_of(name).netctl_ok(&["label", name, change]);
        let pod = self.pods.iter_mut().find(|p| p.name == name).unwrap();
        match change.split_once('=') {
            Some((k, v)) => {
                pod.labels.insert(k.into(), v.into());
            }
            None => {
                pod.labels.remove(change.trim_end_matches('-'));
            }
        }
    }

    /// `policy apply` on one host; returns once every host lists the same policies.
    fn apply_on(&self, host: usize, policies: &[Value]) {
        let list = json!({"apiVersion": "v1", "kind": "List", "items": policies});
        let out = apply_text(&self.hosts[host], &list.to_string());
        assert!(out.status.success(), "policy apply: {out:?}");
        self.converge(host);
    }

    fn apply(&self, policies: &[Value]) {
        self.apply_on(0, policies);
    }

    fn remove_on(&self, host: usize, policies: &[Value]) {
        for p in policies {
            self.hosts[host].netctl_ok(&[
                "policy",
                "rm",
                "-n",
                namespace_of(p),
                p["metadata"]["name"].as_str().unwrap(),
            ]);
        }
        self.converge(host);
    }

    fn remove_all(&self, policies: &[Value]) {
        self.remove_on(0, policies);
    }

    /// Waits until every host lists what `from` lists: within a second on a cluster.
    fn converge(&self, from: usize) {
        let listed = |h: &TestHost| h.netctl_ok(&["policy", "ls", "-A"]);
        let want = listed(&self.hosts[from]);
        for host in &self.hosts {
            assert!(
                TestHost::eventually(Duration::from_secs(1), || listed(host) == want),
                "{} does not list the policies {} lists within 1 s",
                host.name,
                self.hosts[from].name
            );
        }
    }

    /// Waits until `src` sees `verdict` for `dst` (`tcp:80`); returns the seconds it took.
    fn until(&self, src: &str, dst: &str, target: &str, verdict: &str, seconds: f64) -> f64 {
        let src = self.pods.iter().find(|p| p.name == src).unwrap();
        let dst = self.pods.iter().find(|p| p.name == dst).unwrap();
        let out = run(&mut TestHost::in_netns(
            &src.netns,
            "python3",
            &[
                PROBE,
                "wait",
                verdict,
                &format!("{}:{target}", dst.ip),
                &seconds.to_string(),
            ],
        ));
        let said = String::from_utf8_lossy(&out.stdout).trim().to_string();
        assert!(
            out.status.success(),
            "{} -> {} {target}: {said}",
            src.name,
            dst.name
        );
        said.parse().unwrap()
    }

    /// Every (source, target, proto, port) probed, with what was observed and expected.
    fn check(&self, what: &str, policies: &[Value]) {
        let internet: Ipv4Addr = INTERNET_IP.parse().unwrap();
        let mut wrong = Vec::new();
        let results: Vec<(String, String)> = std::thread::scope(|scope| {
            let handles: Vec<_> = self
                .pods
                .iter()
                .map(|src| {
                    let mut targets: Vec<String> = self
                        .pods
                        .iter()
                        .filter(|p| p.name != src.name)
                        .flat_map(|p| {
                            PORTS
                                .iter()
                                .map(move |(pr, n)| format!("{}:{pr}:{n}", p.ip))
                        })
                        .collect();
                    targets.push(format!("{internet}:tcp:80"));
                    scope.spawn(move || {
                        let mut args = vec![PROBE, "probe"];
                        args.extend(targets.iter().map(String::as_str));
                        let out = run(&mut TestHost::in_netns(&src.netns, "python3", &args));
                        (
                            src.name.clone(),
                            String::from_utf8_lossy(&out.stdout).into_owned(),
                        )
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for (src_name, text) in results {
            let src = self.pods.iter().find(|p| p.name == src_name).unwrap();
            for line in text.lines() {
                let (target, verdict) = line.split_once(' ').unwrap();
                let mut parts = target.split(':');
                let ip: Ipv4Addr = parts.next().unwrap().parse().unwrap();
                let proto = parts.next().unwrap();
                let port: u16 = parts.next().unwrap().parse().unwrap();
                let dst = match self.pods.iter().find(|p| p.ip == ip) {
                    Some(pod) => Target::Pod(pod.clone()),
                    None => Target::Outside(ip),
                };
                let want = expected(policies, src, &dst, proto, port);
                let got = verdict == "ok";
                if want != got {
                    let dst_name = match &dst {
                        Target::Pod(p) => p.name.clone(),
                        Target::Outside(ip) => ip.to_string(),
                    };
                    wrong.push(format!(
                        "{src_name} -> {dst_name} {proto}/{port}: expected {}, observed {verdict}",
                        if want { "ok" } else { "blocked" }
                    ));
                }
            }
        }
        assert!(wrong.is_empty(), "{what}:\n{}", wrong.join("\n"));
    }
}

/// `netctl policy apply -f -` with `text` on its standard input.
fn apply_text(host: &TestHost, text: &str) -> std::process::Output {
    let mut child = host
        .netctl_cmd(&["policy", "apply", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

/// Waits for a probe server to say it listens.
fn ready(mut child: std::process::Child) -> Server {
    use std::io::BufRead;
    let stdout = child.stdout.take().unwrap();
    let mut line = String::new();
    std::io::BufReader::new(stdout)
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "ready");
    Server::new(child)
}

fn policy(namespace: &str, name: &str, spec: Value) -> Value {
    json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
           "metadata": {"name": name, "namespace": namespace}, "spec": spec})
}

/// The scenarios the issue names, each a set of policies applied together; `subnet` is
/// the network's (an ipBlock excepts it).
fn scenarios(subnet: &str) -> Vec<(&'static str, Vec<Value>)> {
    vec![
        (
            "default deny ingress in prod",
            vec![policy("prod", "deny-in", json!({"podSelector": {}}))],
        ),
        (
            "default deny egress in prod",
            vec![policy(
                "prod",
                "deny-out",
                json!({"podSelector": {}, "policyTypes": ["Egress"]}),
            )],
        ),
        (
            "allow from a pod selector, one port",
            vec![policy(
                "prod",
                "api",
                json!({"podSelector": {"matchLabels": {"app": "api"}},
                       "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "web"}}}],
                                    "ports": [{"protocol": "TCP", "port": 8080}]}]}),
            )],
        ),
        (
            "allow from a namespace selector",
            vec![policy(
                "prod",
                "db",
                json!({"podSelector": {"matchLabels": {"app": "db"}},
                       "ingress": [{"from": [{"namespaceSelector":
                           {"matchLabels": {"kubernetes.io/metadata.name": "dev"}}}]}]}),
            )],
        ),
        (
            "namespace and pod selector combined, expressions, UDP",
            vec![policy(
                "prod",
                "back",
                json!({"podSelector": {"matchExpressions": [{"key": "tier", "operator": "In", "values": ["back"]}]},
                       "ingress": [{"from": [{"namespaceSelector": {},
                                              "podSelector": {"matchExpressions": [{"key": "app", "operator": "NotIn", "values": ["api"]}]}}],
                                    "ports": [{"protocol": "UDP", "port": 5353}]}]}),
            )],
        ),
        (
            "egress: an ipBlock with except, port ranges with endPort",
            vec![policy(
                "prod",
                "out",
                json!({"podSelector": {"matchLabels": {"app": "web"}}, "policyTypes": ["Egress"],
                       "egress": [
                           {"to": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": [subnet]}}]},
                           {"to": [{"podSelector": {}}], "ports": [{"port": 8000, "endPort": 8100}]}]}),
            )],
        ),
        (
            "two policies selecting the same sandboxes: the union",
            vec![
                policy(
                    "prod",
                    "one",
                    json!({"podSelector": {"matchLabels": {"tier": "back"}},
                           "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "web"}}}],
                                        "ports": [{"port": 80}]}]}),
                ),
                policy(
                    "prod",
                    "two",
                    json!({"podSelector": {"matchLabels": {"app": "db"}},
                           "ingress": [{"from": [{"namespaceSelector": {}}], "ports": [{"protocol": "UDP", "port": 5353}]}]}),
                ),
            ],
        ),
    ]
}

/// Tier `back` takes traffic only from `app=web`: the policy the label scenarios use.
fn web_only() -> Vec<Value> {
    vec![policy(
        "prod",
        "web-only",
        json!({"podSelector": {"matchLabels": {"tier": "back"}},
               "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "web"}}}]}]}),
    )]
}

#[test]
fn the_observed_matrix_is_kubernetes_semantics() {
    let mut world = World::new();
    let host = &world.hosts[0];
    let listed = |filter: &str| {
        let mut names: Vec<String> = host
            .netctl_ok(&["ps", "--filter", filter, "--format", "{{.Names}}"])
            .lines()
            .map(str::to_string)
            .collect();
        names.sort();
        names.join(",")
    };
    assert_eq!(listed("label=app=web"), "a,d");
    assert_eq!(listed("label=tier"), "b,c");
    assert_eq!(listed("label=netd.namespace=dev"), "d");
    let info = host.inspect("b");
    assert_eq!(info["Config"]["Labels"]["tier"], "back");
    world.check("no policy: everything reaches everything", &[]);

    for (what, policies) in &scenarios(world.subnet) {
        world.apply(policies);
        world.check(what, policies);
        world.remove_all(policies);
    }
    world.check("every policy removed", &[]);

    // A label changed on a running sandbox, and a sandbox joining a selected set.
    let policies = web_only();
    world.apply(&policies);
    world.check("before relabelling", &policies);
    world.relabel("b", "app=web");
    world.check("b is now app=web: allowed into c", &policies);
    world.relabel("c", "tier-");
    world.check("c left the selected set: open again", &policies);
    world.add_pod(0, "e", "prod", &[("tier", "back"), ("app", "cache")]);
    world.check("e joins the selected set", &policies);

    // Repaired by reconcile after the filter table or the sets are flushed by hand.
    let host = &world.hosts[0];
    host.sh_ok("iptables", &["-F"]);
    let repairs = host.netctl_ok(&["system", "reconcile"]);
    assert!(repairs.contains("NETD-"), "{repairs}");
    world.check("after iptables -F and reconcile", &policies);
    host.sh_ok("ipset", &["flush"]);
    let repairs = host.netctl_ok(&["system", "reconcile"]);
    assert!(repairs.contains("policy set"), "{repairs}");
    world.check("after ipset flush and reconcile", &policies);
    world.remove_all(&policies);
    world.check("the last policy removed", &[]);
    assert!(
        TestHost::eventually(Duration::from_secs(2), || {
            !host.sh_ok("ipset", &["list", "-n"]).contains("NETD-")
        }),
        "no set of netd's is left"
    );
}

/// The same matrix across two hosts of a cluster network: sandboxes a and c on one host,
/// b and d on the other; policies applied on one host and removed on the other; labels
/// changed on one host followed by the other within a second.
#[test]
fn across_two_hosts_of_a_cluster_network() {
    let mut world = World::cluster();
    let (a_host, b_host) = (
        world.host_of("a").name.clone(),
        world.host_of("b").name.clone(),
    );
    assert_ne!(a_host, b_host, "the sandboxes are spread over the hosts");
    world.check("no policy: everything reaches everything", &[]);
    for (i, (what, policies)) in scenarios(world.subnet).iter().enumerate() {
        world.apply_on(i % 2, policies);
        world.check(what, policies);
        world.remove_on((i + 1) % 2, policies);
    }
    world.check("every policy removed", &[]);

    // The policies are the cluster's: in the store, one key each.
    let policies = web_only();
    world.apply_on(1, &policies);
    let keys = world.stored_policies();
    assert!(
        keys.starts_with("/netd/policies/prod/web-only=") && keys.lines().count() == 1,
        "{keys}"
    );
    world.check("before relabelling", &policies);
    // b (host 2) becomes app=web: c (host 1) takes it within a second.
    world.until("b", "c", "tcp:80", "blocked", 0.5);
    world.relabel("b", "app=web");
    let took = world.until("b", "c", "tcp:80", "ok", 1.0);
    eprintln!("a label changed on one host was followed on the other in {took:.3} s");
    world.check("b is now app=web: allowed into c", &policies);
    world.relabel("c", "tier-");
    world.check("c left the selected set: open again", &policies);
    world.add_pod(1, "e", "prod", &[("tier", "back"), ("app", "cache")]);
    world.until("a", "e", "tcp:80", "ok", 1.0);
    world.check("e joins the selected set on the other host", &policies);

    // A bad file on a clustered node stores nothing.
    let before = world.stored_policies();
    let out = apply_text(
        &world.hosts[0],
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: fine}\nspec: {podSelector: {}}\n---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: bad}\nspec: {podSelector: {}, ingress: [{ports: [{port: 0}]}]}\n",
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("document 2: spec.ingress[0].ports[0].port"),
        "{out:?}"
    );
    assert_eq!(world.stored_policies(), before);

    world.remove_on(0, &policies);
    world.check("the last policy removed", &[]);
    assert_eq!(world.stored_policies(), "");
}

#[test]
fn bad_policies_change_nothing() {
    let host = TestHost::new();
    host.netctl_ok(&["network", "create", "--subnet", "10.42.0.0/24", "net"]);
    host.netctl_ok(&[
        "run",
        "--name",
        "a",
        "--network",
        "net",
        "--label",
        "app=web",
    ]);
    let good = policy(
        "default",
        "keep",
        json!({"podSelector": {"matchLabels": {"app": "web"}}, "ingress": [{}]}),
    );
    let apply = |text: &str| apply_text(&host, text);
    assert!(apply(&good.to_string()).status.success());
    let snapshot = || {
        (
            host.iptables(),
            host.sh_ok("ipset", &["save"]),
            host.netctl_ok(&["policy", "ls", "-A"]),
        )
    };
    let before = snapshot();
    let valid_second = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: fine}\nspec: {podSelector: {}}\n";
    for (text, says) in [
        ("{not yaml".to_string(), "not YAML or JSON"),
        (
            good.to_string().replace("networking.k8s.io/v1", "networking.k8s.io/v2"),
            "apiVersion",
        ),
        (
            format!("{valid_second}---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: bad}}\nspec: {{podSelector: {{}}, ingress: [{{ports: [{{port: 99999}}]}}]}}\n"),
            "document 2: spec.ingress[0].ports[0].port",
        ),
        (
            format!("{valid_second}---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: bad}}\nspec: {{podSelector: {{}}, egress: [{{to: [{{ipBlock: {{cidr: 10.0.0.0/8, except: [192.168.0.0/16]}}}}]}}]}}\n"),
            "except[0]",
        ),
        (
            valid_second.replace("podSelector: {}", "podSelector: {matchLabels: {\"a b\": x}}"),
            "matchLabels",
        ),
        (valid_second.replace("spec: {", "spec: {tls: 1, "), "spec.tls"),
    ] {
        let out = apply(&text);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{text}");
        assert!(err.contains(says), "{text}\n-> {err}");
        assert_eq!(snapshot(), before, "{text}: nothing may change");
    }
    for (args, says) in [
        (vec!["label", "a", "bad key=1"], "bad key"),
        (
            vec!["label", "a", "netd.namespace=Not_A_Label"],
            "netd.namespace",
        ),
        (vec!["label", "nobody", "app=x"], "nobody"),
        (vec!["policy", "rm", "missing"], "missing"),
        (
            vec![
                "run",
                "--name",
                "x",
                "--network",
                "net",
                "--label",
                "novalue",
            ],
            "--label",
        ),
    ] {
        let err = host.netctl_err(&args);
        assert!(err.contains(says), "{args:?}: {err}");
    }
    assert_eq!(snapshot(), before);
}
