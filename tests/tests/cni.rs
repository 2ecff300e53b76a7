//! The CNI plugins run the way a runtime runs them (environment + config on stdin, the
//! chain's results passed along), in test hosts, checked by the kernel's state, the IPAM
//! files and real traffic; mixed with the reference plugins from containernetworking-plugins.

// Tests fail by panicking with a reason.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use netd_tests::{bin_dir, run, serve_hello, tcp_answer, TestHost, HOST_UPLINK_IP, INTERNET_IP};
use serde_json::{json, Value};

const VERSIONS: [&str; 5] = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];
const REFERENCE: &str = "/usr/lib/cni";

/// What a plugin printed and whether it succeeded.
#[derive(Debug)]
struct Answer {
    ok: bool,
    json: Value,
}

/// A minimal CNI runtime (what libcni does), running plugins inside a test host.
struct Runtime<'a> {
    host: &'a TestHost,
    cni_path: String,
}

impl<'a> Runtime<'a> {
    fn new(host: &'a TestHost) -> Self {
        Runtime {
            host,
            cni_path: format!("{}:{REFERENCE}", bin_dir().display()),
        }
    }

    fn binary(plugin: &str) -> PathBuf {
        if plugin.starts_with("netd-") {
            bin_dir().join(plugin)
        } else {
            Path::new(REFERENCE).join(plugin)
        }
    }

    /// Runs one plugin with `env` (CNI_* variables) and `stdin`.
    fn exec_raw(&self, plugin: &str, env: &[(&str, &str)], stdin: &[u8]) -> Answer {
        let mut cmd = self
            .host
            .cmd(Self::binary(plugin).to_str().expect("utf-8 path"), &[]);
        // The plugins' lock and remembered rule handles stay with the test host.
        cmd.env("NETD_CNI_RUN_DIR", self.host.dir.path().join("netd-cni"));
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("run plugin");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(stdin)
            .expect("write config");
        let out = child.wait_with_output().expect("plugin output");
        let text = String::from_utf8_lossy(&out.stdout);
        let json = if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or_else(|e| {
                panic!(
                    "{plugin} printed something that is not JSON ({e}): {text} {}",
                    String::from_utf8_lossy(&out.stderr)
                )
            })
        };
        Answer {
            ok: out.status.success(),
            json,
        }
    }

    fn exec(&self, plugin: &str, command: &str, id: &str, netns: &str, conf: &Value) -> Answer {
        let env = [
            ("CNI_COMMAND", command),
            ("CNI_CONTAINERID", id),
            ("CNI_NETNS", netns),
            ("CNI_IFNAME", "eth0"),
            ("CNI_PATH", self.cni_path.as_str()),
        ];
        self.exec_raw(plugin, &env, conf.to_string().as_bytes())
    }

    /// One plugin's configuration in a list: name, version, granted runtimeConfig,
    /// prevResult.
    fn plugin_conf(list: &Value, plugin: &Value, runtime: &Value, prev: Option<&Value>) -> Value {
        let mut conf = plugin.clone();
        let obj = conf.as_object_mut().expect("plugin object");
        obj.insert("name".into(), list["name"].clone());
        obj.insert("cniVersion".into(), list["cniVersion"].clone());
        let caps = obj.remove("capabilities").unwrap_or(json!({}));
        let granted: serde_json::Map<String, Value> = runtime
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(k, _)| caps.get(k.as_str()).and_then(Value::as_bool) == Some(true))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if !granted.is_empty() {
            obj.insert("runtimeConfig".into(), Value::Object(granted));
        }
        if let Some(prev) = prev {
            obj.insert("prevResult".into(), prev.clone());
        }
        conf
    }

    /// ADD through the whole list; the last plugin's result.
    fn add(&self, list: &Value, id: &str, netns: &str, runtime: &Value) -> Result<Value, Value> {
        let mut prev: Option<Value> = None;
        for plugin in list["plugins"].as_array().expect("plugins") {
            let conf = Self::plugin_conf(list, plugin, runtime, prev.as_ref());
            let answer = self.exec(
                plugin["type"].as_str().expect("type"),
                "ADD",
                id,
                netns,
                &conf,
            );
            if !answer.ok {
                return Err(answer.json);
            }
            prev = Some(answer.json);
        }
        Ok(prev.unwrap_or(Value::Null))
    }

    /// DEL (or CHECK) through the list, in reverse for DEL, with the ADD result.
    fn each(
        &self,
        command: &str,
        list: &Value,
        id: &str,
        netns: &str,
        runtime: &Value,
        prev: Option<&Value>,
    ) -> Result<(), Value> {
        let mut plugins: Vec<&Value> = list["plugins"]
            .as_array()
            .expect("plugins")
            .iter()
            .collect();
        if command == "DEL" {
            plugins.reverse();
        }
        for plugin in plugins {
            let conf = Self::plugin_conf(list, plugin, runtime, prev);
            let answer = self.exec(
                plugin["type"].as_str().expect("type"),
                command,
                id,
                netns,
                &conf,
            );
            if !answer.ok {
                return Err(answer.json);
            }
        }
        Ok(())
    }
}

fn chain(
    version: &str,
    name: &str,
    bridge: &str,
    subnet: &str,
    data: &Path,
    types: [&str; 3],
) -> Value {
    json!({
        "cniVersion": version,
        "name": name,
        "plugins": [
            {"type": types[0], "bridge": bridge, "isGateway": true, "ipMasq": true,
             "hairpinMode": true,
             "ipam": {"type": types[1], "ranges": [[{"subnet": subnet}]],
                      "routes": [{"dst": "0.0.0.0/0"}], "dataDir": data}},
            {"type": types[2], "capabilities": {"portMappings": true}, "snat": true}
        ]
    })
}

fn ours(version: &str, name: &str, bridge: &str, subnet: &str, data: &Path) -> Value {
    chain(
        version,
        name,
        bridge,
        subnet,
        data,
        ["netd-bridge", "netd-ipam", "netd-portmap"],
    )
}

fn mapping(host_port: u16, container_port: u16) -> Value {
    json!({"portMappings": [{"hostPort": host_port, "containerPort": container_port, "protocol": "tcp"}]})
}

fn ip_in(netns: &str, args: &[&str]) -> String {
    let out = run(&mut TestHost::in_netns(netns, "ip", args));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The nat table as `iptables-save` prints it, without its comment lines (they carry the
/// time, so two snapshots a second apart would differ).
fn nat_rules(host: &TestHost) -> String {
    host.sh_ok("iptables-save", &["-t", "nat"])
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| format!("{l}\n"))
        .collect()
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    out.sort();
    out
}

/// Reservations in a network's IPAM directory: the files besides the lock and the
/// round-robin markers (nothing else may be there).
fn reserved(data: &Path, network: &str) -> Vec<String> {
    let files = files_in(&data.join(network));
    for name in &files {
        assert!(
            name == "lock"
                || name.starts_with("last_reserved_ip.")
                || name.parse::<std::net::IpAddr>().is_ok(),
            "{name} is not one of host-local's files: {files:?}"
        );
    }
    files
        .into_iter()
        .filter(|n| n != "lock" && !n.starts_with("last_reserved_ip"))
        .collect()
}

/// Where netd-ipam keeps the index of a network directory: the entry under the plugins'
/// run directory whose stamp names it.
fn index_dir(host: &TestHost, data: &Path, network: &str) -> Option<PathBuf> {
    let wanted = data.join(network).display().to_string();
    std::fs::read_dir(host.dir.path().join("netd-cni").join("ipam"))
        .ok()?
        .flatten()
        .map(|e| e.path())
        .find(|dir| {
            std::fs::read_to_string(dir.join("stamp"))
                .is_ok_and(|s| s.lines().nth(1) == Some(wanted.as_str()))
        })
}

/// netd-ipam's index entries of a network.
fn indexed(host: &TestHost, data: &Path, network: &str) -> Vec<String> {
    index_dir(host, data, network)
        .map(|dir| files_in(&dir))
        .unwrap_or_default()
        .into_iter()
        .filter(|n| n != "stamp")
        .collect()
}

fn client(target: &str) -> Vec<String> {
    vec![
        "-T2".into(),
        "-".into(),
        format!("TCP:{target},connect-timeout=1"),
    ]
}

#[test]
fn every_verb_in_every_spec_version() {
    let host = TestHost::bare();
    let data = host.dir.path().join("ipam");
    let rt = Runtime::new(&host);
    let resolv = host.dir.path().join("cni-resolv.conf");
    std::fs::write(
        &resolv,
        "nameserver 192.0.2.53\nsearch example.test\noptions ndots:2\n",
    )
    .unwrap();
    let network_dns = json!({"nameservers": ["10.96.0.10"], "domain": "cluster.local",
                             "search": ["svc.cluster.local"]});
    for (i, version) in VERSIONS.iter().enumerate() {
        let (name, id) = (format!("net{i}"), format!("ctr{i}"));
        let mut list = ours(
            version,
            &name,
            &format!("cnibr{i}"),
            &format!("10.60.{i}.0/24"),
            &data,
        );
        // The IPAM plugin's dns (from resolvConf), which a network's own dns overrides.
        list["plugins"][0]["ipam"]["resolvConf"] = json!(resolv);
        if i % 2 == 1 {
            list["plugins"][0]["dns"] = network_dns.clone();
        }
        let netns = host.add_container_netns();
        let runtime = mapping(8000 + i as u16, 80);
        let result = rt.add(&list, &id, &netns, &runtime).expect("ADD");
        assert_eq!(result["cniVersion"], *version);
        let expected_dns = if i % 2 == 1 {
            network_dns.clone()
        } else {
            json!({"nameservers": ["192.0.2.53"], "search": ["example.test"], "options": ["ndots:2"]})
        };
        assert_eq!(result["dns"], expected_dns, "{version}: {result}");
        let ip = &result["ips"][0];
        assert_eq!(ip["address"], format!("10.60.{i}.2/24"), "{result}");
        assert_eq!(ip["gateway"], format!("10.60.{i}.1"));
        if version.starts_with('0') {
            assert_eq!(ip["version"], "4", "{version}: {result}");
        } else {
            assert!(ip.get("version").is_none(), "{version}: {result}");
        }
        assert_eq!(
            result["interfaces"][ip["interface"].as_u64().unwrap() as usize]["sandbox"],
            netns
        );

        assert!(ip_in(&netns, &["addr", "show", "eth0"]).contains(&format!("inet 10.60.{i}.2/24")));
        assert!(ip_in(&netns, &["route"]).contains(&format!("default via 10.60.{i}.1 dev eth0")));
        let file = std::fs::read_to_string(data.join(&name).join(format!("10.60.{i}.2"))).unwrap();
        assert_eq!(file, format!("{id}\r\neth0"));
        let marker = format!("netd-cni name: {name} id: {id}");
        assert_eq!(
            nat_rules(&host).matches(&marker).count(),
            4,
            "masquerade + 3 port rules"
        );

        let check = rt.each("CHECK", &list, &id, &netns, &runtime, Some(&result));
        if version.starts_with("0.3") {
            assert_eq!(check.expect_err("no CHECK before 0.4.0")["code"], 1);
        } else {
            check.expect("CHECK");
        }
        if *version == "1.1.0" {
            let status = rt.exec(
                "netd-bridge",
                "STATUS",
                "",
                "",
                &Runtime::plugin_conf(&list, &list["plugins"][0], &json!({}), None),
            );
            assert!(status.ok, "{:?}", status.json);
        }

        rt.each("DEL", &list, &id, &netns, &runtime, Some(&result))
            .expect("DEL");
        assert!(!ip_in(&netns, &["link"]).contains("eth0"));
        assert!(reserved(&data, &name).is_empty());
        assert!(indexed(&host, &data, &name).is_empty());
        assert!(!nat_rules(&host).contains(&marker));
        // Again, and as containerd's second DEL: no namespace, no prevResult.
        rt.each("DEL", &list, &id, &netns, &runtime, Some(&result))
            .expect("DEL twice");
        rt.each("DEL", &list, &id, "", &runtime, None)
            .expect("DEL without netns");
        // DEL returns once eth0's name is free (the kernel's wait after that is a detached
        // process's): the same namespace takes an ADD again at once.
        let again = rt.add(&list, &id, &netns, &runtime).expect("ADD again");
        assert!(
            ip_in(&netns, &["addr", "show", "eth0"]).contains("inet 10.60."),
            "{again}"
        );
        rt.each("DEL", &list, &id, &netns, &runtime, Some(&again))
            .expect("DEL again");
        assert!(!ip_in(&netns, &["link"]).contains("eth0"));
    }
    let version = rt.exec_raw(
        "netd-bridge",
        &[("CNI_COMMAND", "VERSION")],
        b"{\"cniVersion\":\"1.0.0\"}",
    );
    assert_eq!(version.json["supportedVersions"], json!(VERSIONS));
}

#[test]
fn traffic_nat_published_ports_hairpin_and_localhost() {
    let mut host = TestHost::bare();
    host.add_internet();
    let data = host.dir.path().join("ipam");
    let rt = Runtime::new(&host);
    let list = ours("1.0.0", "web", "cni0", "10.61.0.0/24", &data);
    let (ns1, ns2) = (host.add_container_netns(), host.add_container_netns());
    let r1 = rt
        .add(&list, "c1", &ns1, &mapping(8080, 80))
        .expect("ADD c1");
    let r2 = rt.add(&list, "c2", &ns2, &json!({})).expect("ADD c2");
    let _server = serve_hello(&ns1, 80);

    let ping = |netns: &str, ip: &str| {
        run(&mut TestHost::in_netns(netns, "ping", &["-c1", "-W1", ip]))
            .status
            .success()
    };
    assert!(ping(&ns2, "10.61.0.2"), "container to container");
    assert!(ping(&ns1, INTERNET_IP), "outside through NAT");

    let published = format!("{HOST_UPLINK_IP}:8080");
    let args = client(&published);
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    assert_eq!(
        tcp_answer(|| host.internet_cmd("socat", &argv)),
        "hello",
        "from outside"
    );
    assert_eq!(
        tcp_answer(|| TestHost::in_netns(&ns2, "socat", &argv)),
        "hello",
        "from the other container"
    );
    assert_eq!(
        tcp_answer(|| TestHost::in_netns(&ns1, "socat", &argv)),
        "hello",
        "hairpin"
    );
    let local = client("127.0.0.1:8080");
    let local: Vec<&str> = local.iter().map(String::as_str).collect();
    assert_eq!(
        tcp_answer(|| host.cmd("socat", &local)),
        "hello",
        "localhost"
    );

    rt.each("DEL", &list, "c1", &ns1, &mapping(8080, 80), Some(&r1))
        .expect("DEL c1");
    rt.each("DEL", &list, "c2", &ns2, &json!({}), Some(&r2))
        .expect("DEL c2");
    assert!(!nat_rules(&host).contains("netd-cni name:"));
    assert!(
        host.links().iter().all(|l| !l.starts_with("veth")),
        "{:?}",
        host.links()
    );
    assert!(reserved(&data, "web").is_empty());
}

#[test]
fn mixed_with_the_reference_plugins() {
    let mut host = TestHost::bare();
    host.add_internet();
    let data = host.dir.path().join("ipam");
    let rt = Runtime::new(&host);

    // netd-bridge with the reference host-local and portmap.
    let list = chain(
        "1.0.0",
        "mixa",
        "cnia",
        "10.62.0.0/24",
        &data,
        ["netd-bridge", "host-local", "portmap"],
    );
    let ns = host.add_container_netns();
    let result = rt.add(&list, "a1", &ns, &mapping(8081, 80)).expect("ADD");
    let _server = serve_hello(&ns, 80);
    let args = client(&format!("{HOST_UPLINK_IP}:8081"));
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    assert_eq!(tcp_answer(|| host.internet_cmd("socat", &argv)), "hello");
    // CHECK of netd-bridge (delegating to host-local). The reference portmap's own CHECK
    // fails on hosts without its IPv6 chain whatever bridge plugin ran before it.
    let bridge_only =
        json!({"cniVersion": "1.0.0", "name": "mixa", "plugins": [list["plugins"][0].clone()]});
    rt.each("CHECK", &bridge_only, "a1", &ns, &json!({}), Some(&result))
        .expect("CHECK");
    rt.each("DEL", &list, "a1", &ns, &mapping(8081, 80), Some(&result))
        .expect("DEL");
    assert!(reserved(&data, "mixa").is_empty());

    // The reference bridge with netd-ipam.
    let list = chain(
        "1.0.0",
        "mixb",
        "cnib",
        "10.63.0.0/24",
        &data,
        ["bridge", "netd-ipam", "portmap"],
    );
    let ns = host.add_container_netns();
    let result = rt.add(&list, "b1", &ns, &json!({})).expect("ADD");
    assert_eq!(result["ips"][0]["address"], "10.63.0.2/24");
    assert!(run(&mut TestHost::in_netns(
        &ns,
        "ping",
        &["-c1", "-W1", "10.63.0.1"]
    ))
    .status
    .success());
    assert_eq!(reserved(&data, "mixb"), vec!["10.63.0.2"]);
    rt.each("DEL", &list, "b1", &ns, &json!({}), Some(&result))
        .expect("DEL");
    assert!(reserved(&data, "mixb").is_empty());

    // A node that ran host-local is taken over: netd-ipam continues after its last address
    // and releases what host-local reserved.
    let ipam = |plugin: &str| {
        json!({"cniVersion": "1.0.0", "name": "takeover", "type": plugin,
        "ipam": {"type": plugin, "ranges": [[{"subnet": "10.64.0.0/24"}]], "dataDir": data}})
    };
    let netns = "/proc/1/ns/net";
    let first = rt.exec("host-local", "ADD", "t1", netns, &ipam("host-local"));
    assert!(first.ok, "{:?}", first.json);
    let second = rt.exec("netd-ipam", "ADD", "t2", netns, &ipam("netd-ipam"));
    assert_eq!(second.json["ips"][0]["address"], "10.64.0.3/24");
    assert!(
        rt.exec("netd-ipam", "DEL", "t1", netns, &ipam("netd-ipam"))
            .ok
    );
    assert!(
        rt.exec("host-local", "DEL", "t2", netns, &ipam("host-local"))
            .ok
    );
    assert!(reserved(&data, "takeover").is_empty());
}

#[test]
fn fifty_parallel_adds_then_fifty_parallel_dels() {
    let host = TestHost::bare();
    let data = host.dir.path().join("ipam");
    let rt = Runtime::new(&host);
    let list = ours("1.0.0", "many", "cnim", "10.65.0.0/24", &data);
    let namespaces: Vec<String> = (0..50).map(|_| host.add_container_netns()).collect();
    let results: Vec<Value> = std::thread::scope(|s| {
        let handles: Vec<_> = namespaces
            .iter()
            .enumerate()
            .map(|(i, ns)| {
                let (rt, list) = (&rt, &list);
                s.spawn(move || rt.add(list, &format!("p{i}"), ns, &mapping(9000 + i as u16, 80)))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("thread").expect("ADD"))
            .collect()
    });
    let mut addresses: Vec<String> = results
        .iter()
        .map(|r| r["ips"][0]["address"].as_str().unwrap().to_string())
        .collect();
    addresses.sort();
    addresses.dedup();
    assert_eq!(addresses.len(), 50, "no duplicate addresses");
    assert_eq!(reserved(&data, "many").len(), 50);
    assert_eq!(indexed(&host, &data, "many").len(), 50);
    assert_eq!(nat_rules(&host).matches("netd-cni name: many").count(), 200);

    std::thread::scope(|s| {
        for (i, (ns, result)) in namespaces.iter().zip(&results).enumerate() {
            let (rt, list) = (&rt, &list);
            s.spawn(move || {
                rt.each(
                    "DEL",
                    list,
                    &format!("p{i}"),
                    ns,
                    &mapping(9000 + i as u16, 80),
                    Some(result),
                )
                .expect("DEL")
            });
        }
    });
    assert!(reserved(&data, "many").is_empty());
    assert!(indexed(&host, &data, "many").is_empty());
    assert!(!nat_rules(&host).contains("netd-cni name: many"));
    assert!(host.links().iter().all(|l| !l.starts_with("veth")));
}

#[test]
fn bad_input_gets_the_spec_error_and_leaves_nothing() {
    let host = TestHost::bare();
    let data = host.dir.path().join("ipam");
    let rt = Runtime::new(&host);
    let ns = host.add_container_netns();
    let good = ours("1.0.0", "bad", "cnix", "10.66.0.0/30", &data);
    let bridge_conf = |edit: &dyn Fn(&mut Value)| {
        let mut conf = Runtime::plugin_conf(&good, &good["plugins"][0], &json!({}), None);
        edit(&mut conf);
        conf
    };
    // A first container takes the /30's only address (exhaustion below).
    let first = rt.add(&good, "first", &ns, &json!({})).expect("ADD");
    let snapshot = || {
        (
            host.links(),
            reserved(&data, "bad"),
            nat_rules(&host),
            ip_in(&ns, &["-o", "link"]),
        )
    };
    let before = snapshot();
    let other_ns = host.add_container_netns();
    let before_other = ip_in(&other_ns, &["-o", "link"]);

    let cni_path = rt.cni_path.clone();
    let env = |netns: &str| -> Vec<(&'static str, String)> {
        vec![
            ("CNI_COMMAND", "ADD".into()),
            ("CNI_CONTAINERID", "second".into()),
            ("CNI_NETNS", netns.into()),
            ("CNI_IFNAME", "eth0".into()),
            ("CNI_PATH", cni_path.clone()),
        ]
    };
    let add = |env: Vec<(&str, String)>, stdin: &[u8]| -> Answer {
        let pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        rt.exec_raw("netd-bridge", &pairs, stdin)
    };
    let conf_bytes = |c: Value| c.to_string().into_bytes();
    let cases: Vec<(&str, Answer, u64)> = vec![
        (
            "malformed JSON",
            add(env(&other_ns), b"{\"cniVersion\": "),
            6,
        ),
        (
            "unsupported version",
            add(
                env(&other_ns),
                &conf_bytes(bridge_conf(&|c| c["cniVersion"] = json!("0.2.0"))),
            ),
            1,
        ),
        (
            "ipam missing",
            add(
                env(&other_ns),
                &conf_bytes(bridge_conf(&|c| {
                    c.as_object_mut().unwrap().remove("ipam");
                })),
            ),
            7,
        ),
        (
            "wrong type",
            add(
                env(&other_ns),
                &conf_bytes(bridge_conf(&|c| c["mtu"] = json!("big"))),
            ),
            7,
        ),
        (
            "bad CIDR",
            add(
                env(&other_ns),
                &conf_bytes(bridge_conf(&|c| {
                    c["ipam"]["ranges"] = json!([[{"subnet": "10.66.0.0/33"}]])
                })),
            ),
            7,
        ),
        (
            "exhausted",
            add(env(&other_ns), &conf_bytes(bridge_conf(&|_| {}))),
            101,
        ),
        (
            "missing CNI_NETNS",
            add(
                env(&other_ns)
                    .into_iter()
                    .filter(|(k, _)| *k != "CNI_NETNS")
                    .collect(),
                &conf_bytes(bridge_conf(&|_| {})),
            ),
            4,
        ),
        (
            "no such netns",
            add(
                env("/run/netns/does-not-exist"),
                &conf_bytes(bridge_conf(&|_| {})),
            ),
            3,
        ),
        (
            "ifname exists",
            add(env(&ns), &conf_bytes(bridge_conf(&|_| {}))),
            4,
        ),
    ];
    for (case, answer, code) in cases {
        assert!(!answer.ok, "{case} succeeded: {:?}", answer.json);
        assert_eq!(answer.json["code"], code, "{case}: {}", answer.json);
        assert!(
            !answer.json["msg"].as_str().unwrap_or("").is_empty(),
            "{case}"
        );
        assert_eq!(snapshot(), before, "{case} left something behind");
        assert_eq!(ip_in(&other_ns, &["-o", "link"]), before_other, "{case}");
    }
    rt.each("DEL", &good, "first", &ns, &json!({}), Some(&first))
        .expect("DEL");
}

#[test]
fn gc_removes_what_no_attachment_holds() {
    let host = TestHost::bare();
    let data = host.dir.path().join("ipam");
    let rt = Runtime::new(&host);
    let list = ours("1.1.0", "gcnet", "cnig", "10.67.0.0/24", &data);
    let (ns1, ns2) = (host.add_container_netns(), host.add_container_netns());
    rt.add(&list, "keep", &ns1, &mapping(8100, 80))
        .expect("ADD");
    rt.add(&list, "gone", &ns2, &mapping(8101, 80))
        .expect("ADD");
    let valid = json!([{"containerID": "keep", "ifname": "eth0"}]);
    for plugin in list["plugins"].as_array().unwrap() {
        let mut conf = Runtime::plugin_conf(&list, plugin, &json!({}), None);
        conf["cni.dev/valid-attachments"] = valid.clone();
        let answer = rt.exec(plugin["type"].as_str().unwrap(), "GC", "", "", &conf);
        assert!(answer.ok, "{:?}", answer.json);
    }
    assert_eq!(reserved(&data, "gcnet"), vec!["10.67.0.2"]);
    let rules = nat_rules(&host);
    assert!(rules.contains("netd-cni name: gcnet id: keep"));
    assert!(!rules.contains("netd-cni name: gcnet id: gone"), "{rules}");
}

/// Every file under `dir` (recursively), relative path -> content, for byte-for-byte
/// comparisons.
fn tree(dir: &Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    let mut out = std::collections::BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let rel = path.strip_prefix(dir).unwrap().display().to_string();
                out.insert(rel, std::fs::read(&path).unwrap_or_default());
            }
        }
    }
    out
}

/// The shapes real runtimes send: containerd (go-cni) capitalises the keys of its
/// capability arguments, podman asks for an address and a MAC through capabilities,
/// cnitool passes CNI_ARGS. Each attachment answers on its published port from outside.
#[test]
fn runtime_shapes_end_to_end() {
    let mut host = TestHost::bare();
    host.add_internet();
    let data = host.dir.path().join("ipam");
    let rt = Runtime::new(&host);
    let mut list = ours("1.0.0", "shapes", "cnis", "10.68.0.0/24", &data);
    list["plugins"][0]["capabilities"] = json!({"ips": true, "mac": true});
    // containerd's CRI configuration gives the range at run time (the node's pod CIDR).
    let mut from_cri = list.clone();
    from_cri["plugins"][0]["capabilities"] = json!({"ipRanges": true});
    from_cri["plugins"][0]["ipam"]
        .as_object_mut()
        .unwrap()
        .remove("ranges");

    // containerd 1.6 through go-cni: PortMapping and IPRanges structs without JSON tags.
    let containerd = json!({
        "portMappings": [{"HostPort": 18090, "ContainerPort": 80, "Protocol": "tcp", "HostIP": ""}],
        "ipRanges": [[{"Subnet": "10.68.0.0/24", "RangeStart": "10.68.0.50", "RangeEnd": "",
                       "Gateway": ""}]]
    });
    // podman (CNI backend): lowercase mappings with a host address, a static address as
    // a CIDR and a MAC.
    let podman = json!({
        "portMappings": [{"hostPort": 18091, "containerPort": 80, "protocol": "tcp",
                          "hostIP": HOST_UPLINK_IP}],
        "ips": ["10.68.0.77/24"],
        "mac": "02:00:00:00:00:77"
    });
    let ns1 = host.add_container_netns();
    let r1 = rt
        .add(&from_cri, "containerd1", &ns1, &containerd)
        .expect("containerd ADD");
    assert_eq!(r1["ips"][0]["address"], "10.68.0.50/24", "{r1}");
    let ns2 = host.add_container_netns();
    let r2 = rt.add(&list, "podman1", &ns2, &podman).expect("podman ADD");
    assert_eq!(r2["ips"][0]["address"], "10.68.0.77/24", "{r2}");
    assert!(ip_in(&ns2, &["link", "show", "eth0"]).contains("02:00:00:00:00:77"));

    // cnitool: capability arguments from CAP_ARGS, a static address from CNI_ARGS.
    let ns3 = host.add_container_netns();
    let cap_args =
        json!({"portMappings": [{"hostPort": 18092, "containerPort": 80, "protocol": "tcp"}]});
    let mut prev: Option<Value> = None;
    for plugin in list["plugins"].as_array().unwrap() {
        let conf = Runtime::plugin_conf(&list, plugin, &cap_args, prev.as_ref());
        let env = [
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "cnitool-77f2b2d9a7c1"),
            ("CNI_NETNS", ns3.as_str()),
            ("CNI_IFNAME", "eth0"),
            ("CNI_PATH", rt.cni_path.as_str()),
            ("CNI_ARGS", "IgnoreUnknown=1;IP=10.68.0.88"),
        ];
        let answer = rt.exec_raw(
            plugin["type"].as_str().unwrap(),
            &env,
            conf.to_string().as_bytes(),
        );
        assert!(answer.ok, "cnitool ADD: {}", answer.json);
        prev = Some(answer.json);
    }
    let r3 = prev.unwrap();
    assert_eq!(r3["ips"][0]["address"], "10.68.0.88/24", "{r3}");

    let servers = [
        serve_hello(&ns1, 80),
        serve_hello(&ns2, 80),
        serve_hello(&ns3, 80),
    ];
    for port in [18090, 18091, 18092] {
        let args = client(&format!("{HOST_UPLINK_IP}:{port}"));
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        assert_eq!(
            tcp_answer(|| host.internet_cmd("socat", &argv)),
            "hello",
            "port {port} from outside"
        );
    }
    drop(servers);
    rt.each(
        "DEL",
        &from_cri,
        "containerd1",
        &ns1,
        &containerd,
        Some(&r1),
    )
    .expect("DEL");
    // containerd's second DEL: no namespace, no prevResult.
    rt.each("DEL", &from_cri, "containerd1", "", &containerd, None)
        .expect("second DEL");
    rt.each("DEL", &list, "podman1", &ns2, &podman, Some(&r2))
        .expect("DEL");
    rt.each(
        "DEL",
        &list,
        "cnitool-77f2b2d9a7c1",
        &ns3,
        &cap_args,
        Some(&r3),
    )
    .expect("DEL");
    assert!(reserved(&data, "shapes").is_empty());
    assert!(!nat_rules(&host).contains("netd-cni name:"));
}

/// netd-ipam leaves in the data directory exactly what host-local leaves for the same
/// operations, and its index (kept elsewhere) is rebuilt when it is lost or disagrees.
#[test]
fn ipam_files_as_host_local_and_the_index_rebuilt() {
    let host = TestHost::bare();
    let rt = Runtime::new(&host);
    let netns = host.add_container_netns();
    let ours_dir = host.dir.path().join("ipam-ours");
    let theirs_dir = host.dir.path().join("ipam-theirs");
    let conf = |plugin: &str, data: &Path| {
        json!({"cniVersion": "1.0.0", "name": "files", "type": plugin,
               "ipam": {"type": plugin, "ranges": [[{"subnet": "10.69.0.0/29"}], [{"subnet": "fd69::/120"}]],
                        "dataDir": data}})
    };
    let steps = [
        ("ADD", "a"),
        ("ADD", "b"),
        ("ADD", "c"),
        ("DEL", "b"),
        ("ADD", "d"),
        ("DEL", "a"),
        ("ADD", "b"),
        ("ADD", "e"),
        ("DEL", "zzz"),
    ];
    for (plugin, data) in [("netd-ipam", &ours_dir), ("host-local", &theirs_dir)] {
        for (verb, id) in steps {
            let answer = rt.exec(plugin, verb, id, &netns, &conf(plugin, data));
            assert!(answer.ok, "{plugin} {verb} {id}: {}", answer.json);
        }
    }
    assert_eq!(
        files_in(&ours_dir),
        files_in(&theirs_dir),
        "data directory listing"
    );
    assert_eq!(tree(&ours_dir), tree(&theirs_dir), "file contents");
    assert_eq!(
        reserved(&ours_dir, "files").len(),
        8,
        "b c d e, one IPv4 and one IPv6 address each"
    );

    // The index is lost: the next operation rebuilds it, and knows who holds what.
    let ours = conf("netd-ipam", &ours_dir);
    let index = index_dir(&host, &ours_dir, "files").expect("index");
    assert_eq!(
        indexed(&host, &ours_dir, "files"),
        ["b@eth0", "c@eth0", "d@eth0", "e@eth0"]
    );
    std::fs::remove_dir_all(&index).unwrap();
    let again = rt.exec("netd-ipam", "ADD", "c", &netns, &ours);
    assert!(!again.ok, "a second address for c: {}", again.json);
    assert_eq!(again.json["code"], 7);
    assert!(
        again.json["msg"]
            .as_str()
            .unwrap()
            .contains("duplicate allocation"),
        "{}",
        again.json
    );
    assert_eq!(
        indexed(&host, &ours_dir, "files"),
        ["b@eth0", "c@eth0", "d@eth0", "e@eth0"]
    );

    // host-local works on the same directory: the index disagrees, and is rebuilt.
    let theirs_here = conf("host-local", &ours_dir);
    assert!(rt.exec("host-local", "ADD", "f", &netns, &theirs_here).ok);
    assert!(rt.exec("host-local", "DEL", "c", &netns, &theirs_here).ok);
    let before = reserved(&ours_dir, "files").len();
    let del = rt.exec("netd-ipam", "DEL", "f", &netns, &ours);
    assert!(del.ok, "{}", del.json);
    assert_eq!(
        reserved(&ours_dir, "files").len(),
        before - 2,
        "f's two addresses"
    );
    assert_eq!(
        indexed(&host, &ours_dir, "files"),
        ["b@eth0", "d@eth0", "e@eth0"]
    );
    // An operator removes a reservation by hand.
    let e_file = std::fs::read_dir(ours_dir.join("files"))
        .unwrap()
        .flatten()
        .find(|f| std::fs::read_to_string(f.path()).unwrap_or_default() == "e\r\neth0")
        .unwrap();
    std::fs::remove_file(e_file.path()).unwrap();
    let add = rt.exec("netd-ipam", "ADD", "g", &netns, &ours);
    assert!(add.ok, "{}", add.json);
    let del = rt.exec("netd-ipam", "DEL", "e", &netns, &ours);
    assert!(del.ok, "{}", del.json);
    for id in ["b", "d", "g"] {
        assert!(rt.exec("netd-ipam", "DEL", id, &netns, &ours).ok);
    }
    assert!(reserved(&ours_dir, "files").is_empty());
    assert!(indexed(&host, &ours_dir, "files").is_empty());
}

/// Input that would break rule text, paths or types is refused before anything is made,
/// with the spec's error JSON naming what is wrong.
#[test]
fn unsafe_names_ids_conditions_and_types_are_refused() {
    let host = TestHost::bare();
    let data = host.dir.path().join("ipam");
    let rt = Runtime::new(&host);
    let ns = host.add_container_netns();
    let good = ours("1.0.0", "safe", "cnix", "10.70.0.0/24", &data);
    let first = rt
        .add(&good, "first", &ns, &mapping(8200, 80))
        .expect("ADD");
    let run_dir = host.dir.path().join("netd-cni");
    let snapshot = || {
        (
            host.links(),
            nat_rules(&host),
            tree(&data),
            tree(&run_dir.join("ipam")),
        )
    };
    let before = snapshot();
    let other = host.add_container_netns();
    let env = |id: &str| {
        vec![
            ("CNI_COMMAND".to_string(), "ADD".to_string()),
            ("CNI_CONTAINERID".to_string(), id.to_string()),
            ("CNI_NETNS".to_string(), other.clone()),
            ("CNI_IFNAME".to_string(), "eth0".to_string()),
            ("CNI_PATH".to_string(), rt.cni_path.clone()),
        ]
    };
    let exec = |plugin: &str, id: &str, conf: &Value| {
        let pairs = env(id);
        let pairs: Vec<(&str, &str)> = pairs
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        rt.exec_raw(plugin, &pairs, conf.to_string().as_bytes())
    };
    let confs = |edit: &dyn Fn(&mut Value)| -> Vec<(&'static str, Value)> {
        let bridge = Runtime::plugin_conf(&good, &good["plugins"][0], &json!({}), None);
        let ipam = {
            let mut c = bridge.clone();
            c["type"] = json!("netd-ipam");
            c
        };
        let portmap =
            Runtime::plugin_conf(&good, &good["plugins"][1], &mapping(8201, 80), Some(&first));
        let mut out = vec![
            ("netd-bridge", bridge),
            ("netd-ipam", ipam),
            ("netd-portmap", portmap),
        ];
        for (_, c) in &mut out {
            edit(c);
        }
        out
    };
    let check = |case: &str, answer: Answer, code: u64, needle: &str| {
        assert!(!answer.ok, "{case} succeeded: {}", answer.json);
        assert_eq!(answer.json["code"], code, "{case}: {}", answer.json);
        let msg = answer.json["msg"].as_str().unwrap_or("");
        assert!(
            msg.contains(needle),
            "{case}: {msg:?} should mention {needle:?}"
        );
        assert_eq!(snapshot(), before, "{case} left something behind");
    };
    for bad in ["acn\"bad", "bad\nname", "bad name"] {
        for (plugin, conf) in confs(&|c| c["name"] = json!(bad)) {
            check(
                &format!("{plugin} name {bad:?}"),
                exec(plugin, "second", &conf),
                7,
                "name",
            );
        }
    }
    for (plugin, conf) in confs(&|_| {}) {
        check(
            &format!("{plugin} id with a slash"),
            exec(plugin, "../second", &conf),
            4,
            "CNI_CONTAINERID",
        );
    }
    let portmap = |edit: &dyn Fn(&mut Value)| {
        let mut conf = confs(&|_| {})
            .into_iter()
            .find(|(p, _)| *p == "netd-portmap")
            .unwrap()
            .1;
        edit(&mut conf);
        conf
    };
    for injected in [
        json!(["-s", "10.0.0.0/8\nCOMMIT\n*filter\n-A INPUT -j DROP"]),
        json!(["-m", "comment --comment \"x\""]),
    ] {
        let conf = portmap(&|c| c["conditionsV4"] = injected.clone());
        check(
            "injected conditionsV4",
            exec("netd-portmap", "second", &conf),
            7,
            "conditionsV4",
        );
    }
    let conf = portmap(&|c| {
        c["runtimeConfig"] = json!({"portMappings": [{"HostPort": "x", "ContainerPort": 80}]})
    });
    check(
        "capitalised key with a wrong type",
        exec("netd-portmap", "second", &conf),
        7,
        "runtimeConfig.portMappings[0].HostPort",
    );
    let conf = portmap(&|c| c["prevResult"]["interfaces"][0]["name"] = json!("../../../../tmp/x"));
    check(
        "an interface name that is a path",
        exec("netd-portmap", "second", &conf),
        7,
        "prevResult.interfaces[0].name",
    );

    // A kernel failure says what was being done and why, and is rolled back (the attempt
    // moved host-local's round-robin marker on, as host-local's own attempt would).
    let rolled_back = || {
        (
            host.links(),
            nat_rules(&host),
            reserved(&data, "safe"),
            indexed(&host, &data, "safe"),
        )
    };
    let before = rolled_back();
    let mut unreachable = Runtime::plugin_conf(&good, &good["plugins"][0], &json!({}), None);
    unreachable["ipam"]["routes"] = json!([{"dst": "192.0.2.0/24", "gw": "203.0.113.1"}]);
    let answer = exec("netd-bridge", "second", &unreachable);
    assert_eq!(answer.json["code"], 100, "{}", answer.json);
    let msg = answer.json["msg"].as_str().unwrap_or("");
    assert!(
        msg.contains("configuring eth0 in")
            && msg.contains("add route 192.0.2.0/24 via 203.0.113.1")
            && msg.contains("Network is unreachable"),
        "{msg}"
    );
    assert_eq!(answer.json["details"], "ENETUNREACH");
    assert_eq!(rolled_back(), before);

    rt.each("DEL", &good, "first", &ns, &mapping(8200, 80), Some(&first))
        .expect("DEL");
}

/// conditionsV4 restrict which packets are forwarded, and may hold their own `-s`/`-d`
/// (which the hairpin, localhost and host-address matches must not collide with).
#[test]
fn conditions_v4_with_their_own_address_matches() {
    let mut host = TestHost::bare();
    host.add_internet();
    let data = host.dir.path().join("ipam");
    let rt = Runtime::new(&host);
    let mut list = ours("1.0.0", "cond", "cnic", "10.72.0.0/24", &data);
    list["plugins"][1]["conditionsV4"] = json!(["-s", "198.51.100.0/24"]);
    let runtime = json!({"portMappings": [{"hostPort": 18300, "containerPort": 80,
                                           "protocol": "tcp", "hostIP": HOST_UPLINK_IP}]});
    let (ns1, ns2) = (host.add_container_netns(), host.add_container_netns());
    let r1 = rt
        .add(&list, "c1", &ns1, &runtime)
        .expect("ADD with conditions");
    let r2 = rt.add(&list, "c2", &ns2, &json!({})).expect("ADD c2");
    let _server = serve_hello(&ns1, 80);
    let args = client(&format!("{HOST_UPLINK_IP}:18300"));
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    assert_eq!(
        tcp_answer(|| host.internet_cmd("socat", &argv)),
        "hello",
        "a client the conditions admit"
    );
    let other = run(&mut TestHost::in_netns(&ns2, "socat", &argv));
    assert!(
        String::from_utf8_lossy(&other.stdout).trim().is_empty(),
        "a client from 10.72.0.0/24 is outside the conditions, so it is not forwarded"
    );
    rt.each("DEL", &list, "c1", &ns1, &runtime, Some(&r1))
        .expect("DEL");
    rt.each("DEL", &list, "c2", &ns2, &json!({}), Some(&r2))
        .expect("DEL");
    assert!(!nat_rules(&host).contains("netd-cni name:"));
}
