//! The engine: netd's state and every operation on it, run on one dedicated OS thread.
//!
//! One thread owns the state, the store and the netlink sockets, so operations are
//! serialised without locks, and namespace switches (`setns`) happen on a thread that
//! nothing else uses. The API sends it jobs and awaits the answers.

mod cluster;
mod dataplane;
mod inspect;
mod networks;
pub mod policy;
mod ports;
pub mod reaper;
mod reconcile;
mod sandboxes;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use bridge_driver::model::{build_network, first_host, NetworkRequest};
use bridge_driver::Network;
use ipnet::Ipv4Net;
use linkd::{Firewall, Iptables, Kernel, MountedNamespaces, Namespaces, Netlink};
use tokio::sync::oneshot;

use crate::error::{NetdError, Result};
use crate::state::{Paths, Sandbox, State};
use crate::store::{Change, Kind, Store};

pub use ports::PublishRequest;
pub use sandboxes::{AttachRequest, ConnectRequest, RunRequest};

/// How the engine is set up (from netd's flags).
#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub paths: Paths,
    pub default_bridge: String,
    /// The default network's subnet; host bits, if set, give the gateway (like `--bip`).
    pub default_subnet: Ipv4Net,
    pub default_network: bool,
    /// How often the engine, when idle, checks that its firewall rules are still in place
    /// (other programs flush tables too) and restores them; `None`: never.
    pub firewall_check: Option<std::time::Duration>,
    /// The host's resolv.conf: upstream resolvers for the DNS server, and the base of the
    /// resolv.conf of sandboxes without netd's DNS.
    pub resolv_conf: PathBuf,
    /// Options of the default network (`dns`, `dns-upstream`).
    pub default_network_options: std::collections::BTreeMap<String, String>,
}

/// Runtime facts about a sandbox that live in the run directory, not the store.
#[derive(Debug, Clone, Default)]
struct Runtime {
    pause_pid: Option<i32>,
    /// Processes started detached in the sandbox (`netctl run -d -- CMD`).
    processes: Vec<i32>,
}

/// What the engine changes: the kernel of netd's namespace, the sandboxes' namespaces,
/// the firewall and the pause processes. [`System::host`] is the real one; unit tests
/// give fakes (`linkd::FakeHost`, [`crate::pause::RecordingProcesses`]).
#[derive(Debug)]
pub struct System {
    pub host: Box<dyn Kernel>,
    pub namespaces: Box<dyn Namespaces>,
    pub firewall: Box<dyn Firewall>,
    pub processes: Box<dyn crate::pause::Processes>,
    /// Where released veths are deleted (off the request path on a real host).
    pub reaper: Box<dyn reaper::Reaper>,
}

impl System {
    /// netd's own namespace: netlink, namespaces held by mounts, iptables (sandboxes' DNAT
    /// rules added and removed by their comment, see `ports`), netd-pause processes.
    pub fn host(paths: &Paths) -> Result<System> {
        Ok(System {
            host: Box::new(Netlink::open()?),
            namespaces: Box::new(MountedNamespaces),
            firewall: Box::new(linkd::TaggedRules::new(Iptables::default())),
            processes: Box::new(crate::pause::HostProcesses {
                binary: paths.pause_binary.clone(),
            }),
            reaper: Box::new(reaper::ThreadReaper::start()?),
        })
    }
}

/// netd's state and the handles it needs to change the kernel.
#[derive(Debug)]
pub struct Engine {
    config: EngineConfig,
    state: State,
    store: Store,
    host: Box<dyn Kernel>,
    namespaces: Box<dyn Namespaces>,
    firewall: Box<dyn Firewall>,
    processes: Box<dyn crate::pause::Processes>,
    reaper: Box<dyn reaper::Reaper>,
    runtime: HashMap<String, Runtime>,
    ports: ports::PortTable,
    /// nf_tables handles of each sandbox's DNAT rules, when known (see `ports`).
    rule_handles: HashMap<String, Vec<u64>>,
    dns: crate::dns::DnsService,
    /// The DNS records, kept equal to the state one changed sandbox at a time.
    dns_records: crate::dns::RecordsBuilder,
    /// Other nodes' names changed since the records were last published.
    remote_names_changed: bool,
    /// Network policy as the kernel has it.
    policy: policy::PolicyState,
    /// Counts committed changes; the DNS records are rebuilt when it moves.
    changes: std::cell::Cell<u64>,
    published: u64,
    /// Where this node's names on cluster networks go (the cluster agent), when clustered.
    names: Option<tokio::sync::watch::Sender<crate::cluster::LocalNames>>,
    /// The subnets of this host's own interfaces when last looked at (where host-gw peers
    /// can be), for `network inspect`.
    connected: Vec<Ipv4Net>,
}

const DEFAULT_NETWORK_NAME: &str = "bridge";

impl Engine {
    /// Opens the store, loads the state, sets up the default network and reconciles the
    /// kernel with the recorded state. Returns the engine and what start-up repaired.
    pub fn start(config: EngineConfig) -> Result<(Engine, Vec<String>)> {
        let system = System::host(&config.paths)?;
        Engine::start_on(config, system)
    }

    /// [`Engine::start`] on a given system (fakes, in unit tests).
    pub fn start_on(config: EngineConfig, system: System) -> Result<(Engine, Vec<String>)> {
        let store = Store::open(&config.paths.root)?;
        let mut state = State::default();
        for network in store.load::<Network>(Kind::Network)? {
            state.networks.insert(network.id.clone(), network);
        }
        for sandbox in store.load::<Sandbox>(Kind::Sandbox)? {
            state.sandboxes.insert(sandbox.id.clone(), sandbox);
        }
        for policy in store.load::<bridge_driver::policy::NetworkPolicy>(Kind::Policy)? {
            state.policies.insert(policy.key(), policy);
        }
        // Nothing recorded: what start-up does is setting up, not repairing.
        let first_start = state.networks.is_empty() && state.sandboxes.is_empty();
        state.rebuild_pools()?;
        for dir in [config.paths.netns_dir(), config.paths.sandboxes_dir()] {
            std::fs::create_dir_all(&dir)
                .map_err(|e| NetdError::io(format!("cannot create {}", dir.display()), e))?;
        }
        let mut engine = Engine {
            dns: crate::dns::DnsService::start(config.resolv_conf.clone())?,
            dns_records: crate::dns::RecordsBuilder::default(),
            remote_names_changed: false,
            policy: policy::PolicyState::default(),
            changes: std::cell::Cell::new(0),
            published: 0,
            names: None,
            connected: Vec::new(),
            host: system.host,
            namespaces: system.namespaces,
            firewall: system.firewall,
            processes: system.processes,
            reaper: system.reaper,
            runtime: HashMap::new(),
            ports: ports::PortTable::default(),
            rule_handles: HashMap::new(),
            config,
            state,
            store,
        };
        engine.load_runtime();
        // The policies' sets first: every firewall change from here on writes their rules.
        engine.repair_policy_sets()?;
        engine.ensure_default_network()?;
        let mut repairs = engine.hold_recorded_ports();
        let trigger = (!first_start).then_some(crate::metrics::Trigger::startup);
        let reconciled = engine.reconcile(trigger)?;
        if first_start {
            for setup in reconciled {
                tracing::info!("first start: {setup}");
            }
        } else {
            repairs.extend(reconciled);
        }
        Ok((engine, repairs))
    }

    /// Brings the DNS records and listeners up to date with the state. Cheap enough to run
    /// after every change (the changed sandboxes' entries), and done before the change is
    /// reported, so a name resolves as soon as `run` returns.
    fn publish_dns(&mut self) -> Vec<String> {
        self.published = self.changes.get();
        let records = self
            .dns_records
            .update(&self.state, std::mem::take(&mut self.remote_names_changed));
        let problems = self.dns.publish(records);
        for problem in &problems {
            tracing::warn!("{problem}");
        }
        self.publish_cluster_names();
        problems
    }

    /// Runs after every API job (and the periodic check): publishes names and moves
    /// policy set members if the state changed.
    fn after_job(&mut self) {
        if self.changes.get() != self.published {
            self.publish_dns();
            self.sync_policy_sets();
        }
    }

    fn load_runtime(&mut self) {
        for id in self.state.sandboxes.keys() {
            let pause_pid =
                crate::state::read_pid(&self.config.paths.sandbox_file(id, "pause.pid"));
            let processes =
                std::fs::read_to_string(self.config.paths.sandbox_file(id, "processes"))
                    .map(|text| text.lines().filter_map(|l| l.trim().parse().ok()).collect())
                    .unwrap_or_default();
            self.runtime.insert(
                id.clone(),
                Runtime {
                    pause_pid,
                    processes,
                },
            );
        }
    }

    /// The default `bridge` network: created on first start, checked on every start.
    fn ensure_default_network(&mut self) -> Result<()> {
        if !self.config.default_network {
            return Ok(());
        }
        let subnet = self.config.default_subnet.trunc();
        let gateway = if self.config.default_subnet.addr() == subnet.network() {
            first_host(subnet)?
        } else {
            self.config.default_subnet.addr()
        };
        let bridge = self.config.default_bridge.clone();
        bridge_driver::names::validate_ifname("--default-bridge", &bridge)?;
        let extra = bridge_driver::BridgeOptions::parse(&self.config.default_network_options)?;
        let dns = extra.dns.unwrap_or(false);
        if let Some(existing) = self.state.networks.values().find(|n| n.default).cloned() {
            if existing.bridge == bridge && existing.subnet == subnet && existing.gateway == gateway
            {
                if existing.dns != dns || existing.dns_upstreams != extra.dns_upstreams {
                    // Name resolution changes no link: the record is updated in place.
                    let mut network = existing;
                    network.dns = dns;
                    network.dns_upstreams = extra.dns_upstreams;
                    for key in ["dns", "dns-upstream"] {
                        match self.config.default_network_options.get(key) {
                            Some(value) => network.options.insert(key.into(), value.clone()),
                            None => network.options.remove(key),
                        };
                    }
                    self.commit(vec![Change::put(Kind::Network, &network.id, &network)?])?;
                    self.state.networks.insert(network.id.clone(), network);
                }
                return Ok(());
            }
            if self.state.attached(&existing.id).next().is_some() {
                return Err(NetdError::Conflict(format!(
                    "the default network uses bridge {} and subnet {} and has sandboxes attached; \
                     remove them before changing --default-bridge or --default-subnet",
                    existing.bridge, existing.subnet
                )));
            }
            self.remove_network_record(&existing)?;
        }
        let adopt = self.check_default_bridge_free(&bridge, gateway, subnet)?;
        let request = NetworkRequest {
            name: DEFAULT_NETWORK_NAME.into(),
            subnet: Some(subnet.to_string()),
            gateway: Some(gateway.to_string()),
            options: [
                ("com.docker.network.bridge.default_bridge", "true"),
                ("com.docker.network.bridge.name", bridge.as_str()),
                ("com.docker.network.bridge.enable_icc", "true"),
                ("com.docker.network.bridge.enable_ip_masquerade", "true"),
                ("com.docker.network.driver.mtu", "1500"),
            ]
            .into_iter()
            .filter(|(k, _)| *k != "com.docker.network.bridge.default_bridge")
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .chain(self.config.default_network_options.clone())
            .collect(),
            ..Default::default()
        };
        let valid = request.validate()?;
        let mut network = build_network(
            crate::state::new_id()?,
            crate::state::now_rfc3339(),
            &request,
            &valid,
            subnet,
            true,
        )?;
        network.options.insert(
            "com.docker.network.bridge.default_bridge".into(),
            "true".into(),
        );
        if adopt {
            // A bridge left with our address (an earlier netd, or Docker's docker0): mark
            // it as this network's so it is managed from now on.
            self.host
                .set_alias(&bridge, &bridge_driver::names::bridge_alias(&network.id))?;
        }
        self.add_network(network)?;
        Ok(())
    }

    /// Refuses to take over a link another program owns with a different address.
    /// Returns whether an existing bridge with the right address is to be adopted.
    fn check_default_bridge_free(
        &mut self,
        bridge: &str,
        gateway: Ipv4Addr,
        subnet: Ipv4Net,
    ) -> Result<bool> {
        let Some(link) = self.host.link_by_name(bridge)? else {
            return Ok(false);
        };
        if dataplane::owned_bridge_network(&link).is_some() {
            return Ok(true);
        }
        let wanted = Ipv4Net::new(gateway, subnet.prefix_len()).unwrap_or(subnet);
        let addresses = self.host.addresses_of(link.index)?;
        if link.kind.as_deref() == Some("bridge")
            && (addresses.is_empty() || addresses.contains(&wanted))
        {
            return Ok(true);
        }
        let have: Vec<String> = addresses.iter().map(|a| a.to_string()).collect();
        Err(NetdError::Conflict(format!(
            "interface {bridge} already exists ({}, address {}) and is not managed by netd; \
             choose another name with --default-bridge NAME (or --no-default-network)",
            link.kind.as_deref().unwrap_or("unknown kind"),
            if have.is_empty() {
                "none".to_string()
            } else {
                have.join(", ")
            }
        )))
    }

    fn commit(&self, changes: Vec<Change>) -> Result<()> {
        self.changes.set(self.changes.get() + 1);
        self.store.commit(changes)
    }

    /// Networks, sandboxes, published ports and policies, for `system info`.
    pub fn counts(&self) -> (usize, usize, usize, usize) {
        let ports = self.state.sandboxes.values().map(|s| s.ports.len()).sum();
        (
            self.state.networks.len(),
            self.state.sandboxes.len(),
            ports,
            self.state.policies.len(),
        )
    }

    pub fn paths(&self) -> &Paths {
        &self.config.paths
    }

    fn netns_path(&self, sandbox: &Sandbox) -> PathBuf {
        match &sandbox.attached {
            Some(attached) => attached.path.clone(),
            None => self.paths().netns(sandbox.netns_owner()),
        }
    }
}

/// A job for the engine thread.
type Job = Box<dyn FnOnce(&mut Engine) + Send>;

/// The engine thread's loop: jobs as they come, and the firewall check every `check`,
/// scheduled by deadline so that a steady stream of jobs cannot postpone it.
fn serve(engine: &mut Engine, jobs: &mpsc::Receiver<Job>, check: Option<Duration>) {
    let mut due = check.map(|interval| Instant::now() + interval);
    loop {
        let next = match (due, check) {
            (Some(deadline), Some(interval)) => {
                let now = Instant::now();
                if now >= deadline {
                    engine.check_firewall();
                    engine.check_overlays();
                    engine.check_attached();
                    due = Some(Instant::now() + interval);
                    continue;
                }
                jobs.recv_timeout(deadline - now)
            }
            _ => jobs
                .recv()
                .map_err(|_| mpsc::RecvTimeoutError::Disconnected),
        };
        match next {
            Ok(job) => job(engine),
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => return,
        }
    }
}

/// A handle to the engine thread, cheap to clone into request handlers.
#[derive(Debug, Clone)]
pub struct EngineHandle {
    jobs: mpsc::Sender<Job>,
}

impl EngineHandle {
    /// Starts the engine on its own thread; returns once start-up is done.
    pub fn spawn(config: EngineConfig) -> Result<(EngineHandle, Vec<String>)> {
        let (jobs_tx, jobs_rx) = mpsc::channel::<Job>();
        let (ready_tx, ready_rx) = mpsc::channel();
        let check = config.firewall_check;
        std::thread::Builder::new()
            .name("netd-engine".into())
            .spawn(move || match Engine::start(config) {
                Ok((mut engine, repairs)) => {
                    let _ = ready_tx.send(Ok(repairs));
                    serve(&mut engine, &jobs_rx, check);
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                }
            })
            .map_err(|e| NetdError::io("cannot start the engine thread", e))?;
        let repairs = ready_rx
            .recv()
            .map_err(|_| NetdError::Internal("the engine thread died during start-up".into()))??;
        Ok((EngineHandle { jobs: jobs_tx }, repairs))
    }

    /// Runs `f` on the engine thread and returns its answer.
    pub async fn call<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Engine) -> Result<T> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        self.jobs
            .send(Box::new(move |engine| {
                let answer = f(engine);
                engine.after_job();
                let _ = tx.send(answer);
            }))
            .map_err(|_| NetdError::Internal("the engine has stopped".into()))?;
        rx.await
            .map_err(|_| NetdError::Internal("the engine dropped the request".into()))?
    }
}
