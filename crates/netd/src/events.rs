//! The stream of what netd did (`netctl system events`, as `docker events`): each change
//! made through an API, kept in memory for the last `HISTORY` and sent to whoever
//! watches. A watcher gets the history it asks for, then every new event, with no gap
//! between the two: both are taken under one lock.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::sync::broadcast;

use crate::api::types::{Event, Objects};

/// Events kept for `--since` (Docker keeps 256; netd's are small).
pub const HISTORY: usize = 1024;

#[derive(Debug)]
struct Bus {
    history: Mutex<VecDeque<Arc<Event>>>,
    live: broadcast::Sender<Arc<Event>>,
}

static BUS: LazyLock<Bus> = LazyLock::new(|| Bus {
    history: Mutex::new(VecDeque::with_capacity(HISTORY)),
    live: broadcast::channel(HISTORY).0,
});

/// Nanoseconds since the epoch, as events are stamped.
pub fn now_nanos() -> u64 {
    nanos(SystemTime::now())
}

/// A time as nanoseconds since the epoch (0 before it).
pub fn nanos(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// Records an event and sends it to the watchers.
pub fn publish(event: Event) {
    let event = Arc::new(event);
    let mut history = BUS.history.lock().unwrap_or_else(|e| e.into_inner());
    if history.len() == HISTORY {
        history.pop_front();
    }
    history.push_back(event.clone());
    // No watcher is no error.
    let _ = BUS.live.send(event);
}

/// Records what netd did by itself (not asked through an API): `sandbox` `die` when a
/// sandbox's namespace went with its owner.
pub fn publish_internal(object: &str, action: &str, operation: &str, objects: Objects) {
    let now = SystemTime::now();
    publish(Event {
        time: humantime::format_rfc3339_millis(now).to_string(),
        time_nano: nanos(now),
        object: object.to_string(),
        action: action.to_string(),
        operation: operation.to_string(),
        api: "internal".to_string(),
        result: "ok".to_string(),
        status: None,
        duration_ms: None,
        uid: None,
        pid: None,
        objects,
        error: None,
    });
}

/// The kept events from `since` on, and a receiver of the ones to come.
pub fn subscribe(since: Option<u64>) -> (Vec<Arc<Event>>, broadcast::Receiver<Arc<Event>>) {
    let history = BUS.history.lock().unwrap_or_else(|e| e.into_inner());
    let past = match since {
        Some(since) => history
            .iter()
            .filter(|e| e.time_nano >= since)
            .cloned()
            .collect(),
        None => Vec::new(),
    };
    (past, BUS.live.subscribe())
}

/// The keys `--filter` takes.
pub const FILTER_KEYS: &[&str] = &[
    "type",
    "event",
    "operation",
    "result",
    "api",
    "network",
    "sandbox",
    "container",
    "policy",
    "node",
];

/// `--filter key=value`s as Docker reads them: values of one key are alternatives, keys
/// must all match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filters(BTreeMap<String, Vec<String>>);

/// A filter netd does not know.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("filter {key}: not a filter of events (use one of {})", FILTER_KEYS.join(", "))]
pub struct UnknownFilter {
    pub key: String,
}

impl Filters {
    pub fn new(filters: BTreeMap<String, Vec<String>>) -> Result<Filters, UnknownFilter> {
        if let Some(key) = filters.keys().find(|k| !FILTER_KEYS.contains(&k.as_str())) {
            return Err(UnknownFilter { key: key.clone() });
        }
        Ok(Filters(filters))
    }

    pub fn matches(&self, event: &Event) -> bool {
        self.0.iter().all(|(key, values)| {
            let value = match key.as_str() {
                "type" => Some(event.object.as_str()),
                "event" => Some(event.action.as_str()),
                "operation" => Some(event.operation.as_str()),
                "result" => Some(event.result.as_str()),
                "api" => Some(event.api.as_str()),
                other => event.objects.get(other),
            };
            // A sandbox filter also matches Docker's name for it (container).
            let value = value.or_else(|| match key.as_str() {
                "container" => event.objects.get("sandbox"),
                _ => None,
            });
            value.is_some_and(|v| values.iter().any(|w| w == v))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(object: &str, action: &str, network: Option<&str>, sandbox: Option<&str>) -> Event {
        Event {
            time: String::new(),
            time_nano: now_nanos(),
            object: object.into(),
            action: action.into(),
            operation: format!("{object}_{action}"),
            api: "netd".into(),
            result: "ok".into(),
            status: Some(200),
            duration_ms: Some(1.0),
            uid: Some(0),
            pid: None,
            objects: Objects {
                network: network.map(Into::into),
                sandbox: sandbox.map(Into::into),
                ..Objects::default()
            },
            error: None,
        }
    }

    fn filters(list: &[(&str, &str)]) -> Filters {
        let mut map: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (k, v) in list {
            map.entry(k.to_string()).or_default().push(v.to_string());
        }
        Filters::new(map).unwrap_or_default()
    }

    #[test]
    fn filters_are_alternatives_within_a_key_and_all_keys_must_match() {
        let create = event("network", "create", Some("a"), None);
        let connect = event("network", "connect", Some("b"), Some("web"));
        let f = filters(&[
            ("type", "network"),
            ("event", "create"),
            ("event", "connect"),
        ]);
        assert!(f.matches(&create) && f.matches(&connect));
        let f = filters(&[("network", "b")]);
        assert!(!f.matches(&create) && f.matches(&connect));
        let f = filters(&[("container", "web")]);
        assert!(f.matches(&connect) && !f.matches(&create));
        assert!(Filters::default().matches(&create));
        let bad = Filters::new(BTreeMap::from([("colour".to_string(), vec![])]));
        assert_eq!(bad.map_err(|e| e.key), Err("colour".to_string()));
    }

    #[test]
    fn a_watcher_gets_the_history_since_then_what_follows() {
        let before = now_nanos();
        publish(event("network", "create", Some("history-test"), None));
        let (past, mut live) = subscribe(Some(before));
        assert!(past
            .iter()
            .any(|e| e.objects.network.as_deref() == Some("history-test")));
        publish(event("network", "destroy", Some("history-test"), None));
        let next = live.try_recv().map(|e| e.action.clone());
        assert_eq!(next, Ok("destroy".to_string()));
    }
}
