//! Sandbox verbs: run, rm, connect, disconnect.

use std::net::Ipv4Addr;

use bridge_driver::mac::mac_from_ip;
use bridge_driver::model::parse_ip;
use bridge_driver::names::validate_name;
use bridge_driver::plan::{endpoint_plan, EndpointPlan};
use bridge_driver::Network;
use linkd::link::release_port_by_name_request;
use linkd::Kernel;
use serde::{Deserialize, Serialize};

use super::{dataplane, reaper, Engine, PublishRequest, Runtime, DEFAULT_NETWORK_NAME};
use crate::error::{NetdError, Result};
use crate::files;
use crate::pause;
use crate::state::{new_id, now_rfc3339, Endpoint, NetworkMode, Sandbox};
use crate::store::{Change, Kind};

/// `netctl run`'s request.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RunRequest {
    #[serde(default)]
    pub name: Option<String>,
    /// A network, `none`, or `container:NAME`; the default network when absent.
    #[serde(default)]
    pub network: Option<String>,
    #[serde(default)]
    pub ip: Option<String>,
    #[serde(default)]
    pub aliases: Vec<String>,
    /// `-p` specs.
    #[serde(default)]
    pub publish: Vec<String>,
    /// `-P`: publish every `--expose`d port on a random host port.
    #[serde(default)]
    pub publish_all: bool,
    #[serde(default)]
    pub expose: Vec<String>,
    /// `--hostname`: what the sandbox's hosts and hostname files say it is called.
    #[serde(default)]
    pub hostname: Option<String>,
    /// The networks after the first when `--network` is given more than once; joined as
    /// `connect` joins them (with the aliases, not the address), all or none.
    #[serde(default)]
    pub more_networks: Vec<String>,
    /// `--label KEY=VALUE`s (policies select sandboxes by them).
    #[serde(default)]
    pub labels: Vec<String>,
}

/// `netctl attach`'s request: a namespace another runtime made, by path or by pid.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct AttachRequest {
    #[serde(default)]
    pub netns: Option<String>,
    #[serde(default)]
    pub pid: Option<i32>,
    /// What the sandbox gets, as for `run` (its name is required here).
    #[serde(flatten)]
    pub sandbox: RunRequest,
    /// The OCI container this namespace is of (`netd-oci-hook`): its hosts and
    /// resolv.conf also go to `RUN_DIR/containers/<id>/`, and it is detached by that id.
    #[serde(default)]
    pub container_id: Option<String>,
}

/// `netctl connect`'s request.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ConnectRequest {
    pub container: String,
    #[serde(default)]
    pub ip: Option<String>,
    #[serde(default)]
    pub aliases: Vec<String>,
}

enum Mode {
    None,
    Network(Network),
    Joined(Sandbox),
}

fn validate_aliases(aliases: &[String]) -> Result<()> {
    for alias in aliases {
        validate_name("--alias", alias)?;
    }
    Ok(())
}

impl Engine {
    fn parse_mode(&self, network: Option<&str>) -> Result<Mode> {
        match network {
            Some("none") => Ok(Mode::None),
            Some(spec) if spec.starts_with("container:") => {
                let target = &spec["container:".len()..];
                let owner = self.state.sandbox(target)?;
                let owner = self.state.sandbox(owner.netns_owner())?.clone();
                Ok(Mode::Joined(owner))
            }
            Some(name) => Ok(Mode::Network(self.state.network(name)?.clone())),
            None => {
                let default = self.state.networks.values().find(|n| n.default).cloned();
                default.map(Mode::Network).ok_or_else(|| {
                    NetdError::NotFound(format!(
                        "network {DEFAULT_NETWORK_NAME} not found (netd runs with --no-default-network); give --network"
                    ))
                })
            }
        }
    }

    /// Takes an address on a network: the requested one, or the next free one.
    fn take_address(
        &mut self,
        network: &Network,
        ip: Option<&str>,
        sandbox_id: &str,
        interface: u32,
    ) -> Result<Ipv4Addr> {
        if network.cluster.is_some() {
            return self.take_shared_address(network, ip, sandbox_id, interface);
        }
        let pool =
            self.state.pools.get_mut(&network.id).ok_or_else(|| {
                NetdError::Internal(format!("no address pool for {}", network.name))
            })?;
        match ip {
            Some(text) => {
                let ip = parse_ip("--ip", text)?;
                pool.reserve(ip)
                    .map_err(|e| NetdError::Conflict(format!("--ip: {e}")))?;
                Ok(ip)
            }
            None => Ok(pool.allocate()?),
        }
    }

    fn release_addresses(&mut self, sandbox_id: &str, endpoints: &[Endpoint]) {
        self.release_shared_addresses(sandbox_id, endpoints);
        for ep in endpoints {
            if let Some(pool) = self.state.pools.get_mut(&ep.network_id) {
                pool.release(ep.ip);
            }
        }
    }

    /// `netctl run`: records the sandbox, then creates its namespace, pause process,
    /// endpoint and files. On failure everything is undone and the error returned.
    pub fn run(&mut self, request: RunRequest) -> Result<Sandbox> {
        self.start_sandbox(request, None)
    }

    /// `netctl attach`: a sandbox record for a namespace another runtime made, with all
    /// that `run` gives but the namespace and the pause process.
    pub fn attach(&mut self, request: AttachRequest) -> Result<Sandbox> {
        let name = request.sandbox.name.clone().ok_or_else(|| {
            NetdError::Invalid("--name: an attached namespace needs a name".into())
        })?;
        validate_name("--name", &name)?;
        let (path, pid) = match (&request.netns, request.pid) {
            (Some(path), None) => (std::path::PathBuf::from(path), None),
            (None, Some(pid)) if pid > 0 => (format!("/proc/{pid}/ns/net").into(), Some(pid)),
            (None, Some(pid)) => {
                return Err(NetdError::Invalid(format!(
                    "--pid: {pid} is not a process id"
                )))
            }
            _ => {
                return Err(NetdError::Invalid(
                    "give the namespace with --netns PATH or --pid PID (one of them)".into(),
                ))
            }
        };
        let field = if pid.is_some() { "--pid" } else { "--netns" };
        if let Some(id) = &request.container_id {
            if !crate::state::valid_container_id(id) {
                return Err(NetdError::Invalid(format!(
                    "container id {id:?}: letters, digits, '-', '_' and '.' only"
                )));
            }
            if let Some(other) = self.sandbox_of_container(id) {
                return Err(NetdError::Conflict(format!(
                    "container {id} is attached already (sandbox {})",
                    other.name
                )));
            }
        }
        if let Some(pid) = pid {
            if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
                return Err(NetdError::NotFound(format!("--pid: no process {pid}")));
            }
        }
        let (dev, inode) = linkd::Netns::identity(&path).map_err(|_| {
            NetdError::Invalid(format!(
                "{field}: {} is not a network namespace",
                path.display()
            ))
        })?;
        if linkd::Netns::identity("/proc/self/ns/net").ok() == Some((dev, inode)) {
            return Err(NetdError::Invalid(format!(
                "{field}: {} is netd's own namespace (the host's); it is never configured",
                path.display()
            )));
        }
        // Attached ones by their recorded identity (no system call each); netd's own by
        // their mount.
        if let Some(other) = self.state.sandboxes.values().find(|s| match &s.attached {
            Some(a) => (a.dev, a.inode) == (dev, inode),
            None => {
                s.joined.is_none()
                    && linkd::Netns::identity(self.netns_path(s)).ok() == Some((dev, inode))
            }
        }) {
            return Err(NetdError::Conflict(format!(
                "{field}: {} is the namespace of sandbox {} already",
                path.display(),
                other.name
            )));
        }
        let run = request.sandbox;
        if matches!(run.network.as_deref(), Some("none"))
            || run
                .network
                .as_deref()
                .is_some_and(|n| n.starts_with("container:"))
        {
            return Err(NetdError::Invalid(
                "--network: an attached namespace joins a network (not none or container:)".into(),
            ));
        }
        self.start_sandbox(
            run,
            Some(crate::state::Attached {
                path,
                pid,
                dev,
                inode,
                container_id: request.container_id,
            }),
        )
    }

    fn start_sandbox(
        &mut self,
        request: RunRequest,
        attached: Option<crate::state::Attached>,
    ) -> Result<Sandbox> {
        if let Some(name) = &request.name {
            validate_name("--name", name)?;
            if self.state.sandboxes.values().any(|s| &s.name == name) {
                return Err(NetdError::Conflict(format!(
                    "the sandbox name {name} is already in use"
                )));
            }
        }
        validate_aliases(&request.aliases)?;
        if let Some(hostname) = &request.hostname {
            bridge_driver::names::validate_hostname("--hostname", hostname)?;
        }
        let labels = super::policy::parse_labels(&request.labels)?;
        let mode = self.parse_mode(request.network.as_deref())?;
        let more_networks = self.more_networks(&mode, &request.more_networks)?;
        if let Mode::Joined(owner) = &mode {
            if owner.attached.is_some() {
                return Err(NetdError::Invalid(format!(
                    "--network: {} is another runtime's namespace; join it there",
                    owner.name
                )));
            }
        }
        if request.ip.is_some() && !matches!(mode, Mode::Network(_)) {
            return Err(NetdError::Invalid("--ip: needs --network NET".into()));
        }
        if !request.aliases.is_empty() && !matches!(mode, Mode::Network(_)) {
            return Err(NetdError::Invalid("--alias: needs --network NET".into()));
        }
        let publish = PublishRequest {
            publish: request.publish.clone(),
            publish_all: request.publish_all,
            expose: request.expose.clone(),
        };
        if !publish.is_empty() {
            match &mode {
                Mode::Network(network) if network.internal => {
                    return Err(NetdError::Invalid(format!(
                        "-p: network {} is internal: it has no way in or out to publish on",
                        network.name
                    )))
                }
                Mode::Network(_) => {}
                _ => {
                    return Err(NetdError::Invalid(
                        "-p: publishing needs a network (not none or container:)".into(),
                    ))
                }
            }
        }
        let id = new_id()?;
        let name = request.name.clone().unwrap_or_else(|| id[..12].to_string());
        let ports = if publish.is_empty() {
            Vec::new()
        } else {
            self.take_ports(&id, &publish)?
        };
        let release_ports = |engine: &mut Engine| {
            for mapping in &ports {
                engine.ports.release(mapping, &id);
            }
        };
        let modes = self.sandbox_endpoints(&mode, &request, &id);
        let (network_mode, joined, endpoints) = match modes {
            Ok(m) => m,
            Err(e) => {
                release_ports(self);
                return Err(e);
            }
        };
        let sandbox = Sandbox {
            id: id.clone(),
            name,
            created: now_rfc3339(),
            network_mode,
            joined,
            endpoints,
            ports: ports.clone(),
            attached,
            hostname: request.hostname.clone(),
            labels,
        };
        if let Err(e) = self.commit(vec![Change::put(Kind::Sandbox, &id, &sandbox)?]) {
            self.release_addresses(&id, &sandbox.endpoints);
            release_ports(self);
            return Err(e);
        }
        self.state.sandboxes.insert(id.clone(), sandbox.clone());
        match self
            .create_sandbox(&sandbox)
            .and_then(|pid| self.apply_ports(&sandbox).map(|()| pid))
        {
            Ok(pid) => {
                self.runtime.insert(
                    id.clone(),
                    Runtime {
                        pause_pid: pid,
                        processes: Vec::new(),
                    },
                );
                let mut sandbox = sandbox;
                for network in more_networks {
                    let request = ConnectRequest {
                        container: id.clone(),
                        ip: None,
                        aliases: request.aliases.clone(),
                    };
                    match self.connect(&network.id, request) {
                        Ok(connected) => sandbox = connected,
                        Err(e) => {
                            let _ = self.forget_sandbox(&sandbox, true);
                            return Err(e);
                        }
                    }
                }
                Ok(sandbox)
            }
            Err(e) => {
                let _ = self.forget_sandbox(&sandbox, true);
                Err(e)
            }
        }
    }

    /// The networks a new sandbox joins after its first (`--network` given again): each
    /// one once, and only beside a network (not `none` or `container:`).
    fn more_networks(&self, mode: &Mode, names: &[String]) -> Result<Vec<Network>> {
        let Mode::Network(first) = mode else {
            if names.is_empty() {
                return Ok(Vec::new());
            }
            return Err(NetdError::Invalid(
                "--network: none and container: cannot be combined with other networks".into(),
            ));
        };
        let mut networks: Vec<Network> = Vec::new();
        for name in names {
            let network = self.state.network(name)?;
            if network.id == first.id || networks.iter().any(|n| n.id == network.id) {
                return Err(NetdError::Invalid(format!(
                    "--network: {} is given twice",
                    network.name
                )));
            }
            networks.push(network.clone());
        }
        Ok(networks)
    }

    /// The network mode, joined owner and endpoints (with addresses taken) of a new sandbox.
    fn sandbox_endpoints(
        &mut self,
        mode: &Mode,
        request: &RunRequest,
        sandbox_id: &str,
    ) -> Result<(NetworkMode, Option<String>, Vec<Endpoint>)> {
        Ok(match mode {
            Mode::None => (NetworkMode::None, None, Vec::new()),
            Mode::Joined(owner) => (
                NetworkMode::Container(owner.id.clone()),
                Some(owner.id.clone()),
                Vec::new(),
            ),
            Mode::Network(network) => {
                let ip = self.take_address(network, request.ip.as_deref(), sandbox_id, 0)?;
                let endpoint = Endpoint {
                    network_id: network.id.clone(),
                    endpoint_id: new_id()?,
                    interface: 0,
                    ip,
                    mac: mac_from_ip(ip),
                    aliases: request.aliases.clone(),
                    default_route: !network.internal,
                    static_ip: request.ip.is_some(),
                };
                (
                    NetworkMode::Network(network.name.clone()),
                    None,
                    vec![endpoint],
                )
            }
        })
    }

    pub(super) fn endpoint_plans(&self, sandbox: &Sandbox) -> Result<Vec<(EndpointPlan, String)>> {
        sandbox
            .endpoints
            .iter()
            .map(|ep| {
                let network = self.state.networks.get(&ep.network_id).ok_or_else(|| {
                    NetdError::Internal(format!("endpoint on unknown network {}", ep.network_id))
                })?;
                let plan =
                    endpoint_plan(network, &sandbox.id, ep.interface, ep.ip, ep.default_route);
                Ok((plan, network.bridge.clone()))
            })
            .collect()
    }

    /// Creates the kernel side of a recorded sandbox; returns the pause pid (none for an
    /// attached namespace, whose owner holds it).
    pub(super) fn create_sandbox(&mut self, sandbox: &Sandbox) -> Result<Option<i32>> {
        let dir = self.paths().sandbox_dir(&sandbox.id);
        std::fs::create_dir_all(&dir)
            .map_err(|e| NetdError::io(format!("cannot create {}", dir.display()), e))?;
        let netns_path = self.netns_path(sandbox);
        if let Some(attached) = &sandbox.attached {
            // A sandbox detached from this namespace a moment ago may still hold `eth0`.
            self.reaper.wait((attached.dev, attached.inode));
            let (netns, mut inner) = self.namespaces.open(&netns_path)?;
            for (plan, bridge) in self.endpoint_plans(sandbox)? {
                let bridge_index = self.host.require_link(&bridge)?.index;
                dataplane::create_endpoint(
                    &mut self.host,
                    &netns,
                    &mut inner,
                    bridge_index,
                    &plan,
                )?;
            }
            self.write_files(sandbox)?;
            return Ok(None);
        }
        let starting = if sandbox.joined.is_some() {
            self.start_pause(sandbox)?
        } else {
            let (netns, mut inner) = self
                .namespaces
                .create(&netns_path, dataplane::SANDBOX_SYSCTLS)?;
            let starting = self.start_pause(sandbox)?;
            for (plan, bridge) in self.endpoint_plans(sandbox)? {
                let bridge_index = self.host.require_link(&bridge)?.index;
                dataplane::create_endpoint(
                    &mut self.host,
                    &netns,
                    &mut inner,
                    bridge_index,
                    &plan,
                )?;
            }
            starting
        };
        self.write_files(sandbox)?;
        starting.finish().map(Some)
    }

    /// Starts a sandbox's pause process, which records its pid in the sandbox's directory.
    pub(super) fn start_pause(&mut self, sandbox: &Sandbox) -> Result<pause::Starting> {
        let netns = self.netns_path(sandbox);
        let pid_file = self.paths().sandbox_file(&sandbox.id, "pause.pid");
        self.processes.start_pause(&netns, &sandbox.id, &pid_file)
    }

    /// Takes a veth off its bridge and down at once, so it carries nothing from here on,
    /// then has the reaper delete it (see `reaper`). Best effort, as teardown is.
    pub(super) fn release_veth(&mut self, netns: Option<reaper::NetnsKey>, veth: &str) {
        match self.host.batch(vec![release_port_by_name_request(veth)]) {
            Ok(()) => self.reaper.delete(&mut *self.host, netns, veth),
            // Gone already (its namespace went with its owner).
            Err(e) if e.errno() == Some(libc::ENODEV) => {}
            Err(e) => {
                tracing::warn!("cannot release {veth}: {e}; deleting it");
                self.reaper.delete(&mut *self.host, netns, veth);
            }
        }
    }

    /// The identity of a sandbox's namespace: recorded for attached ones, of the mount for
    /// netd's own.
    pub(super) fn netns_key(&self, sandbox: &Sandbox) -> Option<reaper::NetnsKey> {
        match &sandbox.attached {
            Some(attached) => Some((attached.dev, attached.inode)),
            None => linkd::Netns::identity(self.netns_path(sandbox)).ok(),
        }
    }

    /// At stop: the deletions still pending are done.
    pub fn finish_deletions(&self) {
        self.reaper.drain();
    }

    /// The sandbox attached for an OCI container.
    pub fn sandbox_of_container(&self, container_id: &str) -> Option<&Sandbox> {
        self.state.sandboxes.values().find(|s| {
            s.attached.as_ref().and_then(|a| a.container_id.as_deref()) == Some(container_id)
        })
    }

    /// `netd-oci-hook` at poststop: the container's sandbox goes, if it has one (the hook
    /// may run more than once). Returns its name.
    pub fn detach_container(&mut self, container_id: &str) -> Result<Option<String>> {
        let Some(sandbox) = self.sandbox_of_container(container_id).cloned() else {
            return Ok(None);
        };
        self.forget_sandbox(&sandbox, false)?;
        Ok(Some(sandbox.name))
    }

    /// Writes the sandbox's hosts, resolv.conf and hostname files.
    pub(super) fn write_files(&self, sandbox: &Sandbox) -> Result<()> {
        let hostname = sandbox.hostname();
        let addresses: Vec<Ipv4Addr> = sandbox.endpoints.iter().map(|e| e.ip).collect();
        let host_resolv = std::fs::read_to_string(&self.config.resolv_conf).unwrap_or_default();
        let dns_servers: Vec<Ipv4Addr> = sandbox
            .endpoints
            .iter()
            .filter_map(|e| self.state.networks.get(&e.network_id))
            .filter(|n| n.dns)
            .map(|n| n.gateway)
            .collect();
        let resolv = if dns_servers.is_empty() {
            files::resolv_conf(&host_resolv)
        } else {
            files::resolv_conf_with_dns(&dns_servers, &host_resolv)
        };
        let dir = self.files_dir(sandbox);
        std::fs::create_dir_all(&dir)
            .map_err(|e| NetdError::io(format!("cannot create {}", dir.display()), e))?;
        files::rewrite(
            &dir.join("hosts"),
            &files::hosts(hostname, &sandbox.name, &addresses),
        )?;
        files::rewrite(&dir.join("resolv.conf"), &resolv)?;
        files::rewrite(&dir.join("hostname"), &format!("{hostname}\n"))?;
        Ok(())
    }

    /// Where a sandbox's hosts, resolv.conf and hostname are: an OCI container's under
    /// `RUN_DIR/containers/<id>/` (`netd-oci-hook` copies them into its rootfs), every
    /// other sandbox's in its run directory.
    pub(super) fn files_dir(&self, sandbox: &Sandbox) -> std::path::PathBuf {
        match sandbox
            .attached
            .as_ref()
            .and_then(|a| a.container_id.as_deref())
        {
            Some(id) => self.paths().container_dir(id),
            None => self.paths().sandbox_dir(&sandbox.id),
        }
    }

    /// Deletes a sandbox's record, then tears its kernel side down (best effort, ordered:
    /// processes, namespace, files).
    pub(super) fn forget_sandbox(&mut self, sandbox: &Sandbox, kill_all: bool) -> Result<()> {
        self.commit(vec![Change::delete(Kind::Sandbox, &sandbox.id)])?;
        self.state.sandboxes.remove(&sandbox.id);
        self.release_addresses(&sandbox.id, &sandbox.endpoints);
        // Best effort: rules a failed run never added are simply not there.
        let _ = self.remove_port_rules(sandbox);
        self.release_ports(sandbox);
        let runtime = self.runtime.remove(&sandbox.id).unwrap_or_default();
        if let Some(attached) = &sandbox.attached {
            // The namespace stays with its owner: take netd's interfaces out of it.
            for endpoint in &sandbox.endpoints {
                let veth = bridge_driver::names::host_veth_name(&sandbox.id, endpoint.interface);
                self.release_veth(Some((attached.dev, attached.inode)), &veth);
            }
        }
        if let Some(id) = sandbox
            .attached
            .as_ref()
            .and_then(|a| a.container_id.as_deref())
        {
            let _ = std::fs::remove_dir_all(self.paths().container_dir(id));
        }
        let owns = sandbox.joined.is_none() && sandbox.attached.is_none();
        self.teardown_sandbox(&sandbox.id, owns, &runtime, kill_all && owns);
        Ok(())
    }

    /// Removes what a sandbox left in the kernel and the run directory. Idempotent.
    pub(super) fn teardown_sandbox(
        &mut self,
        id: &str,
        owns_netns: bool,
        runtime: &Runtime,
        kill_all: bool,
    ) {
        if kill_all && owns_netns {
            // `rm -f`: everything in the sandbox goes, children of detached commands and
            // `exec`'d processes too, as with a container's processes.
            let netns = self.paths().netns(id);
            self.processes.kill_all_in(&netns);
        }
        let netns = self.paths().netns(id);
        for pid in &runtime.processes {
            if self.processes.runs_in(*pid, &netns) {
                self.processes.kill(*pid);
            }
        }
        // The recorded pid and the pid file can differ only after a crash; stop both.
        let from_file = crate::state::read_pid(&self.paths().sandbox_file(id, "pause.pid"));
        for pid in runtime.pause_pid.into_iter().chain(from_file) {
            self.processes.stop_pause(pid, id);
        }
        if owns_netns {
            let _ = self.namespaces.remove(&netns);
        }
        let _ = std::fs::remove_dir_all(self.paths().sandbox_dir(id));
    }

    /// `netctl rm`: refused while detached processes run or other sandboxes share the
    /// namespace, unless forced (which stops them first).
    pub fn remove_sandbox(&mut self, reference: &str, force: bool) -> Result<String> {
        let sandbox = self.state.sandbox(reference)?.clone();
        let dependents: Vec<Sandbox> = self
            .state
            .joined_to(&sandbox.id)
            .into_iter()
            .cloned()
            .collect();
        if !dependents.is_empty() && !force {
            let names: Vec<&str> = dependents.iter().map(|s| s.name.as_str()).collect();
            return Err(NetdError::Conflict(format!(
                "sandbox {} shares its network namespace with {}; remove them first or use -f",
                sandbox.name,
                names.join(", ")
            )));
        }
        let running = self.running_processes(&sandbox);
        if !running.is_empty() && !force {
            return Err(NetdError::Conflict(format!(
                "sandbox {} has running processes ({}); stop them or use -f",
                sandbox.name,
                running
                    .iter()
                    .map(|p| p.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        for dependent in dependents {
            self.forget_sandbox(&dependent, force)?;
        }
        self.forget_sandbox(&sandbox, force)?;
        Ok(sandbox.id)
    }

    fn running_processes(&self, sandbox: &Sandbox) -> Vec<i32> {
        let netns = self.netns_path(sandbox);
        self.runtime
            .get(&sandbox.id)
            .map(|r| {
                r.processes
                    .iter()
                    .copied()
                    .filter(|p| self.processes.runs_in(*p, &netns))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Records a process started detached in a sandbox, so `rm` knows about it.
    pub fn add_process(&mut self, reference: &str, pid: i32) -> Result<()> {
        let sandbox = self.state.sandbox(reference)?.clone();
        if !self.processes.runs_in(pid, &self.netns_path(&sandbox)) {
            return Err(NetdError::Invalid(format!(
                "process {pid} does not run in sandbox {}",
                sandbox.name
            )));
        }
        let processes = &self.processes;
        let runtime = self.runtime.entry(sandbox.id.clone()).or_default();
        runtime.processes.retain(|p| processes.is_alive(*p));
        runtime.processes.push(pid);
        let text: String = runtime.processes.iter().map(|p| format!("{p}\n")).collect();
        files::write_atomic(&self.paths().sandbox_file(&sandbox.id, "processes"), &text)
    }

    /// `netctl connect`: a new interface (next free ethN) on another network.
    pub fn connect(&mut self, network_ref: &str, request: ConnectRequest) -> Result<Sandbox> {
        validate_aliases(&request.aliases)?;
        let network = self.state.network(network_ref)?.clone();
        let mut sandbox = self.state.sandbox(&request.container)?.clone();
        if sandbox.joined.is_some() {
            return Err(NetdError::Conflict(format!(
                "sandbox {} shares the network namespace of another sandbox and cannot be connected to a network",
                sandbox.name
            )));
        }
        if sandbox.endpoints.iter().any(|e| e.network_id == network.id) {
            return Err(NetdError::Conflict(format!(
                "sandbox {} is already connected to network {}",
                sandbox.name, network.name
            )));
        }
        let interface = (0..)
            .find(|n| !sandbox.endpoints.iter().any(|e| e.interface == *n))
            .unwrap_or(0);
        let ip = self.take_address(&network, request.ip.as_deref(), &sandbox.id, interface)?;
        let has_default = sandbox.endpoints.iter().any(|e| e.default_route);
        let endpoint = Endpoint {
            network_id: network.id.clone(),
            endpoint_id: new_id()?,
            interface,
            ip,
            mac: mac_from_ip(ip),
            aliases: request.aliases.clone(),
            default_route: !has_default && !network.internal,
            static_ip: request.ip.is_some(),
        };
        sandbox.endpoints.push(endpoint.clone());
        if let Err(e) = self.commit(vec![Change::put(Kind::Sandbox, &sandbox.id, &sandbox)?]) {
            self.release_addresses(&sandbox.id, std::slice::from_ref(&endpoint));
            return Err(e);
        }
        let previous = self
            .state
            .sandboxes
            .insert(sandbox.id.clone(), sandbox.clone());
        if let Err(e) = self.apply_connect(&sandbox, &network, &endpoint) {
            // Undo: back to the previous record, address released, link gone.
            if let Some(previous) = previous {
                if let Ok(change) = Change::put(Kind::Sandbox, &previous.id, &previous) {
                    let _ = self.commit(vec![change]);
                }
                self.state.sandboxes.insert(previous.id.clone(), previous);
            }
            self.release_addresses(&sandbox.id, std::slice::from_ref(&endpoint));
            let plan = endpoint_plan(&network, &sandbox.id, interface, ip, endpoint.default_route);
            let _ = self.host.delete_link_by_name(&plan.host_veth);
            return Err(e);
        }
        Ok(sandbox)
    }

    fn apply_connect(
        &mut self,
        sandbox: &Sandbox,
        network: &Network,
        endpoint: &Endpoint,
    ) -> Result<()> {
        // The same interface name may still be taken by one being deleted.
        if let Some(key) = self.netns_key(sandbox) {
            self.reaper.wait(key);
        }
        let (netns, mut inner) = self.namespaces.open(&self.netns_path(sandbox))?;
        let plan = endpoint_plan(
            network,
            &sandbox.id,
            endpoint.interface,
            endpoint.ip,
            endpoint.default_route,
        );
        let bridge_index = self.host.require_link(&network.bridge)?.index;
        dataplane::create_endpoint(&mut self.host, &netns, &mut inner, bridge_index, &plan)?;
        self.write_files(sandbox)
    }

    /// `netctl disconnect`: removes the interface; if it carried the default route, the
    /// next endpoint that can carry it takes over.
    pub fn disconnect(&mut self, network_ref: &str, container: &str) -> Result<Sandbox> {
        let network = self.state.network(network_ref)?.clone();
        let mut sandbox = self.state.sandbox(container)?.clone();
        let Some(position) = sandbox
            .endpoints
            .iter()
            .position(|e| e.network_id == network.id)
        else {
            return Err(NetdError::NotFound(format!(
                "sandbox {} is not connected to network {}",
                sandbox.name, network.name
            )));
        };
        let before = sandbox.clone();
        let removed = sandbox.endpoints.remove(position);
        let ports_move = position == 0 && !sandbox.ports.is_empty();
        let mut new_default = None;
        if removed.default_route {
            let networks = &self.state.networks;
            if let Some(next) = sandbox
                .endpoints
                .iter_mut()
                .find(|e| networks.get(&e.network_id).is_some_and(|n| !n.internal))
            {
                next.default_route = true;
                new_default = Some(next.clone());
            }
        }
        self.commit(vec![Change::put(Kind::Sandbox, &sandbox.id, &sandbox)?])?;
        self.state
            .sandboxes
            .insert(sandbox.id.clone(), sandbox.clone());
        self.release_addresses(&sandbox.id, std::slice::from_ref(&removed));
        if ports_move {
            // Published ports follow the first endpoint (or lapse with the last one).
            let _ = self.remove_port_rules(&before);
            self.apply_ports(&sandbox)?;
        }

        let veth = bridge_driver::names::host_veth_name(&sandbox.id, removed.interface);
        self.release_veth(self.netns_key(&sandbox), &veth);
        if let Some(next) = new_default {
            let (_netns, mut inner) = self.namespaces.open(&self.netns_path(&sandbox))?;
            if let Some(gateway_net) = self.state.networks.get(&next.network_id) {
                let gateway = gateway_net.gateway;
                let link = inner.require_link(&format!("eth{}", next.interface))?;
                inner.replace_route(&dataplane::default_route(gateway, link.index))?;
            }
        }
        self.write_files(&sandbox)?;
        Ok(sandbox)
    }
}
