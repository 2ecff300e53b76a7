//! The cluster agent: a task that owns the etcd client. It keeps this node's etcd lease
//! alive, holds a copy of every key under `<prefix>/` (a list, then a watch; a lost or
//! compacted watch means a new list), takes a subnet of each cluster network for this
//! node, publishes the node's sandbox names, stores the policies, and hands the engine the
//! networks and the policies after every change. It never touches the kernel. While the store does not answer it retries, the
//! engine keeps what it last had (so traffic keeps flowing) and cluster requests are
//! refused with the reason.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use bridge_driver::cluster::{choose_subnet, FlannelConfig, LeaseAttrs};
use bridge_driver::policy::{parse_policies, NetworkPolicy};
use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, DeleteOptions, EventType, GetOptions, PutOptions,
    Txn, TxnOp, WatchOptions,
};
use ipnet::Ipv4Net;
use tokio::sync::{mpsc, watch};

use super::keys::{self, Held, Index, Keys, NetworkRecords};
use super::{
    ClusterHandle, ClusterSettings, ClusterView, LocalNames, NodeIdentity, NodeLease, Request,
};
use crate::engine::policy::{plan_apply, policy_not_found, PolicyApplied};
use crate::engine::EngineHandle;
use crate::error::{NetdError, Result};

/// Why a session with the store ended.
#[derive(Debug, thiserror::Error)]
enum SessionEnd {
    #[error("{what}: {source}")]
    Etcd {
        what: &'static str,
        #[source]
        source: etcd_client::Error,
    },
    #[error("{0}")]
    Lost(String),
}

fn etcd(what: &'static str) -> impl FnOnce(etcd_client::Error) -> SessionEnd {
    move |source| SessionEnd::Etcd { what, source }
}

type Session<T> = std::result::Result<T, SessionEnd>;

/// etcd's default `--max-txn-ops`: a policy file is stored in one transaction.
const MAX_TXN_OPS: usize = 128;

/// How long the agent waits for more watch events before acting on what it has.
const COALESCE: Duration = Duration::from_millis(5);

/// Starts the agent on the current tokio runtime; returns the API's handle at once (the
/// store is reached in the background).
pub fn spawn(settings: ClusterSettings, node: NodeIdentity, engine: EngineHandle) -> ClusterHandle {
    let (requests_tx, requests) = mpsc::channel(64);
    let (status_tx, status) = watch::channel(Err(format!(
        "the cluster store ({}) has not answered yet",
        settings.endpoints.join(", ")
    )));
    let (names_tx, names) = watch::channel(LocalNames::new());
    let agent = Agent {
        keys: Keys::new(&settings.prefix),
        index: Index::new(Keys::new(&settings.prefix)),
        lease_file: None,
        settings,
        node,
        engine,
        requests,
        status: status_tx,
        names,
        lease: 0,
        sent: None,
        sent_policies: None,
        previous: HashMap::new(),
        reported: BTreeSet::new(),
    };
    tokio::spawn(agent.run(names_tx));
    ClusterHandle {
        requests: requests_tx,
        status,
    }
}

struct Agent {
    settings: ClusterSettings,
    node: NodeIdentity,
    keys: Keys,
    engine: EngineHandle,
    requests: mpsc::Receiver<Request>,
    status: watch::Sender<std::result::Result<(), String>>,
    names: watch::Receiver<LocalNames>,
    /// Every key under `<prefix>/`, as of the last list and watch events, and what the
    /// keys say.
    index: Index,
    /// This node's etcd lease.
    lease: i64,
    /// The view the engine has, so an unchanged one is not sent again.
    sent: Option<ClusterView>,
    /// The policies the engine has from the store.
    sent_policies: Option<BTreeMap<String, NetworkPolicy>>,
    /// Subnets this node's networks had before (from the engine's records): taken again
    /// after a restart when still free.
    previous: HashMap<String, Ipv4Net>,
    lease_file: Option<std::path::PathBuf>,
    /// Corrupt records already logged.
    reported: BTreeSet<String>,
}

impl Agent {
    async fn run(mut self, names_tx: watch::Sender<LocalNames>) {
        match self
            .engine
            .call(move |e| {
                e.set_name_publisher(names_tx);
                Ok((e.cluster_subnets(), e.paths().root.join("cluster-lease")))
            })
            .await
        {
            Ok((previous, lease_file)) => {
                self.previous = previous;
                self.lease_file = Some(lease_file);
            }
            Err(e) => {
                tracing::error!("cluster agent: cannot reach the engine: {e}");
                return;
            }
        }
        if let Some(path) = &self.lease_file {
            self.lease = std::fs::read_to_string(path)
                .ok()
                .and_then(|t| t.trim().parse().ok())
                .unwrap_or(0);
        }
        let mut delay = Duration::from_millis(200);
        // One member at a time, the next one when it fails: a balanced channel keeps
        // sending a share of the requests to a dead member.
        let members = self.settings.endpoints.len().max(1);
        let mut member = 0usize;
        let mut failed_in_a_row = 0usize;
        loop {
            let endpoint = self.settings.endpoints[member % members].clone();
            let started = tokio::time::Instant::now();
            let ended = self.session(&endpoint).await;
            let metrics = &crate::metrics::get().cluster;
            metrics.store_up.set(0);
            let why = match ended {
                Ok(()) => return,
                Err(e) => {
                    metrics.sessions_lost.inc();
                    e.to_string()
                }
            };
            member += 1;
            if started.elapsed() > Duration::from_secs(10) {
                failed_in_a_row = 0;
                delay = Duration::from_millis(200);
            }
            failed_in_a_row += 1;
            if failed_in_a_row < members {
                tracing::warn!("cluster store member {endpoint}: {why}; trying the next member");
                continue;
            }
            failed_in_a_row = 0;
            tracing::error!(
                "cluster store {}: {why}; retrying (local networks and known peers keep working)",
                self.settings.endpoints.join(",")
            );
            let _ = self.status.send(Err(format!(
                "the cluster store ({}) does not answer: {why}",
                self.settings.endpoints.join(", ")
            )));
            // Refuse requests while waiting, rather than letting them queue.
            let deadline = tokio::time::sleep(delay);
            tokio::pin!(deadline);
            loop {
                tokio::select! {
                    _ = &mut deadline => break,
                    request = self.requests.recv() => match request {
                        Some(request) => refuse(request, &why),
                        None => return,
                    },
                }
            }
            delay = (delay * 2).min(Duration::from_secs(2));
        }
    }

    async fn connect(&self, endpoint: &str) -> Session<Client> {
        let mut options = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(2))
            .with_timeout(Duration::from_secs(3))
            // HTTP/2 pings find a dead member; etcd closes connections that ping more
            // often than every 5 s (its --grpc-keepalive-min-time).
            .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5))
            .with_keep_alive_while_idle(true);
        if let Some(tls) = &self.settings.tls {
            options = options.with_tls(tls_options(tls).map_err(SessionEnd::Lost)?);
        }
        Client::connect([endpoint], Some(options))
            .await
            .map_err(etcd("cannot connect"))
    }

    /// One connection's life: lease, list, sync, then watch until something breaks.
    /// `Ok` only when netd is stopping.
    async fn session(&mut self, endpoint: &str) -> Session<()> {
        let mut client = self.connect(endpoint).await?;
        self.ensure_lease(&mut client).await?;
        let (mut keeper, mut alive) = client
            .lease_keep_alive(self.lease)
            .await
            .map_err(etcd("cannot keep the lease alive"))?;
        let ttl = self.settings.lease_ttl;
        let mut renew = tokio::time::interval((ttl / 3).max(Duration::from_secs(1)));
        renew.tick().await;
        loop {
            let revision = self.list(&mut client).await?;
            crate::metrics::get().cluster.revision.set(revision);
            crate::metrics::get().cluster.store_up.set(1);
            let _ = self.status.send(Ok(()));
            self.sync(&mut client).await?;
            let mut stream = client
                .watch(
                    self.keys.root.clone(),
                    Some(
                        WatchOptions::new()
                            .with_prefix()
                            .with_start_revision(revision + 1),
                    ),
                )
                .await
                .map_err(etcd("cannot watch"))?;
            loop {
                tokio::select! {
                    message = stream.message() => {
                        let Some(response) = message.map_err(etcd("watch failed"))? else {
                            tracing::warn!("cluster store: the watch ended; listing again");
                            break;
                        };
                        if response.canceled() || response.compact_revision() > 0 {
                            tracing::warn!(
                                "cluster store: the watch was cancelled ({}); listing again",
                                response.cancel_reason()
                            );
                            break;
                        }
                        self.apply_events(&response);
                        // Events that came with it (a node's many keys, a burst of
                        // leases) are taken together: one sync for all of them.
                        let mut relist = false;
                        for _ in 0..1000 {
                            match tokio::time::timeout(COALESCE, stream.message()).await {
                                Ok(Ok(Some(more))) if !more.canceled() && more.compact_revision() == 0 => {
                                    self.apply_events(&more);
                                }
                                Ok(Ok(Some(_))) | Ok(Ok(None)) => {
                                    relist = true;
                                    break;
                                }
                                Ok(Err(e)) => return Err(etcd("watch failed")(e)),
                                Err(_) => break,
                            }
                        }
                        self.sync(&mut client).await?;
                        if relist {
                            break;
                        }
                    }
                    _ = renew.tick() => {
                        keeper.keep_alive().await.map_err(etcd("cannot renew the lease"))?;
                        let answer = alive.message().await.map_err(etcd("cannot renew the lease"))?;
                        if answer.is_none_or(|a| a.ttl() <= 0) {
                            // Expired (the store was away longer than the TTL): a new lease,
                            // and this node's keys again.
                            return Err(SessionEnd::Lost("this node's lease expired".into()));
                        }
                    }
                    changed = self.names.changed() => {
                        if changed.is_err() {
                            return Ok(());
                        }
                        self.publish_names(&mut client).await?;
                    }
                    request = self.requests.recv() => {
                        let Some(request) = request else { return Ok(()) };
                        self.handle(&mut client, request).await?;
                    }
                }
            }
        }
    }

    /// Applies a watch response's events to the held keys.
    fn apply_events(&mut self, response: &etcd_client::WatchResponse) {
        let metrics = &crate::metrics::get().cluster;
        metrics.watch_events.inc_by(response.events().len() as u64);
        if let Some(header) = response.header() {
            metrics.revision.set(header.revision());
        }
        for event in response.events() {
            let Some(kv) = event.kv() else { continue };
            let key = String::from_utf8_lossy(kv.key()).into_owned();
            match event.event_type() {
                EventType::Put => {
                    self.index.put(
                        key,
                        Held {
                            value: kv.value().to_vec(),
                            lease: kv.lease(),
                        },
                    );
                }
                EventType::Delete => {
                    self.index.delete(&key);
                }
            }
        }
    }

    /// Reuses the lease of before a restart when it is still alive, else grants one.
    async fn ensure_lease(&mut self, client: &mut Client) -> Session<()> {
        if self.lease != 0 {
            let alive = client
                .lease_time_to_live(self.lease, None)
                .await
                .map_err(etcd("cannot read the lease"))?;
            if alive.ttl() > 0 {
                return Ok(());
            }
        }
        let ttl = i64::try_from(self.settings.lease_ttl.as_secs()).unwrap_or(i64::MAX);
        let granted = client
            .lease_grant(ttl, None)
            .await
            .map_err(etcd("cannot take a lease"))?;
        self.lease = granted.id();
        if let Some(path) = &self.lease_file {
            if let Err(e) = crate::files::write_atomic(path, &self.lease.to_string()) {
                tracing::warn!("cannot record the cluster lease in {}: {e}", path.display());
            }
        }
        Ok(())
    }

    /// Replaces the held keys with the store's; returns the revision of the answer.
    async fn list(&mut self, client: &mut Client) -> Session<i64> {
        let answer = client
            .get(
                self.keys.root.clone(),
                Some(GetOptions::new().with_prefix()),
            )
            .await
            .map_err(etcd("cannot list the cluster store"))?;
        self.index.clear();
        for kv in answer.kvs() {
            self.index.put(
                String::from_utf8_lossy(kv.key()).into_owned(),
                Held {
                    value: kv.value().to_vec(),
                    lease: kv.lease(),
                },
            );
        }
        Ok(answer.header().map(|h| h.revision()).unwrap_or(0))
    }

    /// Every network's records (a copy, for requests that look at all of them).
    fn records(&mut self) -> BTreeMap<String, NetworkRecords> {
        self.report_problems();
        self.index.networks().clone()
    }

    /// Logs each corrupt record once, not at every sync.
    fn report_problems(&mut self) {
        let problems: BTreeSet<String> = self.index.problems().collect();
        for problem in problems.difference(&self.reported) {
            tracing::warn!("cluster store: {problem}");
        }
        self.reported = problems;
    }

    /// Takes what this node lacks (a lease of each network, names), then gives the
    /// engine the view if it changed.
    async fn sync(&mut self, client: &mut Client) -> Session<()> {
        self.report_problems();
        let configs: Vec<(String, FlannelConfig)> = self
            .index
            .networks()
            .iter()
            .filter_map(|(name, r)| r.config.clone().map(|c| (name.clone(), c)))
            .collect();
        for (name, config) in &configs {
            self.ensure_own_lease(client, name, config).await?;
        }
        self.publish_names(client).await?;
        let view = keys::view(
            self.index.networks(),
            self.node.node_ip,
            &self.node.node_name,
        );
        for (name, network) in &view {
            if let Some(own) = network.own {
                self.previous.insert(name.clone(), own);
            }
        }
        if self.sent.as_ref() != Some(&view) {
            let sending = view.clone();
            let node = self.node.clone();
            match self
                .engine
                .call(move |e| e.sync_cluster(sending, &node))
                .await
            {
                Ok(changes) => {
                    for change in changes {
                        tracing::info!("cluster: {change}");
                    }
                    self.sent = Some(view);
                }
                Err(e) => {
                    tracing::error!("cluster: the engine could not apply the cluster state: {e}")
                }
            }
        }
        if let Err(e) = self.sync_policies().await {
            tracing::error!("cluster: the engine could not apply the cluster's policies: {e}");
        }
        Ok(())
    }

    /// Hands the engine the store's policies when they changed since it last took them.
    async fn sync_policies(&mut self) -> Result<()> {
        let policies = self.index.policies();
        if self.sent_policies.as_ref() == Some(policies) {
            return Ok(());
        }
        let sending = policies.clone();
        let changes = self
            .engine
            .call(move |e| e.sync_cluster_policies(sending))
            .await?;
        for change in changes {
            tracing::info!("cluster: {change}");
        }
        self.sent_policies = Some(self.index.policies().clone());
        Ok(())
    }

    /// This node's lease of a network: kept (re-attached to the current etcd lease, and
    /// rewritten if its attributes changed), or a new subnet, taken with a transaction
    /// that fails if another node took it first.
    async fn ensure_own_lease(
        &mut self,
        client: &mut Client,
        name: &str,
        config: &FlannelConfig,
    ) -> Session<()> {
        let attrs = own_attrs(config, &self.node);
        let value = serde_json::to_vec(&attrs).map_err(|e| SessionEnd::Lost(e.to_string()))?;
        let network = self.index.networks().get(name);
        let own = network.and_then(|n| {
            n.leases
                .iter()
                .find(|(_, (_, a, _))| a.public_ip == self.node.node_ip)
                .map(|(key, (_, a, lease))| (key.clone(), a.clone(), *lease))
        });
        if let Some((key, held_attrs, lease)) = own {
            if lease != self.lease || held_attrs != attrs {
                client
                    .put(
                        key.clone(),
                        value.clone(),
                        Some(PutOptions::new().with_lease(self.lease)),
                    )
                    .await
                    .map_err(etcd("cannot renew this node's subnet"))?;
                self.index.put(
                    key,
                    Held {
                        value,
                        lease: self.lease,
                    },
                );
            }
            return Ok(());
        }
        let mut leases: Vec<(Ipv4Net, LeaseAttrs)> = network
            .map(|n| n.leases.values().map(|(s, a, _)| (*s, a.clone())).collect())
            .unwrap_or_default();
        let mut previous = self.previous.get(name).copied();
        for _ in 0..64 {
            let Some(subnet) = choose_subnet(config, self.node.node_ip, &leases, previous) else {
                tracing::error!("cluster network {name}: every node subnet is taken");
                return Ok(());
            };
            let key = self.keys.lease(name, subnet);
            let taken = client
                .txn(
                    Txn::new()
                        .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
                        .and_then([TxnOp::put(
                            key.clone(),
                            value.clone(),
                            Some(PutOptions::new().with_lease(self.lease)),
                        )]),
                )
                .await
                .map_err(etcd("cannot take a subnet"))?
                .succeeded();
            if taken {
                tracing::info!("cluster network {name}: this node leased {subnet}");
                self.index.put(
                    key,
                    Held {
                        value,
                        lease: self.lease,
                    },
                );
                return Ok(());
            }
            // Another node was first: count it as taken and choose again.
            let mut theirs = attrs.clone();
            theirs.public_ip = std::net::Ipv4Addr::UNSPECIFIED;
            leases.push((subnet, theirs));
            previous = None;
        }
        Err(SessionEnd::Lost(format!(
            "cluster network {name}: no free subnet after many tries"
        )))
    }

    /// Makes `names/<this node>/` of each network hold exactly the engine's names.
    async fn publish_names(&mut self, client: &mut Client) -> Session<()> {
        let local = self.names.borrow_and_update().clone();
        let node = self.node.node_name.clone();
        let mut wanted: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        let mut mine: Vec<String> = Vec::new();
        for (network, records) in self.index.networks() {
            mine.extend(
                records
                    .names
                    .keys()
                    .filter(|(n, _)| *n == node)
                    .map(|(n, sandbox)| self.keys.name(network, n, sandbox)),
            );
            if records.config.is_none() {
                continue;
            }
            for record in local.get(network).into_iter().flatten() {
                let value =
                    serde_json::to_vec(record).map_err(|e| SessionEnd::Lost(e.to_string()))?;
                wanted.insert(self.keys.name(network, &node, &record.id), value);
            }
        }
        let mut ops = Vec::new();
        for key in mine.iter().filter(|k| !wanted.contains_key(*k)) {
            ops.push(TxnOp::delete(key.clone(), None));
        }
        let held = self.index.held();
        for (key, value) in &wanted {
            if held
                .get(key)
                .is_none_or(|h| h.value != *value || h.lease != self.lease)
            {
                ops.push(TxnOp::put(
                    key.clone(),
                    value.clone(),
                    Some(PutOptions::new().with_lease(self.lease)),
                ));
            }
        }
        if ops.is_empty() {
            return Ok(());
        }
        for chunk in ops.chunks(100) {
            client
                .txn(Txn::new().and_then(chunk.to_vec()))
                .await
                .map_err(etcd("cannot publish names"))?;
        }
        for key in mine.iter().filter(|k| !wanted.contains_key(*k)) {
            self.index.delete(key);
        }
        for (key, value) in wanted {
            self.index.put(
                key,
                Held {
                    value,
                    lease: self.lease,
                },
            );
        }
        Ok(())
    }

    /// Answers an API request. A store failure ends the session (and the request gets
    /// the error); a refusal is only the request's.
    async fn handle(&mut self, client: &mut Client, request: Request) -> Session<()> {
        match request {
            Request::Create {
                name,
                config,
                reply,
            } => {
                let answer = self.create(client, &name, config).await;
                finish(reply, answer)
            }
            Request::Remove { name, reply } => {
                let answer = self.remove(client, &name).await;
                finish(reply, answer)
            }
            Request::Nodes { reply } => {
                let answer = self.nodes(client).await;
                finish(reply, answer)
            }
            Request::RemoveNode { name, reply } => {
                let answer = self.remove_node(client, &name).await;
                finish(reply, answer)
            }
            Request::ApplyPolicies {
                text,
                namespace,
                reply,
            } => {
                let answer = self
                    .apply_policies(client, &text, namespace.as_deref())
                    .await;
                finish(reply, answer)
            }
            Request::RemovePolicy {
                namespace,
                name,
                reply,
            } => {
                let answer = self.remove_policy(client, &namespace, &name).await;
                finish(reply, answer)
            }
        }
    }

    /// Every policy of `text` checked, then the changed ones stored in one transaction,
    /// then applied here (other nodes take them from the watch).
    async fn apply_policies(
        &mut self,
        client: &mut Client,
        text: &str,
        namespace: Option<&str>,
    ) -> Session<Result<Vec<PolicyApplied>>> {
        let policies = match parse_policies(text, namespace) {
            Ok(policies) => policies,
            Err(e) => return Ok(Err(e.into())),
        };
        let (_, applied) = plan_apply(self.index.policies(), policies.clone());
        let mut writes = Vec::new();
        for (policy, what) in policies.iter().zip(&applied) {
            if what.action == "unchanged" {
                continue;
            }
            let value = serde_json::to_vec(policy).map_err(|e| SessionEnd::Lost(e.to_string()))?;
            let key = self
                .keys
                .policy(&policy.metadata.namespace, &policy.metadata.name);
            writes.push((key, value));
        }
        if writes.len() > MAX_TXN_OPS {
            return Ok(Err(NetdError::Invalid(format!(
                "policy file: {} changed policies; the cluster store takes at most {MAX_TXN_OPS} in one transaction (apply them in several files)",
                writes.len()
            ))));
        }
        if !writes.is_empty() {
            let ops: Vec<TxnOp> = writes
                .iter()
                .map(|(k, v)| TxnOp::put(k.clone(), v.clone(), None))
                .collect();
            client
                .txn(Txn::new().and_then(ops))
                .await
                .map_err(etcd("cannot store the policies"))?;
            for (key, value) in writes {
                self.index.put(key, Held { value, lease: 0 });
            }
        }
        Ok(self.sync_policies().await.map(|()| applied).map_err(|e| {
            NetdError::Internal(format!(
                "the policies are stored in the cluster, but this node could not apply them: {e}"
            ))
        }))
    }

    async fn remove_policy(
        &mut self,
        client: &mut Client,
        namespace: &str,
        name: &str,
    ) -> Session<Result<String>> {
        let key = self.keys.policy(namespace, name);
        let removed = client
            .delete(key.clone(), None)
            .await
            .map_err(etcd("cannot remove the policy"))?
            .deleted();
        if removed == 0 {
            return Ok(Err(policy_not_found(namespace, name)));
        }
        self.index.delete(&key);
        Ok(self
            .sync_policies()
            .await
            .map(|()| format!("{namespace}/{name}"))
            .map_err(|e| {
                NetdError::Internal(format!(
                    "the policy is removed from the cluster, but this node could not apply that: {e}"
                ))
            }))
    }

    async fn create(
        &mut self,
        client: &mut Client,
        name: &str,
        config: FlannelConfig,
    ) -> Session<Result<String>> {
        let records = self.records();
        if records.get(name).is_some_and(|r| r.config.is_some()) {
            return Ok(Err(NetdError::Conflict(format!(
                "network with name {name} already exists in the cluster"
            ))));
        }
        for (other, r) in &records {
            let Some(c) = &r.config else { continue };
            if config.vxlan().is_some() && c.vxlan() == config.vxlan() {
                let (vni, port) = config.vxlan().unwrap_or_default();
                return Ok(Err(NetdError::Invalid(format!(
                    "--opt vni: cluster network {other} already uses VNI {vni} on port {port}"
                ))));
            }
            if bridge_driver::pools::subnets_overlap(&c.network, &config.network) {
                return Ok(Err(NetdError::Invalid(format!(
                    "--subnet: {} overlaps cluster network {other} ({})",
                    config.network, c.network
                ))));
            }
        }
        let check = {
            let name = name.to_string();
            let config = config.clone();
            self.engine
                .call(move |e| e.check_cluster_network(&name, &config))
                .await
        };
        if let Err(e) = check {
            return Ok(Err(e));
        }
        let key = self.keys.config(name);
        let value = serde_json::to_vec(&config).map_err(|e| SessionEnd::Lost(e.to_string()))?;
        let created = client
            .txn(
                Txn::new()
                    .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
                    .and_then([TxnOp::put(key.clone(), value.clone(), None)]),
            )
            .await
            .map_err(etcd("cannot store the network"))?
            .succeeded();
        if !created {
            return Ok(Err(NetdError::Conflict(format!(
                "network with name {name} already exists in the cluster"
            ))));
        }
        self.index.put(key, Held { value, lease: 0 });
        self.sync(client).await?;
        let name = name.to_string();
        Ok(self
            .engine
            .call(move |e| Ok(e.state_network_id(&name)))
            .await
            .and_then(|id| {
                id.ok_or_else(|| {
                    NetdError::Internal(
                        "the network was stored but not set up on this node (see netd's log)"
                            .into(),
                    )
                })
            }))
    }

    async fn remove(&mut self, client: &mut Client, name: &str) -> Session<Result<String>> {
        let records = self.records();
        let Some(network) = records.get(name).filter(|r| r.config.is_some()) else {
            return Ok(Err(NetdError::NotFound(format!(
                "network {name} not found"
            ))));
        };
        let local = {
            let name = name.to_string();
            self.engine
                .call(move |e| Ok(e.cluster_network_users(&name)))
                .await
        };
        let mut users: Vec<String> = match local {
            Ok(users) => users
                .into_iter()
                .map(|s| format!("{s} on node {}", self.node.node_name))
                .collect(),
            Err(e) => return Ok(Err(e)),
        };
        users.extend(
            network
                .names
                .iter()
                .filter(|((node, _), _)| *node != self.node.node_name)
                .map(|((node, _), record)| format!("{} on node {node}", record.name)),
        );
        if !users.is_empty() {
            return Ok(Err(NetdError::Conflict(format!(
                "network {name} has active endpoints ({}); remove them first",
                users.join(", ")
            ))));
        }
        let prefix = self.keys.network(name);
        client
            .delete(prefix.clone(), Some(DeleteOptions::new().with_prefix()))
            .await
            .map_err(etcd("cannot remove the network"))?;
        self.index.delete_prefix(&prefix);
        self.sync(client).await?;
        Ok(Ok(name.to_string()))
    }

    async fn nodes(&mut self, client: &mut Client) -> Session<Result<Vec<NodeLease>>> {
        let mut expiry: HashMap<i64, Option<i64>> = HashMap::new();
        let mut rows = Vec::new();
        for (network, records) in self.records() {
            for (subnet, attrs, lease) in records.leases.values() {
                if !expiry.contains_key(lease) {
                    let ttl = if *lease == 0 {
                        None
                    } else {
                        client
                            .lease_time_to_live(*lease, None)
                            .await
                            .ok()
                            .map(|a| a.ttl())
                            .filter(|t| *t >= 0)
                    };
                    expiry.insert(*lease, ttl);
                }
                rows.push(NodeLease {
                    name: attrs.node_name.clone(),
                    node_ip: attrs.public_ip,
                    network: network.clone(),
                    subnet: *subnet,
                    backend: attrs.backend_type.as_str().to_string(),
                    expires_in: expiry.get(lease).copied().flatten(),
                });
            }
        }
        rows.sort_by(|a, b| (&a.name, &a.network).cmp(&(&b.name, &b.network)));
        Ok(Ok(rows))
    }

    async fn remove_node(
        &mut self,
        client: &mut Client,
        name: &str,
    ) -> Session<Result<Vec<String>>> {
        if name == self.node.node_name {
            return Ok(Err(NetdError::Invalid(format!(
                "{name} is this node; stop its netd instead (or run this on another node)"
            ))));
        }
        let mut keys = Vec::new();
        let mut released = Vec::new();
        for (network, records) in self.records() {
            for (key, (subnet, attrs, _)) in &records.leases {
                if attrs.node_name == name {
                    keys.push(key.clone());
                    released.push(format!("{network} {subnet}"));
                }
            }
            for (node, sandbox) in records.names.keys() {
                if node == name {
                    keys.push(self.keys.name(&network, node, sandbox));
                }
            }
        }
        if released.is_empty() {
            return Ok(Err(NetdError::NotFound(format!(
                "no node {name} holds a lease"
            ))));
        }
        let ops: Vec<TxnOp> = keys
            .iter()
            .map(|k| TxnOp::delete(k.clone(), None))
            .collect();
        for chunk in ops.chunks(100) {
            client
                .txn(Txn::new().and_then(chunk.to_vec()))
                .await
                .map_err(etcd("cannot release the node's leases"))?;
        }
        for key in &keys {
            self.index.delete(key);
        }
        self.sync(client).await?;
        Ok(Ok(released))
    }
}

/// This node's lease record on a network.
fn own_attrs(config: &FlannelConfig, node: &NodeIdentity) -> LeaseAttrs {
    bridge_driver::cluster::ClusterMembership {
        config: config.clone(),
        node_ip: node.node_ip,
        node_name: node.node_name.clone(),
        underlay: node.underlay.clone(),
        peers: Vec::new(),
    }
    .lease()
}

fn finish<T>(
    reply: tokio::sync::oneshot::Sender<Result<T>>,
    answer: Session<Result<T>>,
) -> Session<()> {
    match answer {
        Ok(result) => {
            let _ = reply.send(result);
            Ok(())
        }
        Err(end) => {
            let _ = reply.send(Err(NetdError::Unavailable(format!(
                "the cluster store failed: {end}"
            ))));
            Err(end)
        }
    }
}

fn refuse(request: Request, why: &str) {
    let error = || NetdError::Unavailable(format!("the cluster store does not answer: {why}"));
    match request {
        Request::Create { reply, .. }
        | Request::Remove { reply, .. }
        | Request::RemovePolicy { reply, .. } => {
            let _ = reply.send(Err(error()));
        }
        Request::ApplyPolicies { reply, .. } => {
            let _ = reply.send(Err(error()));
        }
        Request::Nodes { reply } => {
            let _ = reply.send(Err(error()));
        }
        Request::RemoveNode { reply, .. } => {
            let _ = reply.send(Err(error()));
        }
    }
}

fn tls_options(files: &super::TlsFiles) -> std::result::Result<etcd_client::TlsOptions, String> {
    let read = |path: &std::path::Path| {
        std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
    };
    let mut tls = etcd_client::TlsOptions::new();
    if let Some(ca) = &files.ca {
        tls = tls.ca_certificate(etcd_client::Certificate::from_pem(read(ca)?));
    }
    if let (Some(cert), Some(key)) = (&files.cert, &files.key) {
        tls = tls.identity(etcd_client::Identity::from_pem(read(cert)?, read(key)?));
    }
    Ok(tls)
}
