//! Reconciliation: make the kernel match the recorded state, and remove what netd owns but
//! no longer wants. Runs at start-up and on demand (`netctl system reconcile`); reports
//! every repair as one line.

use std::collections::HashSet;

use bridge_driver::names::parse_host_veth_name;
use bridge_driver::plan::bridge_plan;
use linkd::Kernel;

use super::{dataplane, Engine, Runtime};
use crate::error::Result;
use crate::metrics::{RepairKind, Trigger};
use crate::state::Sandbox;

/// The repairs of one reconcile or check: each line as it is reported, and counted in the
/// metrics by its kind and by what found it.
struct Repairs {
    /// `None`: the first start, which sets up rather than repairs; not counted.
    trigger: Option<Trigger>,
    lines: Vec<String>,
}

impl Repairs {
    fn new(trigger: Option<Trigger>) -> Repairs {
        Repairs {
            trigger,
            lines: Vec::new(),
        }
    }

    fn add(&mut self, kind: RepairKind, lines: impl IntoIterator<Item = String>) {
        let before = self.lines.len();
        self.lines.extend(lines);
        if let Some(trigger) = self.trigger {
            crate::metrics::get().repaired(kind, trigger, self.lines.len() - before);
        }
    }
}

impl Engine {
    /// The periodic check: restores the firewall if something removed netd's rules.
    pub(super) fn check_firewall(&mut self) {
        crate::metrics::get().firewall_checks.inc();
        let mut repairs = Repairs::new(Some(Trigger::periodic));
        let stale_sets = match self.repair_policy_sets() {
            Ok((fixed, stale)) => {
                repairs.add(RepairKind::policy_set, fixed);
                stale
            }
            Err(e) => {
                tracing::error!("policy set check failed: {e}");
                Vec::new()
            }
        };
        let networks = self.firewall_networks();
        match dataplane::reconcile_firewall(&mut *self.firewall, &networks, &self.policy.rules) {
            Ok(fixed) => {
                if !fixed.is_empty() {
                    self.forget_rule_handles();
                }
                repairs.add(RepairKind::firewall, fixed);
            }
            Err(e) => tracing::error!("firewall check failed: {e}"),
        }
        let destroyed = self.destroy_sets(&stale_sets);
        repairs.add(RepairKind::policy_set, destroyed);
        for repair in repairs.lines {
            tracing::warn!("firewall check: {repair}");
        }
    }

    /// Makes the kernel match the records (at start-up, or on demand); returns the repairs.
    /// `trigger` is `None` at the first start, when what is done is setting up.
    pub fn reconcile(&mut self, trigger: Option<Trigger>) -> Result<Vec<String>> {
        let mut repairs = Repairs::new(trigger);
        let networks: Vec<_> = self.ordered_networks().into_iter().cloned().collect();
        for network in &networks {
            let fixed = dataplane::ensure_bridge(&mut self.host, &bridge_plan(network))?;
            let name = &network.name;
            repairs.add(
                RepairKind::bridge,
                fixed.into_iter().map(|r| format!("network {name}: {r}")),
            );
        }
        for network in networks.iter().filter(|n| n.cluster.is_some()) {
            let fixed = self.apply_overlay(network)?;
            let name = &network.name;
            repairs.add(
                RepairKind::overlay,
                fixed.into_iter().map(|r| format!("network {name}: {r}")),
            );
        }
        self.apply_host_sysctls()?;
        let (set_repairs, stale_sets) = self.repair_policy_sets()?;
        repairs.add(RepairKind::policy_set, set_repairs);
        let wanted = self.firewall_networks();
        let firewall =
            dataplane::reconcile_firewall(&mut *self.firewall, &wanted, &self.policy.rules)?;
        if !firewall.is_empty() {
            self.forget_rule_handles();
        }
        repairs.add(RepairKind::firewall, firewall);
        let destroyed = self.destroy_sets(&stale_sets);
        repairs.add(RepairKind::policy_set, destroyed);

        // Owners first, so sandboxes that join them find the namespace in place.
        let mut sandboxes: Vec<Sandbox> = self.state.sandboxes.values().cloned().collect();
        sandboxes.sort_by_key(|s| s.joined.is_some());
        let mut fixed = Vec::new();
        for sandbox in &sandboxes {
            if let Err(e) = self.reconcile_sandbox(sandbox, &mut fixed) {
                fixed.push(format!("sandbox {}: could not repair: {e}", sandbox.name));
            }
        }
        repairs.add(RepairKind::sandbox, fixed);
        let mut leaks = Vec::new();
        self.remove_leaks(&mut leaks)?;
        repairs.add(RepairKind::leak, leaks);
        let dns = self.publish_dns();
        repairs.add(RepairKind::dns, dns);
        Ok(repairs.lines)
    }

    /// The periodic check's part for attached namespaces: one whose owner removed it (the
    /// container exited, the mount went) has its record, address, ports and names released.
    pub(super) fn check_attached(&mut self) {
        let gone: Vec<Sandbox> = self
            .state
            .sandboxes
            .values()
            .filter(|s| s.attached.as_ref().is_some_and(|a| !a.alive()))
            .cloned()
            .collect();
        for sandbox in gone {
            match self.forget_sandbox(&sandbox, false) {
                Ok(()) => {
                    tracing::info!(
                        "sandbox {}: its namespace is gone; released its address, ports and names",
                        sandbox.name
                    );
                    let network = sandbox
                        .endpoints
                        .first()
                        .and_then(|e| self.state.networks.get(&e.network_id))
                        .map(|n| n.name.clone());
                    let container = sandbox
                        .attached
                        .as_ref()
                        .and_then(|a| a.container_id.clone());
                    crate::events::publish_internal(
                        "sandbox",
                        "die",
                        "sandbox_gone",
                        crate::api::types::Objects {
                            network,
                            sandbox: Some(sandbox.name.clone()),
                            container,
                            ..Default::default()
                        },
                    );
                }
                Err(e) => tracing::error!("sandbox {}: cannot release it: {e}", sandbox.name),
            }
        }
        self.after_job();
    }

    fn reconcile_sandbox(&mut self, sandbox: &Sandbox, repairs: &mut Vec<String>) -> Result<()> {
        let name = &sandbox.name;
        if let Some(attached) = &sandbox.attached {
            if !attached.alive() {
                self.forget_sandbox(sandbox, false)?;
                repairs.push(format!(
                    "sandbox {name}: its namespace {} is gone; released it",
                    attached.path.display()
                ));
                return Ok(());
            }
            self.reconcile_endpoints(sandbox, repairs)?;
            return self.write_files(sandbox);
        }
        let netns_path = self.netns_path(sandbox);
        if sandbox.joined.is_none() && !self.namespaces.is_mounted(&netns_path) {
            // The namespace is gone (a reboot, or a crash before it was made): rebuild the
            // sandbox from its record, with a new pause process.
            if let Some(runtime) = self.runtime.remove(&sandbox.id) {
                self.teardown_sandbox(&sandbox.id, true, &runtime, false);
            }
            // The kernel frees a namespace lazily: the host ends of its veths can outlive
            // it for a moment, and would keep the new ones from being made.
            for endpoint in &sandbox.endpoints {
                let veth = bridge_driver::names::host_veth_name(&sandbox.id, endpoint.interface);
                self.host.delete_link_by_name(&veth)?;
            }
            let pid = self.create_sandbox(sandbox)?;
            self.runtime.insert(
                sandbox.id.clone(),
                Runtime {
                    pause_pid: pid,
                    processes: Vec::new(),
                },
            );
            repairs.push(format!(
                "sandbox {name}: recreated its network namespace (pause pid {})",
                pid.unwrap_or(0)
            ));
            return Ok(());
        }
        if sandbox.joined.is_none() {
            self.reconcile_endpoints(sandbox, repairs)?;
        }
        // The pid file is the pause process's own word, also when netd died starting it.
        let pause_pid =
            crate::state::read_pid(&self.paths().sandbox_file(&sandbox.id, "pause.pid"))
                .or_else(|| self.runtime.get(&sandbox.id).and_then(|r| r.pause_pid));
        let alive = pause_pid.is_some_and(|pid| self.processes.is_pause_of(pid, &sandbox.id));
        if alive {
            self.runtime
                .entry(sandbox.id.clone())
                .or_default()
                .pause_pid = pause_pid;
        } else {
            let pid = self.start_pause(sandbox)?.finish()?;
            self.runtime
                .entry(sandbox.id.clone())
                .or_default()
                .pause_pid = Some(pid);
            repairs.push(format!(
                "sandbox {name}: restarted its pause process (pid {pid})"
            ));
        }
        let dir = self.paths().sandbox_dir(&sandbox.id);
        if !self.paths().sandbox_file(&sandbox.id, "hosts").exists() {
            std::fs::create_dir_all(&dir).map_err(|e| {
                crate::error::NetdError::io(format!("cannot create {}", dir.display()), e)
            })?;
            self.write_files(sandbox)?;
            repairs.push(format!("sandbox {name}: rewrote hosts and resolv.conf"));
        } else {
            // Brings resolv.conf up to date with the networks' DNS settings (a no-op when
            // nothing changed).
            self.write_files(sandbox)?;
        }
        Ok(())
    }

    fn reconcile_endpoints(&mut self, sandbox: &Sandbox, repairs: &mut Vec<String>) -> Result<()> {
        let (netns, mut inner) = self.namespaces.open(&self.netns_path(sandbox))?;
        for (plan, bridge) in self.endpoint_plans(sandbox)? {
            let bridge_link = self.host.require_link(&bridge)?;
            let host_end = self.host.link_by_name(&plan.host_veth)?;
            let inside = inner.link_by_name(&plan.interface)?;
            let complete = match (&host_end, &inside) {
                (Some(h), Some(i)) => {
                    h.master == Some(bridge_link.index)
                        && h.up
                        && i.up
                        && inner.addresses_of(i.index)?.contains(&plan.address)
                }
                _ => false,
            };
            if complete {
                if let Some(h) = host_end.as_ref().filter(|h| h.hairpin == Some(false)) {
                    self.host.set_hairpin(h.index, true)?;
                    repairs.push(format!(
                        "sandbox {}: set hairpin on {}",
                        sandbox.name, h.name
                    ));
                }
                if let (Some(gateway), Some(i)) = (plan.default_gateway, &inside) {
                    let has_default = inner
                        .routes()?
                        .iter()
                        .any(|r| r.destination.prefix_len() == 0 && r.gateway == Some(gateway));
                    if !has_default {
                        inner.replace_route(&dataplane::default_route(gateway, i.index))?;
                        repairs.push(format!(
                            "sandbox {}: restored its default route",
                            sandbox.name
                        ));
                    }
                }
                continue;
            }
            // Rebuild the endpoint from scratch: a half-made pair is simpler to replace.
            if let Some(h) = host_end {
                self.host.delete_link(h.index, &plan.host_veth)?;
            }
            if let Some(i) = inside {
                inner.delete_link(i.index, &plan.interface)?;
            }
            dataplane::create_endpoint(
                &mut self.host,
                &netns,
                &mut inner,
                bridge_link.index,
                &plan,
            )?;
            repairs.push(format!(
                "sandbox {}: recreated interface {}",
                sandbox.name, plan.interface
            ));
        }
        Ok(())
    }

    /// Removes veths, bridges, namespaces, pause processes and run files that belong to
    /// no recorded network or sandbox.
    fn remove_leaks(&mut self, repairs: &mut Vec<String>) -> Result<()> {
        let wanted_veths: HashSet<String> = self
            .state
            .sandboxes
            .values()
            .flat_map(|s| {
                s.endpoints
                    .iter()
                    .map(|e| bridge_driver::names::host_veth_name(&s.id, e.interface))
            })
            .collect();
        for link in self.host.links()? {
            // Released, and on its way out.
            if self.reaper.pending(&link.name) {
                continue;
            }
            if link.kind.as_deref() == Some("veth")
                && parse_host_veth_name(&link.name).is_some()
                && !wanted_veths.contains(&link.name)
            {
                self.host.delete_link(link.index, &link.name)?;
                repairs.push(format!("removed leaked veth {}", link.name));
            }
            if let Some(network_id) = dataplane::owned_bridge_network(&link) {
                if !self.state.networks.contains_key(network_id) {
                    self.host.delete_link(link.index, &link.name)?;
                    repairs.push(format!("removed bridge {} of a deleted network", link.name));
                }
            }
        }
        if let Ok(entries) = std::fs::read_dir(self.paths().netns_dir()) {
            for entry in entries.flatten() {
                let id = entry.file_name().to_string_lossy().into_owned();
                if !self.state.sandboxes.contains_key(&id) {
                    let _ = self.namespaces.remove(&entry.path());
                    repairs.push(format!("removed leaked network namespace {id}"));
                }
            }
        }
        if let Ok(entries) = std::fs::read_dir(self.paths().sandboxes_dir()) {
            for entry in entries.flatten() {
                let id = entry.file_name().to_string_lossy().into_owned();
                if !self.state.sandboxes.contains_key(&id) {
                    self.teardown_sandbox(&id, true, &Runtime::default(), true);
                    repairs.push(format!("removed leftovers of deleted sandbox {id}"));
                }
            }
        }
        Ok(())
    }
}
