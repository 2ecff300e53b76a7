//! Network verbs: create, remove, prune.

use bridge_driver::firewall::{
    hostport_chain, network_chain, EntryFixes, NetworkFirewall, StaleChains,
};
use bridge_driver::ipam::Pool;
use bridge_driver::model::{build_network, NetworkRequest};
use bridge_driver::plan::{bridge_plan, host_sysctls};
use bridge_driver::pools::{choose_subnet, subnets_overlap};
use bridge_driver::{ModelError, Network};

use super::{dataplane, Engine};
use crate::error::{NetdError, Result};
use crate::state::{new_id, now_rfc3339};
use crate::store::{Change, Kind};

impl Engine {
    /// `network create`: validates everything first, so bad input changes nothing.
    pub fn create_network(&mut self, request: NetworkRequest) -> Result<Network> {
        let valid = request.validate()?;
        if self.state.networks.values().any(|n| n.name == request.name) {
            return Err(NetdError::Conflict(format!(
                "network with name {} already exists",
                request.name
            )));
        }
        let taken: Vec<_> = self.state.networks.values().map(|n| n.subnet).collect();
        let subnet = match valid.subnet {
            Some(subnet) => {
                if let Some(other) = self
                    .state
                    .networks
                    .values()
                    .find(|n| subnets_overlap(&n.subnet, &subnet))
                {
                    return Err(ModelError::SubnetOverlap {
                        subnet,
                        network: other.name.clone(),
                        other: other.subnet,
                    }
                    .into());
                }
                subnet
            }
            None => {
                let mut host: Vec<_> = self
                    .host
                    .routes()?
                    .into_iter()
                    .map(|r| r.destination)
                    .collect();
                host.extend(self.host.addresses()?.into_iter().map(|a| a.net.trunc()));
                choose_subnet(&taken, &host).ok_or(ModelError::PoolsExhausted)?
            }
        };
        let network = build_network(new_id()?, now_rfc3339(), &request, &valid, subnet, false)?;
        if let Some(other) = self
            .state
            .networks
            .values()
            .find(|n| n.bridge == network.bridge)
        {
            return Err(NetdError::Conflict(format!(
                "--opt bridge-name: bridge {} is already used by network {}",
                network.bridge, other.name
            )));
        }
        if self.host.link_by_name(&network.bridge)?.is_some() {
            return Err(NetdError::Conflict(format!(
                "--opt bridge-name: interface {} already exists on the host",
                network.bridge
            )));
        }
        self.add_network(network.clone())?;
        Ok(network)
    }

    /// Records a network and makes the kernel match; undoes everything if applying fails.
    pub(super) fn add_network(&mut self, network: Network) -> Result<()> {
        self.commit(vec![Change::put(Kind::Network, &network.id, &network)?])?;
        self.state.pools.insert(
            network.id.clone(),
            Pool::new(network.subnet, network.gateway, network.ip_range),
        );
        self.state
            .networks
            .insert(network.id.clone(), network.clone());
        if let Err(e) = self.apply_network(&network) {
            let _ = self.remove_network_record(&network);
            return Err(e);
        }
        Ok(())
    }

    fn apply_network(&mut self, network: &Network) -> Result<()> {
        dataplane::ensure_bridge(&mut self.host, &bridge_plan(network))?;
        self.apply_host_sysctls()?;
        self.apply_firewall(&StaleChains::default())?;
        self.apply_overlay(network)?;
        Ok(())
    }

    pub(super) fn apply_host_sysctls(&mut self) -> Result<()> {
        let networks: Vec<Network> = self.state.networks.values().cloned().collect();
        for (key, value) in host_sysctls(&networks) {
            self.host.sysctl_set(&key, &value)?;
        }
        if !self.state.policies.is_empty() {
            // Policy between sandboxes of one network sees their bridged traffic only so.
            self.host
                .sysctl_set("net/bridge/bridge-nf-call-iptables", "1")?;
        }
        Ok(())
    }

    /// Sets netd's firewall chains to the recorded networks (one transaction).
    pub(super) fn apply_firewall(&mut self, stale: &StaleChains) -> Result<()> {
        self.forget_rule_handles();
        let networks = self.firewall_networks();
        dataplane::apply_firewall(
            &mut *self.firewall,
            &networks,
            &self.policy.rules,
            stale,
            &EntryFixes::default(),
        )
    }

    /// What the firewall needs of every network, published ports included, in creation
    /// order (so rules keep their order across restarts and appends).
    pub(super) fn firewall_networks(&self) -> Vec<NetworkFirewall> {
        let mut nets: Vec<NetworkFirewall> = self
            .ordered_networks()
            .into_iter()
            .map(NetworkFirewall::from)
            .collect();
        let mut sandboxes: Vec<&crate::state::Sandbox> = self.state.sandboxes.values().collect();
        sandboxes.sort_by(|a, b| a.created.cmp(&b.created).then(a.id.cmp(&b.id)));
        for sandbox in sandboxes {
            if let Some((network_id, ports)) = self.published(sandbox) {
                if let Some(net) = nets.iter_mut().find(|n| n.id == network_id) {
                    net.ports.extend(ports);
                }
            }
        }
        nets
    }

    /// Networks in creation order, so rules keep their order across restarts.
    pub(super) fn ordered_networks(&self) -> Vec<&Network> {
        let mut networks: Vec<&Network> = self.state.networks.values().collect();
        networks.sort_by(|a, b| a.created.cmp(&b.created).then(a.id.cmp(&b.id)));
        networks
    }

    /// Forgets a network and removes its bridge and rules (best effort after the record).
    pub(super) fn remove_network_record(&mut self, network: &Network) -> Result<()> {
        self.commit(vec![Change::delete(Kind::Network, &network.id)])?;
        self.state.networks.remove(&network.id);
        self.state.pools.remove(&network.id);
        let stale = StaleChains {
            filter: vec![network_chain(&network.id)],
            nat: vec![hostport_chain(&network.id)],
        };
        let overlay = self.remove_overlay(network);
        self.remove_subnet_env(network);
        let firewall = self.apply_firewall(&stale);
        let link = self.host.delete_link_by_name(&network.bridge);
        overlay?;
        firewall?;
        link?;
        Ok(())
    }

    /// `network rm`: refused for the default network and while sandboxes are attached.
    pub fn remove_network(&mut self, reference: &str) -> Result<String> {
        let network = self.state.network(reference)?.clone();
        if network.default {
            return Err(NetdError::Conflict(format!(
                "{} is a pre-defined network and cannot be removed",
                network.name
            )));
        }
        if network.cluster.is_some() {
            return Err(NetdError::Unavailable(format!(
                "{} is a cluster network: it is removed through the cluster store, which this netd is not connected to",
                network.name
            )));
        }
        let users: Vec<String> = self
            .state
            .attached(&network.id)
            .map(|s| s.name.clone())
            .collect();
        if !users.is_empty() {
            return Err(NetdError::Conflict(format!(
                "network {} has active endpoints ({}); disconnect or remove them first",
                network.name,
                users.join(", ")
            )));
        }
        self.remove_network_record(&network)?;
        Ok(network.name)
    }

    /// `network prune`: removes every user network without endpoints.
    pub fn prune_networks(&mut self) -> Result<Vec<String>> {
        let unused: Vec<Network> = self
            .state
            .networks
            .values()
            .filter(|n| {
                !n.default && n.cluster.is_none() && self.state.attached(&n.id).next().is_none()
            })
            .cloned()
            .collect();
        let mut removed = Vec::new();
        for network in unused {
            self.remove_network_record(&network)?;
            removed.push(network.name);
        }
        Ok(removed)
    }
}
