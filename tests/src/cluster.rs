//! Multi-host test beds: an underlay (a bridge in its own namespace) joining test hosts,
//! a router namespace with a second subnet behind it, and a real etcd cluster whose
//! members run in their own namespaces on the underlay. Everything is removed on drop.

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::{must, run, TestHost, COUNTER};

/// The underlay's subnet (hosts, etcd members, the router's first leg) and the subnet
/// behind the router.
pub const UNDERLAY: &str = "192.168.60";
pub const REMOTE: &str = "192.168.61";
const ROUTER_IP: &str = "192.168.60.254";
const ROUTER_REMOTE_IP: &str = "192.168.61.254";

fn unique(what: &str) -> String {
    format!(
        "ndt{}{what}{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::SeqCst)
    )
}

/// A bridge in its own namespace, and the namespaces plugged into it.
#[derive(Debug)]
pub struct Underlay {
    pub name: String,
    namespaces: Vec<String>,
    plugs: std::sync::atomic::AtomicU32,
}

impl Underlay {
    pub fn new() -> Underlay {
        let name = unique("ul");
        must(Command::new("ip").args(["netns", "add", &name]));
        for args in [
            vec!["link", "set", "lo", "up"],
            vec!["link", "add", "ul", "type", "bridge"],
            vec!["link", "set", "ul", "up"],
        ] {
            must(Command::new("ip").arg("-n").arg(&name).args(&args));
        }
        Underlay {
            name,
            namespaces: Vec::new(),
            plugs: std::sync::atomic::AtomicU32::new(0),
        }
    }

    /// Gives the namespace at `netns` an interface `ifname` on the underlay, with `address`
    /// (`IP/LEN`), up.
    pub fn plug(&self, netns: &str, ifname: &str, address: &str) {
        let port = format!("p{}", self.plugs.fetch_add(1, Ordering::SeqCst));
        must(Command::new("ip").args([
            "-n", &self.name, "link", "add", &port, "type", "veth", "peer", "name", ifname,
            "netns", netns,
        ]));
        must(
            Command::new("ip").args(["-n", &self.name, "link", "set", &port, "master", "ul", "up"]),
        );
        let inside = |args: &[&str]| must(&mut TestHost::in_netns(netns, "ip", args));
        inside(&["addr", "add", address, "dev", ifname]);
        inside(&["link", "set", ifname, "up"]);
    }

    /// A new namespace of its own (loopback up) plugged in at `ip`; removed with the
    /// underlay. Returns its path.
    pub fn add_namespace(&mut self, ip: &str) -> String {
        let name = unique("n");
        must(Command::new("ip").args(["netns", "add", &name]));
        must(Command::new("ip").args(["-n", &name, "link", "set", "lo", "up"]));
        self.namespaces.push(name.clone());
        let path = format!("/run/netns/{name}");
        self.plug(&path, "eth0", &format!("{ip}/24"));
        path
    }

    /// A router at .254 of the underlay with a second subnet (`REMOTE`.0/24) behind it;
    /// returns the router's namespace path. `plug_remote` puts hosts there.
    pub fn add_router(&mut self) -> String {
        let path = self.add_namespace(ROUTER_IP);
        must(&mut TestHost::in_netns(
            &path,
            "sysctl",
            &["-qw", "net.ipv4.ip_forward=1"],
        ));
        must(&mut TestHost::in_netns(
            &path,
            "ip",
            &["link", "add", "rbr", "type", "bridge"],
        ));
        must(&mut TestHost::in_netns(
            &path,
            "ip",
            &[
                "addr",
                "add",
                &format!("{ROUTER_REMOTE_IP}/24"),
                "dev",
                "rbr",
            ],
        ));
        must(&mut TestHost::in_netns(
            &path,
            "ip",
            &["link", "set", "rbr", "up"],
        ));
        path
    }

    /// Puts a namespace on the router's second subnet at `ip`, its default route via the
    /// router.
    pub fn plug_remote(&self, router: &str, netns: &str, ip: &str) {
        let port = format!("r{}", self.plugs.fetch_add(1, Ordering::SeqCst));
        must(&mut TestHost::in_netns(
            router,
            "ip",
            &[
                "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns", netns,
            ],
        ));
        must(&mut TestHost::in_netns(
            router,
            "ip",
            &["link", "set", &port, "master", "rbr", "up"],
        ));
        let inside = |args: &[&str]| must(&mut TestHost::in_netns(netns, "ip", args));
        inside(&["addr", "add", &format!("{ip}/24"), "dev", "eth0"]);
        inside(&["link", "set", "eth0", "up"]);
        inside(&["route", "add", "default", "via", ROUTER_REMOTE_IP]);
    }

    /// Tells a namespace on the underlay that the remote subnet is behind the router.
    pub fn route_remote(netns: &str) {
        must(&mut TestHost::in_netns(
            netns,
            "ip",
            &["route", "add", &format!("{REMOTE}.0/24"), "via", ROUTER_IP],
        ));
    }
}

impl Drop for Underlay {
    fn drop(&mut self) {
        let paths: Vec<PathBuf> = self
            .namespaces
            .iter()
            .map(|n| PathBuf::from(format!("/run/netns/{n}")))
            .collect();
        crate::kill_processes_in(&paths);
        for name in self.namespaces.iter().chain(std::iter::once(&self.name)) {
            let _ = run(Command::new("ip").args(["netns", "del", name]));
        }
    }
}

/// One etcd member: its namespace, address and process.
#[derive(Debug)]
struct Member {
    netns: String,
    ip: String,
    child: Option<Child>,
}

/// A real etcd cluster (Debian's etcd-server), each member in its own namespace on the
/// underlay. Stopped and its data removed on drop.
#[derive(Debug)]
pub struct Etcd {
    members: Vec<Member>,
    dir: tempfile::TempDir,
    /// Served over TLS with client certificates (files in `dir`, see [`Etcd::tls_files`]).
    tls: bool,
}

impl Etcd {
    /// Starts `ips.len()` members at those underlay addresses and waits until the cluster
    /// answers.
    pub fn start(underlay: &mut Underlay, ips: &[&str]) -> Etcd {
        Self::start_with(underlay, ips, false)
    }

    /// [`Etcd::start`] over TLS, wanting client certificates: a CA, a server certificate
    /// for the members' addresses and a client certificate, made with openssl.
    pub fn start_tls(underlay: &mut Underlay, ips: &[&str]) -> Etcd {
        Self::start_with(underlay, ips, true)
    }

    /// The CA, client certificate and key netd is given (`--etcd-cafile` ...).
    pub fn tls_files(&self) -> [PathBuf; 3] {
        ["ca.pem", "client.pem", "client.key"].map(|f| self.dir.path().join(f))
    }

    fn make_certificates(dir: &std::path::Path, ips: &[&str]) {
        let openssl = |args: &[&str]| {
            must(Command::new("openssl").current_dir(dir).args(args));
        };
        let key = |name: &str| {
            openssl(&[
                "req",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-keyout",
                &format!("{name}.key"),
                "-out",
                &format!("{name}.csr"),
                "-subj",
                &format!("/CN=netd-test-{name}"),
            ]);
        };
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=netd-test-ca",
        ]);
        let sans: Vec<String> = ips.iter().map(|ip| format!("IP:{ip}")).collect();
        std::fs::write(
            dir.join("server.cnf"),
            format!(
                "subjectAltName={}\nextendedKeyUsage=serverAuth,clientAuth\n",
                sans.join(",")
            ),
        )
        .expect("server.cnf");
        std::fs::write(dir.join("client.cnf"), "extendedKeyUsage=clientAuth\n")
            .expect("client.cnf");
        for name in ["server", "client"] {
            key(name);
            openssl(&[
                "x509",
                "-req",
                "-in",
                &format!("{name}.csr"),
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &format!("{name}.pem"),
                "-days",
                "2",
                "-extfile",
                &format!("{name}.cnf"),
            ]);
        }
    }

    fn start_with(underlay: &mut Underlay, ips: &[&str], tls: bool) -> Etcd {
        let dir = tempfile::Builder::new()
            .prefix("netd-etcd-")
            .tempdir()
            .expect("tempdir");
        let members = ips
            .iter()
            .map(|ip| Member {
                netns: underlay.add_namespace(ip),
                ip: ip.to_string(),
                child: None,
            })
            .collect();
        if tls {
            Self::make_certificates(dir.path(), ips);
        }
        let mut etcd = Etcd { members, dir, tls };
        for i in 0..etcd.members.len() {
            etcd.start_member(i);
        }
        etcd.wait_healthy();
        etcd
    }

    /// `etcd://IP:2379,...` for `--cluster-store`.
    pub fn store(&self) -> String {
        let members: Vec<String> = self
            .members
            .iter()
            .map(|m| format!("{}:2379", m.ip))
            .collect();
        format!("etcd://{}", members.join(","))
    }

    /// Lets every netd route to the remote subnet through the router.
    pub fn route_remote(&self) {
        for m in &self.members {
            Underlay::route_remote(&m.netns);
        }
    }

    pub fn start_member(&mut self, i: usize) {
        let initial: Vec<String> = self
            .members
            .iter()
            .enumerate()
            .map(|(j, m)| format!("m{j}=http://{}:2380", m.ip))
            .collect();
        let m = &self.members[i];
        let log = std::fs::File::create(self.dir.path().join(format!("m{i}.log"))).expect("log");
        let scheme = if self.tls { "https" } else { "http" };
        let file = |f: &str| self.dir.path().join(f).to_string_lossy().into_owned();
        let tls_args: Vec<String> = if self.tls {
            vec![
                "--cert-file".into(),
                file("server.pem"),
                "--key-file".into(),
                file("server.key"),
                "--trusted-ca-file".into(),
                file("ca.pem"),
                "--client-cert-auth".into(),
            ]
        } else {
            Vec::new()
        };
        let mut cmd = TestHost::in_netns(
            &m.netns,
            "etcd",
            &[
                "--name",
                &format!("m{i}"),
                "--data-dir",
                self.dir
                    .path()
                    .join(format!("m{i}"))
                    .to_str()
                    .expect("utf-8"),
                "--listen-client-urls",
                &format!("{scheme}://{}:2379", m.ip),
                "--advertise-client-urls",
                &format!("{scheme}://{}:2379", m.ip),
                "--listen-peer-urls",
                &format!("http://{}:2380", m.ip),
                "--initial-advertise-peer-urls",
                &format!("http://{}:2380", m.ip),
                "--initial-cluster",
                &initial.join(","),
                "--heartbeat-interval",
                "50",
                "--election-timeout",
                "500",
            ],
        );
        cmd.args(&tls_args);
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start etcd (apt-get install etcd-server)");
        self.members[i].child = Some(child);
    }

    /// Kills a member (SIGKILL) and waits for it.
    pub fn kill_member(&mut self, i: usize) {
        if let Some(mut child) = self.members[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn kill_all(&mut self) {
        for i in 0..self.members.len() {
            self.kill_member(i);
        }
    }

    pub fn start_all(&mut self) {
        for i in 0..self.members.len() {
            if self.members[i].child.is_none() {
                self.start_member(i);
            }
        }
        self.wait_healthy();
    }

    fn wait_healthy(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if self.etcdctl(&["endpoint", "health"]).status.success() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("etcd did not come up: {}", self.log());
    }

    fn log(&self) -> String {
        (0..self.members.len())
            .map(|i| {
                std::fs::read_to_string(self.dir.path().join(format!("m{i}.log")))
                    .unwrap_or_default()
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Runs etcdctl against the live members, from the first live member's namespace.
    pub fn etcdctl(&self, args: &[&str]) -> Output {
        let live: Vec<&Member> = self.members.iter().filter(|m| m.child.is_some()).collect();
        let Some(first) = live.first() else {
            panic!("no etcd member is running");
        };
        let scheme = if self.tls { "https" } else { "http" };
        let endpoints: Vec<String> = live
            .iter()
            .map(|m| format!("{scheme}://{}:2379", m.ip))
            .collect();
        let mut cmd = TestHost::in_netns(&first.netns, "etcdctl", &[]);
        cmd.env("ETCDCTL_API", "3")
            .arg("--endpoints")
            .arg(endpoints.join(","));
        if self.tls {
            let [ca, cert, key] = self.tls_files();
            cmd.arg("--cacert")
                .arg(ca)
                .arg("--cert")
                .arg(cert)
                .arg("--key")
                .arg(key);
        }
        cmd.args(args);
        run(&mut cmd)
    }

    /// Every key and value under a prefix, one `key=value` per line.
    pub fn dump(&self, prefix: &str) -> String {
        let out = self.etcdctl(&["get", "--prefix", prefix]);
        assert!(out.status.success(), "etcdctl get: {out:?}");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let lines: Vec<&str> = text.lines().collect();
        lines
            .chunks(2)
            .map(|kv| kv.join("="))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Writes a key by hand (what an operator with etcdctl does).
    pub fn put(&self, key: &str, value: &str) {
        let out = self.etcdctl(&["put", key, value]);
        assert!(out.status.success(), "etcdctl put: {out:?}");
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.kill_all();
    }
}

/// netd's flags for a node of the cluster.
fn cluster_args(etcd: &Etcd, name: &str, node_ip: Option<&str>, extra: &[&str]) -> Vec<String> {
    let mut args = vec![
        "--cluster-store".to_string(),
        etcd.store(),
        "--node-name".to_string(),
        name.to_string(),
    ];
    if let Some(ip) = node_ip {
        args.extend(["--node-ip".to_string(), ip.to_string()]);
    }
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

/// A test host on the underlay at `UNDERLAY.<n>` running netd in the cluster as `name`.
pub fn cluster_host(
    underlay: &Underlay,
    etcd: &Etcd,
    n: u8,
    name: &str,
    extra: &[&str],
) -> TestHost {
    let mut host = TestHost::bare();
    let ip = format!("{UNDERLAY}.{n}");
    underlay.plug(&host.netns_path(), "eth0", &format!("{ip}/24"));
    host.set_netd_args(cluster_args(etcd, name, Some(&ip), extra));
    host.start_netd();
    host
}

/// A test host behind the router at `REMOTE.<n>`, netd taking its node IP from the
/// default route.
pub fn remote_host(
    underlay: &Underlay,
    router: &str,
    etcd: &Etcd,
    n: u8,
    name: &str,
    extra: &[&str],
) -> TestHost {
    let mut host = TestHost::bare();
    underlay.plug_remote(router, &host.netns_path(), &format!("{REMOTE}.{n}"));
    host.set_netd_args(cluster_args(etcd, name, None, extra));
    host.start_netd();
    host
}

/// Waits until every host sees `name` with `nodes` nodes; panics with their logs if not.
pub fn wait_for_network(hosts: &[&TestHost], name: &str, nodes: usize) {
    for host in hosts {
        let ok = TestHost::eventually(Duration::from_secs(10), || {
            let out = host.netctl(&["network", "inspect", name]);
            out.status.success()
                && serde_json::from_slice::<serde_json::Value>(&out.stdout)
                    .map(|v| v[0]["Nodes"].as_array().map_or(0, Vec::len) == nodes)
                    .unwrap_or(false)
        });
        if !ok {
            let logs: Vec<String> = hosts
                .iter()
                .map(|h| format!("--- {}:\n{}", h.name, h.netd_log()))
                .collect();
            panic!(
                "{name} did not reach {} with {nodes} nodes:\n{}",
                host.name,
                logs.join("\n")
            );
        }
    }
}

/// `netctl network create --driver DRIVER --subnet SUBNET NAME` on `host`, which must work.
pub fn create_cluster_network(host: &TestHost, driver: &str, subnet: &str, name: &str) -> String {
    host.netctl_ok(&[
        "network", "create", "--driver", driver, "--subnet", subnet, name,
    ])
}
