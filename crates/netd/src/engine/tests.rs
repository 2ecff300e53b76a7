//! The engine's verbs against a fake host (`linkd::FakeHost`: a model of the kernel's
//! links, addresses, routes, namespaces and iptables; fake pause processes), so they run
//! as a normal user. Each test looks at what the verbs left in that model, not at the
//! engine's own records.

use std::collections::BTreeMap;
use std::path::Path;

use bridge_driver::firewall::{hostport_chain, network_chain};
use bridge_driver::model::NetworkRequest;
use bridge_driver::names::host_veth_name;
use linkd::{FakeHost, Kernel, Link};
use tempfile::TempDir;

use super::{ConnectRequest, Engine, EngineConfig, RunRequest, System};
use crate::pause::RecordingProcesses;
use crate::state::{Paths, Sandbox};

/// An engine on a fake host, with its state and run directories in a temporary directory.
struct Fixture {
    dir: TempDir,
    fake: FakeHost,
    processes: RecordingProcesses,
    engine: Engine,
    repairs: Vec<String>,
}

fn config(dir: &Path) -> EngineConfig {
    let resolv_conf = dir.join("resolv.conf");
    let _ = std::fs::write(&resolv_conf, "nameserver 192.0.2.53\n");
    EngineConfig {
        paths: Paths {
            root: dir.join("state"),
            run_dir: dir.join("run"),
            pause_binary: dir.join("netd-pause"),
        },
        default_bridge: "nd-unit0".into(),
        default_subnet: "172.31.0.1/16".parse().expect("subnet"),
        default_network: true,
        firewall_check: None,
        resolv_conf,
        default_network_options: BTreeMap::new(),
    }
}

fn system(fake: &FakeHost, processes: &RecordingProcesses) -> System {
    System {
        host: Box::new(fake.kernel()),
        namespaces: Box::new(fake.namespaces()),
        firewall: Box::new(fake.firewall()),
        processes: Box::new(processes.clone()),
        reaper: Box::new(super::reaper::InlineReaper),
    }
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().expect("tempdir");
        Fixture::start(dir, FakeHost::new(), RecordingProcesses::default())
    }

    fn start(dir: TempDir, fake: FakeHost, processes: RecordingProcesses) -> Fixture {
        let (engine, repairs) =
            Engine::start_on(config(dir.path()), system(&fake, &processes)).expect("start");
        Fixture {
            dir,
            fake,
            processes,
            engine,
            repairs,
        }
    }

    /// netd restarted on the same host (the fakes keep the kernel's state).
    fn restart(self) -> Fixture {
        let Fixture {
            dir,
            fake,
            processes,
            engine,
            ..
        } = self;
        drop(engine);
        Fixture::start(dir, fake, processes)
    }

    fn network(&mut self, name: &str, subnet: &str) -> bridge_driver::Network {
        self.engine
            .create_network(NetworkRequest {
                name: name.into(),
                subnet: Some(subnet.into()),
                // The DNS server binds sockets of the real host: not in unit tests.
                options: [("dns".to_string(), "false".to_string())].into(),
                ..Default::default()
            })
            .expect("network create")
    }

    fn run(&mut self, name: &str, network: &str) -> Sandbox {
        self.engine
            .run(RunRequest {
                name: Some(name.into()),
                network: Some(network.into()),
                ..Default::default()
            })
            .expect("run")
    }

    fn run_at(&mut self, name: &str, network: &str, ip: &str) -> Sandbox {
        self.engine
            .run(RunRequest {
                name: Some(name.into()),
                network: Some(network.into()),
                ip: Some(ip.into()),
                ..Default::default()
            })
            .expect("run --ip")
    }

    fn netns(&self, sandbox: &Sandbox) -> std::path::PathBuf {
        self.engine.paths().netns(&sandbox.id)
    }

    fn host_link(&self, name: &str) -> Option<Link> {
        self.fake.world().host.link(name).cloned()
    }

    fn inside(&self, sandbox: &Sandbox) -> Option<linkd::RecordingKernel> {
        let world = self.fake.world();
        world
            .namespaces
            .get(&self.netns(sandbox))
            .map(|k| linkd::RecordingKernel {
                links: k.links.clone(),
                addresses: k.addresses.clone(),
                routes: k.routes.clone(),
                ..Default::default()
            })
    }
}

#[test]
fn start_makes_the_default_bridge_and_its_chains() {
    let fx = Fixture::new();
    let bridge = fx.host_link("nd-unit0").expect("default bridge");
    assert!(bridge.up && bridge.kind.as_deref() == Some("bridge"));
    let world = fx.fake.world();
    assert_eq!(
        world.host.addresses.get(&bridge.index),
        Some(&vec!["172.31.0.1/16".parse().expect("net")])
    );
    assert_eq!(
        world
            .host
            .sysctls
            .get("net/ipv4/ip_forward")
            .map(String::as_str),
        Some("1")
    );
    let forward = world.firewall.rules("filter", "FORWARD");
    assert!(
        forward.contains(&"-j NETD-FORWARD".to_string()),
        "{forward:?}"
    );
    let postrouting = world.firewall.rules("nat", "NETD-POSTROUTING");
    assert!(
        postrouting.contains(&"-s 172.31.0.0/16 ! -o nd-unit0 -j MASQUERADE".to_string()),
        "{postrouting:?}"
    );
    drop(world);
    // A second start finds everything in place.
    let fx = fx.restart();
    assert!(fx.repairs.is_empty(), "{:?}", fx.repairs);
}

#[test]
fn run_and_rm_make_and_remove_the_sandbox_in_the_kernel() {
    let mut fx = Fixture::new();
    let net = fx.network("mynet", "10.77.0.0/24");
    let sandbox = fx.run("web", "mynet");

    let bridge = fx.host_link(&net.bridge).expect("bridge");
    let veth = fx
        .host_link(&host_veth_name(&sandbox.id, 0))
        .expect("host end");
    assert_eq!(veth.master, Some(bridge.index));
    assert!(veth.up);
    assert_eq!(veth.hairpin, Some(true));
    let inside = fx.inside(&sandbox).expect("namespace");
    let eth0 = inside.link("eth0").expect("eth0").clone();
    assert!(eth0.up);
    assert_eq!(
        inside.addresses.get(&eth0.index),
        Some(&vec!["10.77.0.2/24".parse().expect("net")])
    );
    assert!(
        inside.routes.iter().any(|r| r.destination.prefix_len() == 0
            && r.gateway == Some("10.77.0.1".parse().expect("ip"))),
        "{:?}",
        inside.routes
    );
    assert!(inside.link("lo").is_some_and(|lo| lo.up));
    let pid = crate::state::read_pid(&fx.engine.paths().sandbox_file(&sandbox.id, "pause.pid"))
        .expect("pause pid file");
    assert_eq!(
        fx.processes.table().get(&pid).map(|p| p.netns.clone()),
        Some(fx.netns(&sandbox))
    );
    let hosts = std::fs::read_to_string(fx.engine.paths().sandbox_file(&sandbox.id, "hosts"))
        .expect("hosts");
    assert!(hosts.contains("10.77.0.2\t"), "{hosts}");
    let chain = fx
        .fake
        .world()
        .firewall
        .rules("filter", &network_chain(&net.id));
    assert!(!chain.is_empty(), "the network's forward chain is in place");

    fx.engine.remove_sandbox("web", false).expect("rm");
    assert!(fx.host_link(&host_veth_name(&sandbox.id, 0)).is_none());
    assert!(fx.inside(&sandbox).is_none(), "namespace gone");
    assert!(fx.processes.table().is_empty(), "pause stopped");
    assert!(!fx.engine.paths().sandbox_dir(&sandbox.id).exists());
    // The address is free again.
    fx.run_at("web2", "mynet", "10.77.0.2");
}

#[test]
fn connect_and_disconnect_move_the_default_route() {
    let mut fx = Fixture::new();
    fx.network("front", "10.78.0.0/24");
    fx.network("back", "10.79.0.0/24");
    let sandbox = fx.run("app", "front");
    fx.engine
        .connect(
            "back",
            ConnectRequest {
                container: "app".into(),
                ..Default::default()
            },
        )
        .expect("connect");
    let inside = fx.inside(&sandbox).expect("namespace");
    let eth1 = inside.link("eth1").expect("eth1").clone();
    assert_eq!(
        inside.addresses.get(&eth1.index),
        Some(&vec!["10.79.0.2/24".parse().expect("net")])
    );
    assert!(fx.host_link(&host_veth_name(&sandbox.id, 1)).is_some());

    fx.engine.disconnect("front", "app").expect("disconnect");
    let inside = fx.inside(&sandbox).expect("namespace");
    assert!(inside.link("eth0").is_none());
    assert!(fx.host_link(&host_veth_name(&sandbox.id, 0)).is_none());
    let default: Vec<_> = inside
        .routes
        .iter()
        .filter(|r| r.destination.prefix_len() == 0)
        .collect();
    assert_eq!(default.len(), 1, "{default:?}");
    assert_eq!(default[0].gateway, Some("10.79.0.1".parse().expect("ip")));
    assert_eq!(default[0].oif, Some(eth1.index));
}

#[test]
fn published_ports_are_rules_that_go_with_the_sandbox() {
    let mut fx = Fixture::new();
    let net = fx.network("pub", "10.80.0.0/24");
    let sandbox = fx
        .engine
        .run(RunRequest {
            name: Some("srv".into()),
            network: Some("pub".into()),
            publish: vec!["80".into(), "53/udp".into()],
            ..Default::default()
        })
        .expect("run -p");
    let tcp = sandbox.ports[0].host_port;
    let udp = sandbox.ports[1].host_port;
    let dnat = fx
        .fake
        .world()
        .firewall
        .rules("nat", &hostport_chain(&net.id));
    assert!(
        dnat.iter().any(|r| r.contains(&format!("--dport {tcp} "))
            && r.ends_with("--to-destination 10.80.0.2:80")),
        "{dnat:?}"
    );
    assert!(fx.fake.world().firewall.conntrack_flushes.contains(&udp));
    fx.engine.remove_sandbox("srv", false).expect("rm");
    let dnat = fx
        .fake
        .world()
        .firewall
        .rules("nat", &hostport_chain(&net.id));
    assert!(dnat.is_empty(), "{dnat:?}");
}

#[test]
fn a_run_that_fails_half_way_leaves_nothing_behind() {
    let mut fx = Fixture::new();
    fx.network("mynet", "10.81.0.0/24");
    let firewall_before = fx.fake.world().firewall.all_rules("nat");
    fx.fake.world().host.fail_on = Some("set hairpin".into());
    let err = fx
        .engine
        .run(RunRequest {
            name: Some("broken".into()),
            network: Some("mynet".into()),
            publish: vec!["80".into()],
            ..Default::default()
        })
        .expect_err("the kernel refuses");
    assert!(err.to_string().contains("set hairpin"), "{err}");
    fx.fake.world().host.fail_on = None;
    let world = fx.fake.world();
    assert!(world.namespaces.is_empty(), "{:?}", world.namespaces.keys());
    assert!(
        !world
            .host
            .links
            .iter()
            .any(|l| l.name.starts_with("nd") && l.kind.as_deref() == Some("veth")),
        "{:?}",
        world.host.links
    );
    assert_eq!(world.firewall.all_rules("nat"), firewall_before);
    drop(world);
    assert!(fx.processes.table().is_empty());
    assert!(fx.engine.list_sandboxes().is_empty());
    // Its address was given back.
    fx.run_at("ok", "mynet", "10.81.0.2");
}

#[test]
fn bad_input_is_refused_before_anything_is_touched() {
    let mut fx = Fixture::new();
    fx.network("mynet", "10.82.0.0/24");
    let (host_log, firewall_log) = {
        let world = fx.fake.world();
        (world.host.log.len(), world.firewall.log.len())
    };
    for (request, field) in [
        (
            RunRequest {
                network: Some("mynet".into()),
                ip: Some("10.99.0.5".into()),
                ..Default::default()
            },
            "--ip",
        ),
        (
            RunRequest {
                name: Some("bad name!".into()),
                ..Default::default()
            },
            "--name",
        ),
        (
            RunRequest {
                network: Some("none".into()),
                publish: vec!["80".into()],
                ..Default::default()
            },
            "-p",
        ),
    ] {
        let err = fx.engine.run(request).expect_err("refused");
        assert!(err.to_string().contains(field), "{field}: {err}");
    }
    let world = fx.fake.world();
    assert_eq!(
        world.host.log.len(),
        host_log,
        "{:?}",
        &world.host.log[host_log..]
    );
    assert_eq!(world.firewall.log.len(), firewall_log);
    assert!(world.namespaces.is_empty());
}

#[test]
fn reconcile_repairs_what_others_removed_and_then_finds_nothing() {
    let mut fx = Fixture::new();
    let net = fx.network("mynet", "10.83.0.0/24");
    let sandbox = fx.run("web", "mynet");
    let veth = host_veth_name(&sandbox.id, 0);
    // Behind netd's back: the veth deleted, the tables flushed, the pause process killed.
    let index = fx.host_link(&veth).expect("veth").index;
    fx.fake.kernel().delete_link(index, &veth).expect("delete");
    fx.fake.world().firewall.flush_table("filter");
    fx.fake.world().firewall.flush_table("nat");
    fx.processes.table().clear();

    let repairs = fx
        .engine
        .reconcile(Some(crate::metrics::Trigger::on_demand))
        .expect("reconcile");
    let said = |what: &str| repairs.iter().any(|r| r.contains(what));
    assert!(said("recreated interface eth0"), "{repairs:?}");
    assert!(said("restarted its pause process"), "{repairs:?}");
    assert!(
        said(&format!(
            "restored firewall chain {}",
            network_chain(&net.id)
        )),
        "{repairs:?}"
    );
    assert!(said("restored firewall jump"), "{repairs:?}");
    assert!(fx.host_link(&veth).is_some_and(|l| l.up));
    let inside = fx.inside(&sandbox).expect("namespace");
    assert!(inside.link("eth0").is_some_and(|l| l.up));
    assert!(fx
        .fake
        .world()
        .firewall
        .rules("filter", "FORWARD")
        .contains(&"-j NETD-FORWARD".to_string()));
    assert_eq!(fx.processes.table().len(), 1);

    let again = fx
        .engine
        .reconcile(Some(crate::metrics::Trigger::on_demand))
        .expect("reconcile again");
    assert!(again.is_empty(), "nothing left to repair: {again:?}");
}

#[test]
fn restart_removes_leaks_and_keeps_what_is_recorded() {
    let mut fx = Fixture::new();
    fx.network("mynet", "10.84.0.0/24");
    let sandbox = fx.run("web", "mynet");
    // A veth and a bridge netd owns but has no record of (a crash between steps).
    let leaked = host_veth_name("0123456789ab0123456789ab", 0);
    {
        let mut world = fx.fake.world();
        world.host.links.push(Link::new(900, &leaked, Some("veth")));
        world.host.links.push(Link {
            alias: Some(bridge_driver::names::bridge_alias("deadbeef0000")),
            ..Link::new(901, "br-gone", Some("bridge"))
        });
    }
    let fx = fx.restart();
    assert!(
        fx.repairs
            .iter()
            .any(|r| r.contains(&format!("removed leaked veth {leaked}"))),
        "{:?}",
        fx.repairs
    );
    assert!(
        fx.repairs.iter().any(|r| r.contains("br-gone")),
        "{:?}",
        fx.repairs
    );
    assert!(fx.host_link(&leaked).is_none() && fx.host_link("br-gone").is_none());
    assert!(fx.host_link(&host_veth_name(&sandbox.id, 0)).is_some());
    assert_eq!(fx.processes.table().len(), 1, "the pause process was kept");
}

#[test]
fn network_rm_takes_its_bridge_and_chains() {
    let mut fx = Fixture::new();
    let net = fx.network("gone", "10.85.0.0/24");
    fx.run("user", "gone");
    let err = fx.engine.remove_network("gone").expect_err("in use");
    assert!(err.to_string().contains("active endpoints"), "{err}");
    fx.engine.remove_sandbox("user", false).expect("rm");
    fx.engine.remove_network("gone").expect("network rm");
    assert!(fx.host_link(&net.bridge).is_none());
    let world = fx.fake.world();
    assert!(!world.firewall.has_chain("filter", &network_chain(&net.id)));
    assert!(!world.firewall.has_chain("nat", &hostport_chain(&net.id)));
}

mod cluster {
    use super::*;
    use crate::cluster::{NameRecord, NetworkView};
    use bridge_driver::cluster::{ClusterMembership, Driver, FlannelConfig};

    fn net(s: &str) -> ipnet::Ipv4Net {
        s.parse().expect("test literal")
    }

    /// A fixture whose host has an underlay interface at 192.168.50.1/24.
    fn clustered() -> (Fixture, crate::cluster::NodeIdentity) {
        let mut fx = Fixture::new();
        {
            let mut world = fx.fake.world();
            world.host.links.push(Link::new(50, "eth0", Some("veth")));
            world
                .host
                .addresses
                .insert(50, vec![net("192.168.50.1/24")]);
        }
        let node = fx
            .engine
            .cluster_node(Some("192.168.50.1".parse().expect("ip")), "a")
            .expect("node");
        assert_eq!(node.underlay, "eth0");
        (fx, node)
    }

    fn config() -> FlannelConfig {
        FlannelConfig::from_request(net("10.244.0.0/16"), Driver::Vxlan, &BTreeMap::new())
            .expect("config")
    }

    fn peer(ip: &str, subnet: &str) -> (ipnet::Ipv4Net, bridge_driver::cluster::LeaseAttrs) {
        let m = ClusterMembership {
            config: config(),
            node_ip: ip.parse().expect("ip"),
            node_name: format!("node-{ip}"),
            underlay: "eth0".into(),
            peers: Vec::new(),
        };
        (net(subnet), m.lease())
    }

    fn view(
        peers: Vec<(ipnet::Ipv4Net, bridge_driver::cluster::LeaseAttrs)>,
    ) -> crate::cluster::ClusterView {
        [(
            "ov".to_string(),
            NetworkView {
                config: config(),
                own: Some(net("10.244.1.0/24")),
                peers,
                names: vec![NameRecord {
                    id: "f".repeat(64),
                    name: "far".into(),
                    aliases: Vec::new(),
                    ip: "10.244.2.2".parse().expect("ip"),
                    labels: [("app".to_string(), "far".to_string())].into(),
                }],
            },
        )]
        .into()
    }

    #[test]
    fn a_view_becomes_a_network_with_its_overlay_and_follows_the_peers() {
        let (mut fx, node) = clustered();
        fx.engine
            .sync_cluster(view(vec![peer("192.168.50.2", "10.244.2.0/24")]), &node)
            .expect("sync");
        let vxlan = fx.host_link("netd.1").expect("vxlan device");
        assert_eq!(vxlan.kind.as_deref(), Some("vxlan"));
        assert_eq!(vxlan.mtu, 1450);
        {
            let world = fx.fake.world();
            assert_eq!(
                world.host.neighbours.len(),
                1,
                "{:?}",
                world.host.neighbours
            );
            assert_eq!(world.host.fdb.len(), 1);
            assert_eq!(world.host.fdb[0].remote.to_string(), "192.168.50.2");
            assert!(world
                .host
                .routes
                .iter()
                .any(|r| r.destination == net("10.244.2.0/24")
                    && r.gateway == Some("10.244.2.0".parse().expect("ip"))
                    && r.oif == Some(vxlan.index)));
            let chains = world.firewall.all_rules("filter");
            assert!(
                chains.iter().any(|r| r.contains("-s 10.244.0.0/16 -o br-")),
                "{chains:?}"
            );
        }
        // Sandboxes of other nodes are in the network's names.
        let records = crate::dns::Records::from_state(&fx.engine.state);
        let names = records
            .network_at("10.244.1.1".parse().expect("ip"))
            .expect("the cluster network's DNS");
        assert_eq!(
            names.addresses("far"),
            Some(&["10.244.2.2".parse().expect("ip")][..])
        );
        assert!(names.name_of("10.244.2.2".parse().expect("ip")).is_some());
        // A sandbox on it takes an address of the node's subnet, through the shared store.
        let web = fx.run("web", "ov");
        assert_eq!(web.endpoints[0].ip.to_string(), "10.244.1.2");
        let reserved = fx.engine.paths().cluster_ipam_dir().join("ov/10.244.1.2");
        assert!(reserved.exists(), "host-local reservation file");
        let subnet_env =
            std::fs::read_to_string(fx.engine.paths().subnet_env("ov")).expect("subnet.env");
        assert!(
            subnet_env.contains("FLANNEL_SUBNET=10.244.1.1/24"),
            "{subnet_env}"
        );

        // The peer restarts with a new node IP (so a new VTEP MAC): reprogrammed at once.
        fx.engine
            .sync_cluster(view(vec![peer("192.168.50.9", "10.244.2.0/24")]), &node)
            .expect("sync");
        {
            let world = fx.fake.world();
            assert_eq!(world.host.fdb.len(), 1, "{:?}", world.host.fdb);
            assert_eq!(world.host.fdb[0].remote.to_string(), "192.168.50.9");
        }
        // The peer goes: its entries go.
        fx.engine
            .sync_cluster(view(Vec::new()), &node)
            .expect("sync");
        {
            let world = fx.fake.world();
            assert!(world.host.fdb.is_empty() && world.host.neighbours.is_empty());
            assert!(!world
                .host
                .routes
                .iter()
                .any(|r| r.destination == net("10.244.2.0/24")));
        }
        // The network leaves the store while web uses it: kept; once web is gone, removed.
        fx.engine
            .sync_cluster(crate::cluster::ClusterView::new(), &node)
            .expect("sync");
        assert!(fx.host_link("netd.1").is_some());
        fx.engine.remove_sandbox("web", false).expect("rm");
        assert!(!reserved.exists(), "the reservation goes with the sandbox");
        fx.engine
            .sync_cluster(crate::cluster::ClusterView::new(), &node)
            .expect("sync");
        assert!(fx.host_link("netd.1").is_none());
        assert!(!fx.engine.paths().subnet_env("ov").exists());
    }

    #[test]
    fn a_restart_without_the_store_programs_the_recorded_peers() {
        let (mut fx, node) = clustered();
        fx.engine
            .sync_cluster(view(vec![peer("192.168.50.2", "10.244.2.0/24")]), &node)
            .expect("sync");
        // Someone flushes the overlay while netd is down; netd starts with no store.
        {
            let mut world = fx.fake.world();
            world.host.fdb.clear();
            world.host.neighbours.clear();
            world
                .host
                .routes
                .retain(|r| r.destination != net("10.244.2.0/24"));
        }
        let fx = fx.restart();
        assert!(
            fx.repairs.iter().any(|r| r.contains("added fdb entry")),
            "{:?}",
            fx.repairs
        );
        let world = fx.fake.world();
        assert_eq!(world.host.fdb.len(), 1);
        assert!(world
            .host
            .routes
            .iter()
            .any(|r| r.destination == net("10.244.2.0/24")));
    }

    #[test]
    fn policies_select_sandboxes_of_other_nodes_by_their_published_labels() {
        let (mut fx, node) = clustered();
        fx.engine
            .sync_cluster(view(vec![peer("192.168.50.2", "10.244.2.0/24")]), &node)
            .expect("sync");
        fx.engine
            .run(RunRequest {
                name: Some("web".into()),
                network: Some("ov".into()),
                labels: vec!["app=web".into()],
                ..Default::default()
            })
            .expect("run");
        let text = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: p}\nspec:\n  podSelector: {matchLabels: {app: web}}\n  ingress: [{from: [{podSelector: {matchLabels: {app: far}}}]}]\n";
        fx.engine.apply_policies(text, None).expect("apply");
        let peers_of = |fx: &Fixture| -> Vec<String> {
            let world = fx.fake.world();
            let chains = world.firewall.all_rules("filter");
            let rule = chains
                .iter()
                .find(|r| r.starts_with("-A NETD-PI-"))
                .expect("the policy's rule")
                .clone();
            let set = rule
                .split_whitespace()
                .skip_while(|w| *w != "--match-set")
                .nth(1)
                .expect("its peer set")
                .to_string();
            world.firewall.sets[&set].1.iter().cloned().collect()
        };
        assert_eq!(peers_of(&fx), vec!["10.244.2.2".to_string()]);
        // The other node relabels its sandbox: it leaves the set here.
        let mut changed = view(vec![peer("192.168.50.2", "10.244.2.0/24")]);
        if let Some(network) = changed.values_mut().next() {
            network.names[0].labels = [("app".to_string(), "other".to_string())].into();
        }
        fx.engine.sync_cluster(changed, &node).expect("sync");
        fx.engine.after_job();
        assert!(peers_of(&fx).is_empty(), "{:?}", peers_of(&fx));
    }

    #[test]
    fn a_cluster_network_that_clashes_with_this_node_is_refused() {
        let (mut fx, _) = clustered();
        fx.network("local", "10.244.9.0/24");
        let err = fx
            .engine
            .check_cluster_network("ov", &config())
            .expect_err("overlap");
        assert!(err.to_string().contains("--subnet"), "{err}");
        let err = fx
            .engine
            .check_cluster_network("local", &config())
            .expect_err("name");
        assert!(err.to_string().contains("already exists"), "{err}");
    }
}

/// Network policy on the fake host: what the kernel's sets and the filter table hold.
mod policy {
    use super::*;

    const API: &str = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n";

    fn members(fx: &Fixture, set_prefix: &str) -> Vec<Vec<String>> {
        fx.fake
            .world()
            .firewall
            .sets
            .iter()
            .filter(|(name, _)| name.starts_with(set_prefix))
            .map(|(_, (_, m))| m.iter().cloned().collect())
            .collect()
    }

    #[test]
    fn policies_become_sets_and_chains_and_labels_move_members_only() {
        let mut fx = Fixture::new();
        fx.network("net", "10.50.0.0/24");
        let web = fx
            .engine
            .run(RunRequest {
                name: Some("web".into()),
                network: Some("net".into()),
                labels: vec!["app=web".into()],
                ..Default::default()
            })
            .expect("run");
        fx.run("db", "net");
        let text = format!("{API}metadata: {{name: web-in}}\nspec:\n  podSelector: {{matchLabels: {{app: web}}}}\n  ingress: [{{from: [{{podSelector: {{matchLabels: {{role: client}}}}}}]}}]\n");
        let applied = fx.engine.apply_policies(&text, None).expect("apply");
        assert_eq!(applied[0].action, "created");
        let filter = fx.fake.world().firewall.all_rules("filter");
        assert!(
            filter.iter().any(|r| r == "-A NETD-FORWARD -j NETD-POLICY"),
            "{filter:#?}"
        );
        assert!(filter.iter().any(|r| r.contains("\"default/web-in\"")));
        assert_eq!(
            members(&fx, "NETD-POL-INGRESS"),
            vec![vec![web.endpoints[0].ip.to_string()]]
        );
        assert_eq!(
            fx.engine.apply_policies(&text, None).expect("again")[0].action,
            "unchanged"
        );

        // db becomes a client: one set member added, no rule written.
        let restores = fx.fake.world().firewall.log.len();
        let db = fx
            .engine
            .label("db", &["role=client".into()])
            .expect("label");
        fx.engine.after_job();
        let log = fx.fake.world().firewall.log[restores..].to_vec();
        assert_eq!(log.len(), 1, "{log:#?}");
        assert!(log[0].starts_with("ipset members") && log[0].contains("add NETD-PODS-"));
        assert!(log[0].contains(&db.endpoints[0].ip.to_string()));

        // Removed: chains, jump and sets go.
        fx.engine.remove_policy("default", "web-in").expect("rm");
        let filter = fx.fake.world().firewall.all_rules("filter");
        assert!(
            !filter
                .iter()
                .any(|r| r.contains("NETD-POLICY") || r.contains("NETD-PI-")),
            "{filter:#?}"
        );
        assert!(fx.fake.world().firewall.sets.is_empty());
        assert!(fx.engine.remove_policy("default", "web-in").is_err());
    }

    #[test]
    fn a_failing_firewall_leaves_the_policies_as_they_were() {
        let mut fx = Fixture::new();
        fx.network("net", "10.51.0.0/24");
        fx.run("a", "net");
        let before = fx.fake.world().firewall.all_rules("filter");
        fx.fake.world().firewall.fail_on = Some("NETD-POLICY".into());
        let text = format!("{API}metadata: {{name: p}}\nspec: {{podSelector: {{}}}}\n");
        assert!(fx.engine.apply_policies(&text, None).is_err());
        fx.fake.world().firewall.fail_on = None;
        assert!(fx.engine.policies(None).is_empty());
        assert_eq!(fx.fake.world().firewall.all_rules("filter"), before);
        // And after a restart nothing of it comes back.
        let fx = fx.restart();
        assert!(fx.engine.policies(None).is_empty());
    }

    #[test]
    fn a_clustered_node_takes_the_stores_policies_in_place_of_its_own() {
        let mut fx = Fixture::new();
        fx.network("net", "10.52.0.0/24");
        fx.run("a", "net");
        let local = format!("{API}metadata: {{name: local}}\nspec: {{podSelector: {{}}}}\n");
        fx.engine.apply_policies(&local, None).expect("apply");
        let store = format!("{API}metadata: {{name: shared, namespace: prod}}\nspec: {{podSelector: {{}}, policyTypes: [Egress]}}\n");
        let wanted: BTreeMap<String, bridge_driver::policy::NetworkPolicy> =
            bridge_driver::policy::parse_policies(&store, None)
                .expect("parse")
                .into_iter()
                .map(|p| (p.key(), p))
                .collect();
        let changes = fx
            .engine
            .sync_cluster_policies(wanted.clone())
            .expect("sync");
        assert_eq!(
            changes,
            vec![
                "policy prod/shared created".to_string(),
                "policy default/local removed".to_string()
            ]
        );
        let filter = fx.fake.world().firewall.all_rules("filter");
        assert!(filter.iter().any(|r| r.contains("\"prod/shared\"")));
        assert!(!filter.iter().any(|r| r.contains("default/local")));
        // The same again changes nothing; a restart keeps the store's policies.
        let log = fx.fake.world().firewall.log.len();
        assert!(fx
            .engine
            .sync_cluster_policies(wanted)
            .expect("again")
            .is_empty());
        assert_eq!(fx.fake.world().firewall.log.len(), log);
        let fx = fx.restart();
        let keys: Vec<String> = fx.engine.policies(None).iter().map(|p| p.key()).collect();
        assert_eq!(keys, vec!["prod/shared".to_string()]);
    }
}
