//! The embedded DNS server, observed from inside sandboxes with `getent` (the C library's
//! resolver, reading the sandbox's resolv.conf) and `dig`, against upstream resolvers
//! (dnsmasq) run in the test host's "internet" namespace.

// Tests fail by panicking with a reason.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::process::Stdio;
use std::time::{Duration, Instant};

use netd_tests::upstream::{record, Upstream};
use netd_tests::{run, TestHost, INTERNET_IP};

const PROBE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tools/dnsprobe.py");

/// What `getent hosts NAME` prints in a sandbox: the first address, if any.
fn getent(host: &TestHost, sandbox: &str, name: &str) -> Option<String> {
    let out = host.exec(sandbox, &["getent", "hosts", name]);
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace().next().map(str::to_string)
}

/// `dig` in a sandbox (one try, short timeout unless given), the whole output.
fn dig(host: &TestHost, sandbox: &str, args: &[&str]) -> String {
    let mut argv = vec!["dig", "+time=2", "+tries=1"];
    argv.extend_from_slice(args);
    let out = host.exec(sandbox, &argv);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The `status:` of a dig output (NOERROR, NXDOMAIN, ...), or "" when no answer came.
fn status(dig_output: &str) -> String {
    dig_output
        .split("status: ")
        .nth(1)
        .and_then(|rest| rest.split(',').next())
        .unwrap_or("")
        .to_string()
}

/// The header flags of a dig output (`qr aa rd ra`).
fn flags(dig_output: &str) -> Vec<String> {
    dig_output
        .lines()
        .find_map(|l| l.strip_prefix(";; flags: "))
        .and_then(|l| l.split(';').next())
        .map(|f| f.split_whitespace().map(str::to_string).collect())
        .unwrap_or_default()
}

/// The records of the answer section, as (type, data).
fn answers(dig_output: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut in_answer = false;
    for line in dig_output.lines() {
        if line.starts_with(";; ANSWER SECTION") {
            in_answer = true;
            continue;
        }
        if in_answer {
            if line.trim().is_empty() {
                break;
            }
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() >= 5 {
                out.push((fields[3].to_string(), fields[4..].join(" ")));
            }
        }
    }
    out
}

fn a_records(dig_output: &str) -> Vec<String> {
    answers(dig_output)
        .into_iter()
        .filter(|(t, _)| t == "A")
        .map(|(_, d)| d)
        .collect()
}

/// Which UDP sockets listen on port 53 in the test host.
fn dns_listeners(host: &TestHost) -> String {
    host.sh_ok("ss", &["-H", "-lnu", "sport", "= :53"])
}

#[test]
fn names_aliases_and_short_ids_resolve_in_sandboxes() {
    let host = TestHost::new();
    host.netctl_ok(&["network", "create", "--subnet", "10.31.0.0/24", "mynet"]);
    host.netctl_ok(&["run", "-d", "--name", "client", "--network", "mynet"]);
    let id = host
        .netctl_ok(&[
            "run",
            "-d",
            "--name",
            "web",
            "--network",
            "mynet",
            "--alias",
            "www",
        ])
        .trim()
        .to_string();
    // Asked right after `run` returned, once: no waiting for the name to appear.
    let web = host.ip_of("web", "mynet");
    assert_eq!(getent(&host, "client", "web"), Some(web.clone()));
    for name in [
        "WEB",
        "www",
        &id[..12],
        "web.netd.internal",
        "www.netd.internal.",
    ] {
        assert_eq!(getent(&host, "client", name), Some(web.clone()), "{name}");
    }

    let out = dig(&host, "client", &["@10.31.0.1", "web"]);
    assert_eq!(status(&out), "NOERROR", "{out}");
    assert!(flags(&out).contains(&"aa".to_string()), "{out}");
    assert_eq!(a_records(&out), vec![web.clone()]);

    let out = dig(&host, "client", &["@10.31.0.1", "-x", &web]);
    assert_eq!(
        answers(&out),
        vec![("PTR".to_string(), "web.netd.internal.".to_string())],
        "{out}"
    );

    let out = dig(&host, "client", &["@10.31.0.1", "nope.netd.internal"]);
    assert_eq!(status(&out), "NXDOMAIN", "{out}");
    assert!(flags(&out).contains(&"aa".to_string()), "{out}");

    // A name without IPv6 has no AAAA: an empty authoritative answer, not an error.
    let out = dig(&host, "client", &["@10.31.0.1", "web", "AAAA"]);
    assert_eq!(status(&out), "NOERROR", "{out}");
    assert!(answers(&out).is_empty(), "{out}");

    let out = dig(&host, "client", &["+tcp", "@10.31.0.1", "www"]);
    assert_eq!(a_records(&out), vec![web.clone()], "over TCP: {out}");

    let resolv = String::from_utf8_lossy(&host.exec("client", &["cat", "/etc/resolv.conf"]).stdout)
        .into_owned();
    assert!(resolv.contains("nameserver 10.31.0.1\n"), "{resolv}");
    assert!(resolv.contains("search netd.internal"), "{resolv}");
    assert!(resolv.contains("options ndots:0"), "{resolv}");
    let hosts =
        String::from_utf8_lossy(&host.exec("web", &["cat", "/etc/hosts"]).stdout).into_owned();
    assert!(
        hosts.contains(&format!("{web}\t{} web", &id[..12])),
        "{hosts}"
    );

    // A sandbox sharing web's namespace (a pod) resolves what web resolves, also after
    // web joins another network.
    host.netctl_ok(&["run", "-d", "--name", "side", "--network", "container:web"]);
    assert_eq!(
        getent(&host, "side", "client"),
        Some(host.ip_of("client", "mynet"))
    );
    host.netctl_ok(&["network", "create", "--subnet", "10.30.0.0/24", "backend"]);
    host.netctl_ok(&["run", "-d", "--name", "db", "--network", "backend"]);
    host.netctl_ok(&["connect", "backend", "web"]);
    assert_eq!(
        getent(&host, "side", "db"),
        Some(host.ip_of("db", "backend"))
    );
}

#[test]
fn sandboxes_see_only_the_names_of_their_networks() {
    let host = TestHost::new();
    host.netctl_ok(&["network", "create", "--subnet", "10.32.0.0/24", "neta"]);
    host.netctl_ok(&["network", "create", "--subnet", "10.33.0.0/24", "netb"]);
    host.netctl_ok(&["run", "-d", "--name", "x", "--network", "neta"]);
    host.netctl_ok(&["run", "-d", "--name", "y", "--network", "netb"]);
    host.netctl_ok(&["run", "-d", "--name", "z", "--network", "neta"]);
    host.netctl_ok(&["connect", "netb", "z"]);
    let (z_a, z_b) = (host.ip_of("z", "neta"), host.ip_of("z", "netb"));

    // A name on two networks answers with the address on the network both share.
    assert_eq!(getent(&host, "x", "z"), Some(z_a.clone()));
    assert_eq!(getent(&host, "y", "z"), Some(z_b.clone()));
    // z is on both and asks each gateway: the answer comes from the network asked first.
    let out = dig(&host, "z", &["@10.33.0.1", "z"]);
    assert_eq!(a_records(&out), vec![z_b.clone()], "{out}");
    // ... and it sees everyone.
    assert!(getent(&host, "z", "x").is_some());
    assert!(getent(&host, "z", "y").is_some());

    // Names of networks a sandbox is not on do not exist for it, through any gateway.
    for server in ["@10.32.0.1", "@10.33.0.1"] {
        let out = dig(&host, "x", &[server, "y.netd.internal"]);
        assert_eq!(status(&out), "NXDOMAIN", "x asking {server}: {out}");
    }
    let out = dig(&host, "y", &["@10.33.0.1", "x.netd.internal"]);
    assert_eq!(status(&out), "NXDOMAIN", "{out}");
}

#[test]
fn connect_disconnect_and_rm_change_names_at_once() {
    let host = TestHost::new();
    host.netctl_ok(&["network", "create", "--subnet", "10.34.0.0/24", "mynet"]);
    host.netctl_ok(&["network", "create", "--subnet", "10.35.0.0/24", "other"]);
    host.netctl_ok(&["run", "-d", "--name", "client", "--network", "mynet"]);
    host.netctl_ok(&["run", "-d", "--name", "db", "--network", "other"]);
    let ask = |name: &str| {
        dig(
            &host,
            "client",
            &["@10.34.0.1", &format!("{name}.netd.internal")],
        )
    };
    assert_eq!(status(&ask("db")), "NXDOMAIN");

    host.netctl_ok(&["connect", "--alias", "database", "mynet", "db"]);
    let db = host.ip_of("db", "mynet");
    assert_eq!(a_records(&ask("db")), vec![db.clone()]);
    assert_eq!(a_records(&ask("database")), vec![db.clone()]);

    host.netctl_ok(&["disconnect", "mynet", "db"]);
    assert_eq!(status(&ask("db")), "NXDOMAIN");
    assert_eq!(status(&ask("database")), "NXDOMAIN");

    host.netctl_ok(&["connect", "mynet", "db"]);
    assert_eq!(a_records(&ask("db")), vec![host.ip_of("db", "mynet")]);
    host.netctl_ok(&["rm", "-f", "db"]);
    assert_eq!(status(&ask("db")), "NXDOMAIN");

    // Listeners come and go with networks; a network made again listens again.
    host.netctl_ok(&["network", "rm", "other"]);
    assert!(!dns_listeners(&host).contains("10.35.0.1:53"));
    host.netctl_ok(&["network", "create", "--subnet", "10.35.0.0/24", "other"]);
    assert!(dns_listeners(&host).contains("10.35.0.1:53"));
}

#[test]
fn other_names_go_to_the_upstream_resolvers() {
    let mut host = TestHost::new();
    host.add_internet();
    let second = "198.51.100.3";
    run(&mut host.internet_cmd(
        "ip",
        &["addr", "add", &format!("{second}/24"), "dev", "wan"],
    ));
    let big: Vec<String> = (0..8)
        .map(|i| record("txt", &format!("big.test,{}", format!("{i}").repeat(200))))
        .collect();
    let mut first_records = vec![
        record("host", "upstream.test,198.51.100.7"),
        record("host", "printer,198.51.100.9"),
        // Answers over 512 bytes are cut on UDP whatever the client offers: netd must
        // fetch them again over TCP.
        "--edns-packet-max=512".to_string(),
    ];
    first_records.extend(big);
    let upstream = Upstream::start(&host, INTERNET_IP, &first_records);
    let _second = Upstream::start(
        &host,
        second,
        &[record("host", "upstream.test,198.51.100.8")],
    );

    host.netctl_ok(&["network", "create", "--subnet", "10.36.0.0/24", "mynet"]);
    host.netctl_ok(&[
        "network",
        "create",
        "--subnet",
        "10.37.0.0/24",
        "--opt",
        &format!("dns-upstream={second}"),
        "own",
    ]);
    host.netctl_ok(&["run", "-d", "--name", "c", "--network", "mynet"]);
    host.netctl_ok(&["run", "-d", "--name", "d", "--network", "own"]);

    assert_eq!(
        getent(&host, "c", "upstream.test"),
        Some("198.51.100.7".into())
    );
    // A bare single label netd does not know is forwarded too, as Docker does.
    assert_eq!(getent(&host, "c", "printer"), Some("198.51.100.9".into()));
    let out = dig(&host, "c", &["+tcp", "@10.36.0.1", "upstream.test"]);
    assert_eq!(a_records(&out), vec!["198.51.100.7"], "over TCP: {out}");
    // The network's own resolver wins over the host's.
    assert_eq!(
        getent(&host, "d", "upstream.test"),
        Some("198.51.100.8".into())
    );

    // Big answers: whole over UDP when the client offers room (netd refetched over TCP);
    // truncated with TC for a client without EDNS, and whole over TCP.
    let txt = |args: &[&str]| {
        let mut all = vec!["@10.36.0.1", "+ignore"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["big.test", "TXT"]);
        dig(&host, "c", &all)
    };
    let out = txt(&["+bufsize=4096"]);
    assert_eq!(answers(&out).len(), 8, "{out}");
    assert!(!flags(&out).contains(&"tc".to_string()), "{out}");
    let out = txt(&["+noedns"]);
    assert!(flags(&out).contains(&"tc".to_string()), "{out}");
    let out = txt(&["+tcp"]);
    assert_eq!(answers(&out).len(), 8, "{out}");

    // The host's resolv.conf changes: edited in place, then replaced by a rename.
    host.set_resolv_conf(&format!("nameserver {second}\n"));
    let switched = TestHost::eventually(Duration::from_secs(3), || {
        getent(&host, "c", "upstream.test").as_deref() == Some("198.51.100.8")
    });
    assert!(switched, "in-place edit of resolv.conf not picked up");
    let tmp = host.dir.path().join("resolv.conf.new");
    std::fs::write(&tmp, format!("nameserver {INTERNET_IP}\n")).unwrap();
    std::fs::rename(&tmp, host.resolv_conf()).unwrap();
    let switched = TestHost::eventually(Duration::from_secs(3), || {
        getent(&host, "c", "upstream.test").as_deref() == Some("198.51.100.7")
    });
    assert!(switched, "replaced resolv.conf not picked up");

    // No upstream answers: SERVFAIL, within 5 s, on UDP and TCP.
    drop(upstream);
    for transport in ["+notcp", "+tcp"] {
        let started = Instant::now();
        let out = dig(
            &host,
            "c",
            &["+time=8", transport, "@10.36.0.1", "upstream.test"],
        );
        assert_eq!(status(&out), "SERVFAIL", "{transport}: {out}");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{transport}: {:?}",
            started.elapsed()
        );
    }
}

#[test]
fn internal_networks_resolve_their_names_and_forward_nothing() {
    let mut host = TestHost::new();
    host.add_internet();
    let _upstream = Upstream::start(
        &host,
        INTERNET_IP,
        &[record("host", "upstream.test,198.51.100.7")],
    );
    host.netctl_ok(&[
        "network",
        "create",
        "--internal",
        "--subnet",
        "10.38.0.0/24",
        "sealed",
    ]);
    host.netctl_ok(&["run", "-d", "--name", "a", "--network", "sealed"]);
    host.netctl_ok(&["run", "-d", "--name", "b", "--network", "sealed"]);
    assert_eq!(getent(&host, "a", "b"), Some(host.ip_of("b", "sealed")));
    let started = Instant::now();
    let out = dig(&host, "a", &["@10.38.0.1", "upstream.test"]);
    assert_eq!(status(&out), "SERVFAIL", "{out}");
    assert!(started.elapsed() < Duration::from_secs(1));
}

#[test]
fn dns_can_be_turned_off_and_the_default_bridge_has_none_unless_asked() {
    let mut host = TestHost::new();
    host.netctl_ok(&[
        "network",
        "create",
        "--subnet",
        "10.39.0.0/24",
        "--opt",
        "dns=false",
        "quiet",
    ]);
    host.netctl_ok(&["run", "-d", "--name", "q1", "--network", "quiet"]);
    host.netctl_ok(&["run", "-d", "--name", "b1"]);
    host.netctl_ok(&["run", "-d", "--name", "b2"]);
    let listeners = dns_listeners(&host);
    assert!(!listeners.contains("10.39.0.1:53"), "{listeners}");
    assert!(!listeners.contains("172.17.0.1:53"), "{listeners}");
    for sandbox in ["q1", "b1"] {
        let resolv =
            String::from_utf8_lossy(&host.exec(sandbox, &["cat", "/etc/resolv.conf"]).stdout)
                .into_owned();
        assert_eq!(resolv, format!("nameserver {INTERNET_IP}\n"), "{sandbox}");
    }

    host.stop_netd();
    host.start_netd_with(&["--default-network-opt", "dns=true"]);
    assert!(dns_listeners(&host).contains("172.17.0.1:53"));
    assert_eq!(getent(&host, "b1", "b2"), Some(host.ip_of("b2", "bridge")));
    let rules = host.sh_ok("iptables", &["-S", "NETD-INPUT"]);
    assert!(
        rules.contains("-d 172.17.0.1/32 -i docker0 -p udp -m udp --dport 53 -j ACCEPT"),
        "{rules}"
    );
    assert!(!rules.contains("10.39.0.1"), "{rules}");
}

#[test]
fn names_survive_a_restart_and_a_crash() {
    let mut host = TestHost::new();
    host.netctl_ok(&["network", "create", "--subnet", "10.40.0.0/24", "mynet"]);
    host.netctl_ok(&["run", "-d", "--name", "web", "--network", "mynet"]);
    host.netctl_ok(&["run", "-d", "--name", "client", "--network", "mynet"]);
    let web = host.ip_of("web", "mynet");
    host.stop_netd();
    host.start_netd();
    assert_eq!(getent(&host, "client", "web"), Some(web.clone()));
    host.kill_netd();
    host.start_netd();
    assert_eq!(getent(&host, "client", "web"), Some(web));
    assert!(!host.netd_log().contains("DNS on"), "{}", host.netd_log());
}

#[test]
fn bad_requests_get_the_right_answer_and_a_flood_does_not_starve_others() {
    let mut host = TestHost::new();
    host.add_internet();
    let _upstream = Upstream::start(
        &host,
        INTERNET_IP,
        &[record("host", "upstream.test,198.51.100.7")],
    );
    host.netctl_ok(&["network", "create", "--subnet", "10.41.0.0/24", "mynet"]);
    // The flooder's network forwards to an address where nothing answers, so its
    // requests pile up waiting.
    host.netctl_ok(&[
        "network",
        "create",
        "--subnet",
        "10.42.0.0/24",
        "--opt",
        "dns-upstream=198.51.100.99",
        "noisy",
    ]);
    host.netctl_ok(&["run", "-d", "--name", "web", "--network", "mynet"]);
    host.netctl_ok(&["run", "-d", "--name", "client", "--network", "mynet"]);
    host.netctl_ok(&["run", "-d", "--name", "flooder", "--network", "noisy"]);

    let out = host.exec("client", &["python3", PROBE, "bad", "10.41.0.1"]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let got: std::collections::HashMap<&str, &str> =
        text.lines().filter_map(|l| l.split_once(' ')).collect();
    let expected = [
        ("empty", "none"),
        ("short-header", "none"),
        ("header-only", "FORMERR"),
        ("truncated-question", "FORMERR"),
        ("label-over-63", "FORMERR"),
        ("name-over-255", "FORMERR"),
        ("pointer-loop", "FORMERR"),
        ("two-questions", "FORMERR"),
        ("counts-lie", "FORMERR"),
        ("type-unknown", "NOERROR"),
        ("type-mx", "NOERROR"),
        ("opcode-status", "NOTIMP"),
        ("opcode-update", "NOTIMP"),
        ("edns-version-1", "BADVERS"),
        ("is-a-response", "none"),
        ("trailing-garbage", "NOERROR"),
    ];
    for (case, rcode) in expected {
        assert_eq!(got.get(case).copied(), Some(rcode), "{case}: {text}");
    }
    assert!(got.contains_key("random-bytes"), "{text}");
    assert!(got.contains_key("class-chaos"), "{text}");

    let web = host.ip_of("web", "mynet");
    let flood = host
        .netctl_cmd(&[
            "exec",
            "flooder",
            "--",
            "python3",
            PROBE,
            "flood",
            "10.42.0.1",
            "slow.test",
            "6",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start flood");
    std::thread::sleep(Duration::from_secs(1));
    for _ in 0..5 {
        let started = Instant::now();
        assert_eq!(getent(&host, "client", "web"), Some(web.clone()));
        assert_eq!(
            getent(&host, "client", "upstream.test"),
            Some("198.51.100.7".into())
        );
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "{:?}",
            started.elapsed()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let flood_out = flood.wait_with_output().expect("flood");
    let sent: u64 = String::from_utf8_lossy(&flood_out.stdout)
        .trim()
        .parse()
        .unwrap_or(0);
    assert!(sent > 10_000, "the flood sent only {sent} requests");
    // Still serving, and the same process.
    assert!(host.netd_pid().is_some());
    assert_eq!(getent(&host, "client", "web"), Some(web));
}
