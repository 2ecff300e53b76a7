//! Cluster networks in the engine: the agent's view of the store becomes local network
//! records (a bridge on this node's lease, recorded before it is applied) and their
//! overlay (vxlan device, per-peer entries), which the periodic check keeps in place.

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;

use bridge_driver::cluster::{
    build_cluster_network, overlay_plan, ClusterMembership, FlannelConfig,
};
use bridge_driver::pools::subnets_overlap;
use bridge_driver::Network;
use cni_compat::ipam::store::{Holder, Store};
use ipnet::Ipv4Net;

use super::Engine;
use crate::cluster::{ClusterView, LocalNames, NameRecord, NodeIdentity};
use crate::error::{NetdError, Result};
use crate::state::now_rfc3339;
use crate::store::{Change, Kind};

impl Engine {
    /// This node as peers reach it: the given node IP, or the source address of the
    /// default route; the interface that carries it and its MTU.
    pub fn cluster_node(
        &mut self,
        node_ip: Option<Ipv4Addr>,
        node_name: &str,
    ) -> Result<NodeIdentity> {
        let addresses = self.host.addresses()?;
        let node_ip = match node_ip {
            Some(ip) => ip,
            None => {
                let routes = self.host.routes()?;
                let default = routes
                    .iter()
                    .find(|r| r.destination.prefix_len() == 0)
                    .ok_or_else(|| {
                        NetdError::Invalid(
                            "--node-ip: this host has no default route to take the address from; give --node-ip"
                                .into(),
                        )
                    })?;
                addresses
                    .iter()
                    .find(|a| Some(a.index) == default.oif)
                    .map(|a| a.net.addr())
                    .ok_or_else(|| {
                        NetdError::Invalid(
                            "--node-ip: the default route's interface has no IPv4 address; give --node-ip"
                                .into(),
                        )
                    })?
            }
        };
        let address = addresses
            .iter()
            .find(|a| a.net.addr() == node_ip)
            .ok_or_else(|| {
                NetdError::Invalid(format!(
                    "--node-ip: {node_ip} is not an address of this host"
                ))
            })?;
        let link = self
            .host
            .links()?
            .into_iter()
            .find(|l| l.index == address.index)
            .ok_or_else(|| NetdError::Internal(format!("the interface of {node_ip} vanished")))?;
        Ok(NodeIdentity {
            node_ip,
            node_name: node_name.to_string(),
            underlay: link.name,
            underlay_mtu: link.mtu,
        })
    }

    /// Where this node's sandbox names go (the cluster agent).
    pub fn set_name_publisher(&mut self, names: tokio::sync::watch::Sender<LocalNames>) {
        let _ = names.send(self.cluster_names());
        self.names = Some(names);
    }

    /// The node subnet of each cluster network this node has a record of.
    pub fn cluster_subnets(&self) -> HashMap<String, Ipv4Net> {
        self.state
            .networks
            .values()
            .filter(|n| n.cluster.is_some())
            .map(|n| (n.name.clone(), n.subnet))
            .collect()
    }

    /// The id of a network by name, if this node has it.
    pub fn state_network_id(&self, name: &str) -> Option<String> {
        self.state
            .networks
            .values()
            .find(|n| n.name == name)
            .map(|n| n.id.clone())
    }

    /// The name of the cluster network a reference (name, id, id prefix) is, if it is one.
    pub fn cluster_network_name(&self, reference: &str) -> Option<String> {
        self.state
            .network(reference)
            .ok()
            .filter(|n| n.cluster.is_some())
            .map(|n| n.name.clone())
    }

    /// Names of this node's sandboxes on a cluster network.
    pub fn cluster_network_users(&self, name: &str) -> Vec<String> {
        match self.state.networks.values().find(|n| n.name == name) {
            Some(n) => self.state.attached(&n.id).map(|s| s.name.clone()).collect(),
            None => Vec::new(),
        }
    }

    /// Refuses a cluster network that clashes with this node: a local network of the same
    /// name, or a subnet over a local network's or a host route's.
    pub fn check_cluster_network(&mut self, name: &str, config: &FlannelConfig) -> Result<()> {
        if let Some(other) = self.state.networks.values().find(|n| n.name == name) {
            return Err(NetdError::Conflict(format!(
                "network with name {} already exists on this node ({} driver)",
                other.name, other.driver
            )));
        }
        if let Some(other) = self
            .state
            .networks
            .values()
            .find(|n| subnets_overlap(&n.subnet, &config.network))
        {
            return Err(NetdError::Invalid(format!(
                "--subnet: {} overlaps network {} ({})",
                config.network, other.name, other.subnet
            )));
        }
        for route in self.host.routes()? {
            if route.destination.prefix_len() > 0
                && subnets_overlap(&route.destination, &config.network)
            {
                return Err(NetdError::Invalid(format!(
                    "--subnet: {} overlaps the host route to {}",
                    config.network, route.destination
                )));
            }
        }
        Ok(())
    }

    /// Makes this node's cluster networks what the store says: new ones set up on their
    /// lease, peers reprogrammed, removed ones taken down (once no sandbox uses them).
    pub fn sync_cluster(&mut self, view: ClusterView, node: &NodeIdentity) -> Result<Vec<String>> {
        let mut changes = Vec::new();
        let mut remote_names: HashMap<String, Vec<NameRecord>> = HashMap::new();
        for (name, wanted) in &view {
            let Some(subnet) = wanted.own else { continue };
            let membership = ClusterMembership {
                config: wanted.config.clone(),
                node_ip: node.node_ip,
                node_name: node.node_name.clone(),
                underlay: node.underlay.clone(),
                peers: wanted.peers.clone(),
            };
            let existing = self
                .state
                .networks
                .values()
                .find(|n| n.name == *name)
                .cloned();
            let network = match existing {
                Some(n) if n.cluster.is_none() => {
                    tracing::error!(
                        "cluster network {name}: a local network has that name; not joining it"
                    );
                    continue;
                }
                Some(mut n) if n.subnet == subnet => {
                    // Peers changed: reprogrammed. (A network just joined had its overlay
                    // applied with it; an unchanged one is left to the periodic check.)
                    if n.cluster.as_ref() != Some(&membership) {
                        n.cluster = Some(membership);
                        self.commit(vec![Change::put(Kind::Network, &n.id, &n)?])?;
                        self.state.networks.insert(n.id.clone(), n.clone());
                        for change in self.apply_overlay(&n)? {
                            changes.push(format!("network {name}: {change}"));
                        }
                    }
                    n
                }
                Some(n) => {
                    if self.state.attached(&n.id).next().is_some() {
                        tracing::error!(
                            "cluster network {name}: this node's subnet is now {subnet}, not {}, but sandboxes use the old one",
                            n.subnet
                        );
                        continue;
                    }
                    self.remove_network_record(&n)?;
                    changes.push(format!("network {name}: moved to subnet {subnet}"));
                    self.join_cluster_network(name, subnet, membership, node)?
                }
                None => {
                    let n = self.join_cluster_network(name, subnet, membership, node)?;
                    changes.push(format!("network {name}: joined on subnet {subnet}"));
                    n
                }
            };
            self.write_subnet_env(&network)?;
            remote_names.insert(network.id.clone(), wanted.names.clone());
        }
        let gone: Vec<Network> = self
            .state
            .networks
            .values()
            .filter(|n| n.cluster.is_some() && view.get(&n.name).is_none_or(|v| v.own.is_none()))
            .cloned()
            .collect();
        for network in gone {
            if self.state.attached(&network.id).next().is_some() {
                tracing::error!(
                    "cluster network {}: removed from the store, but sandboxes of this node use it; kept",
                    network.name
                );
                continue;
            }
            self.remove_network_record(&network)?;
            changes.push(format!("network {}: removed", network.name));
        }
        if self.state.remote_names != remote_names {
            self.state.remote_names = remote_names;
            self.remote_names_changed = true;
            self.policy.remote_changed = true;
            self.changes.set(self.changes.get() + 1);
        }
        Ok(changes)
    }

    fn join_cluster_network(
        &mut self,
        name: &str,
        subnet: Ipv4Net,
        membership: ClusterMembership,
        node: &NodeIdentity,
    ) -> Result<Network> {
        let network =
            build_cluster_network(name, now_rfc3339(), subnet, membership, node.underlay_mtu)?;
        self.add_network(network.clone())?;
        Ok(network)
    }

    /// The subnets of this host's own interfaces (not netd's networks): where host-gw
    /// and direct-routing peers can be.
    fn connected_subnets(&mut self) -> Result<Vec<Ipv4Net>> {
        let ours: Vec<Ipv4Net> = self
            .state
            .networks
            .values()
            .flat_map(|n| {
                std::iter::once(n.subnet).chain(n.cluster.as_ref().map(|c| c.config.network))
            })
            .collect();
        Ok(self
            .host
            .addresses()?
            .into_iter()
            .map(|a| a.net.trunc())
            .filter(|net| !ours.iter().any(|o| o.contains(net)))
            .collect())
    }

    /// Makes a cluster network's overlay match its record; returns what changed.
    pub(super) fn apply_overlay(&mut self, network: &Network) -> Result<Vec<String>> {
        let connected = self.connected_subnets()?;
        self.connected.clone_from(&connected);
        let Some((plan, peers)) = overlay_plan(network, &connected) else {
            return Ok(Vec::new());
        };
        for peer in &peers {
            if let bridge_driver::cluster::PeerRoute::Unreachable { reason } = &peer.route {
                tracing::debug!(
                    "network {}: node {} ({}) cannot be reached: {reason}",
                    network.name,
                    peer.node_name,
                    peer.node_ip
                );
            }
        }
        Ok(linkd::ensure_overlay(&mut self.host, &plan)?)
    }

    /// Takes a cluster network's overlay down (its record is gone).
    pub(super) fn remove_overlay(&mut self, network: &Network) -> Result<()> {
        if let Some((plan, _)) = overlay_plan(network, &[]) {
            linkd::remove_overlay(&mut self.host, &plan)?;
        }
        Ok(())
    }

    /// The periodic check's part: overlays repaired where someone changed them.
    pub(super) fn check_overlays(&mut self) {
        let networks: Vec<Network> = self
            .state
            .networks
            .values()
            .filter(|n| n.cluster.is_some())
            .cloned()
            .collect();
        for network in networks {
            match self.apply_overlay(&network) {
                Ok(repairs) => {
                    crate::metrics::get().repaired(
                        crate::metrics::RepairKind::overlay,
                        crate::metrics::Trigger::periodic,
                        repairs.len(),
                    );
                    for repair in repairs {
                        tracing::warn!("overlay check: network {}: {repair}", network.name);
                    }
                }
                Err(e) => tracing::error!("overlay check: network {}: {e}", network.name),
            }
        }
    }

    /// The host-local store of a cluster network's addresses on this node, locked.
    fn shared_addresses(&self, network: &Network) -> Result<Store> {
        Store::open_in(
            &self.paths().cluster_ipam_dir(),
            &network.name,
            &self.paths().cluster_ipam_index(),
        )
        .map_err(|e| NetdError::store(format!("the address reservations of {}", network.name), e))
    }

    /// Takes an address on a cluster network through host-local's files and lock, which
    /// the node's CNI pods (netd-flannel's delegate IPAM) use too: neither side hands out
    /// an address the other holds.
    pub(super) fn take_shared_address(
        &mut self,
        network: &Network,
        ip: Option<&str>,
        sandbox_id: &str,
        interface: u32,
    ) -> Result<Ipv4Addr> {
        let store = self.shared_addresses(network)?;
        let fail = |e: cni_compat::spec::CniError| {
            NetdError::store(format!("the address reservations of {}", network.name), e)
        };
        let held = store.reserved().map_err(fail)?;
        let pool =
            self.state.pools.get_mut(&network.id).ok_or_else(|| {
                NetdError::Internal(format!("no address pool for {}", network.name))
            })?;
        let ip = match ip {
            Some(text) => {
                let ip = bridge_driver::model::parse_ip("--ip", text)?;
                if held.contains(&ip.into()) {
                    return Err(NetdError::Conflict(format!(
                        "--ip: {ip} is held by a CNI pod on this node"
                    )));
                }
                pool.reserve(ip)
                    .map_err(|e| NetdError::Conflict(format!("--ip: {e}")))?;
                ip
            }
            None => {
                let mut skipped = Vec::new();
                let found = loop {
                    match pool.allocate() {
                        Ok(ip) if held.contains(&ip.into()) => skipped.push(ip),
                        other => break other,
                    }
                };
                for ip in skipped {
                    pool.release(ip);
                }
                found?
            }
        };
        let holder = Holder {
            container_id: sandbox_id.to_string(),
            ifname: format!("eth{interface}"),
        };
        let reserved = store
            .reserve(ip.into(), &holder, 0)
            .and_then(|ok| {
                if ok {
                    store.record(&holder, &[ip.into()])?;
                }
                store.stamp()?;
                Ok(ok)
            })
            .map_err(fail);
        match reserved {
            Ok(true) => Ok(ip),
            Ok(false) => {
                if let Some(pool) = self.state.pools.get_mut(&network.id) {
                    pool.release(ip);
                }
                Err(NetdError::Conflict(format!(
                    "{ip} was just taken by a CNI pod; try again"
                )))
            }
            Err(e) => {
                if let Some(pool) = self.state.pools.get_mut(&network.id) {
                    pool.release(ip);
                }
                Err(e)
            }
        }
    }

    /// Gives back the shared reservations of endpoints on cluster networks (best effort:
    /// the pool is given back regardless).
    pub(super) fn release_shared_addresses(
        &mut self,
        sandbox_id: &str,
        endpoints: &[crate::state::Endpoint],
    ) {
        for ep in endpoints {
            let Some(network) = self.state.networks.get(&ep.network_id).cloned() else {
                continue;
            };
            if network.cluster.is_none() {
                continue;
            }
            let released = self.shared_addresses(&network).and_then(|store| {
                let fail = |e| NetdError::store("the address reservations", e);
                let holder = Holder {
                    container_id: sandbox_id.to_string(),
                    ifname: format!("eth{}", ep.interface),
                };
                store.forget(&holder).map_err(fail)?;
                store.release(ep.ip.into()).map_err(fail)?;
                store.stamp().map_err(fail)
            });
            if let Err(e) = released {
                tracing::warn!("network {}: cannot release {}: {e}", network.name, ep.ip);
            }
        }
    }

    /// Writes a cluster network's `subnet.env` (flannel's keys, and netd's bridge,
    /// network name and address store for netd-flannel), where netd keeps it and where
    /// `--opt subnet-file` says.
    pub(super) fn write_subnet_env(&self, network: &Network) -> Result<()> {
        let Some(membership) = &network.cluster else {
            return Ok(());
        };
        let text = format!(
            "FLANNEL_NETWORK={}\nFLANNEL_SUBNET={}\nFLANNEL_MTU={}\nFLANNEL_IPMASQ=true\nNETD_BRIDGE={}\nNETD_NETWORK={}\nNETD_IPAM_DATA_DIR={}\n",
            membership.config.network,
            network.gateway_net(),
            network.mtu,
            network.bridge,
            network.name,
            self.paths().cluster_ipam_dir().display()
        );
        let mut paths = vec![self.paths().subnet_env(&network.name)];
        paths.extend(membership.config.subnet_file.clone());
        for path in paths {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)
                    .map_err(|e| NetdError::io(format!("cannot create {}", dir.display()), e))?;
            }
            if std::fs::read_to_string(&path).is_ok_and(|old| old == text) {
                continue;
            }
            crate::files::write_atomic(&path, &text)?;
        }
        Ok(())
    }

    /// Removes what [`Engine::write_subnet_env`] wrote.
    pub(super) fn remove_subnet_env(&self, network: &Network) {
        let mut paths = vec![self.paths().subnet_env(&network.name)];
        if let Some(m) = &network.cluster {
            paths.extend(m.config.subnet_file.clone());
        }
        for path in paths {
            let _ = std::fs::remove_file(&path);
        }
        let _ = std::fs::remove_dir(self.paths().run_dir.join("cluster").join(&network.name));
    }

    /// This node's sandboxes on each cluster network, as published for other nodes.
    pub(super) fn cluster_names(&self) -> LocalNames {
        let mut out: LocalNames = BTreeMap::new();
        for network in self.state.networks.values().filter(|n| n.cluster.is_some()) {
            let records = self
                .state
                .attached(&network.id)
                .flat_map(|s| {
                    s.endpoints
                        .iter()
                        .filter(|e| e.network_id == network.id)
                        .map(|e| NameRecord {
                            id: s.id.clone(),
                            name: s.name.clone(),
                            aliases: e.aliases.clone(),
                            ip: e.ip,
                            labels: s.labels.clone(),
                        })
                })
                .collect();
            out.insert(network.name.clone(), records);
        }
        out
    }

    /// Hands the agent this node's names when they changed.
    pub(super) fn publish_cluster_names(&mut self) {
        let names = self.cluster_names();
        if let Some(tx) = &self.names {
            tx.send_if_modified(|current| {
                if *current == names {
                    false
                } else {
                    *current = names;
                    true
                }
            });
        }
    }
}
