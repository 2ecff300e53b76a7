//! `netctl system events`: netd's operations as they happen, as `docker events` shows a
//! daemon's.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context};
use netd::api::client::Client;
use netd::api::types::{Event, EventsQuery};

use crate::args::EventsArgs;

/// A `--since`/`--until` value as nanoseconds since the epoch: a duration before `now`
/// (`10m`), an RFC 3339 time, or Unix seconds (with a fraction).
pub fn parse_time(flag: &str, text: &str, now: SystemTime) -> anyhow::Result<u64> {
    let time = if let Ok(ago) = humantime::parse_duration(text) {
        now.checked_sub(ago).unwrap_or(UNIX_EPOCH)
    } else if let Ok(time) = humantime::parse_rfc3339_weak(text) {
        time
    } else if let Some(seconds) = text
        .parse::<f64>()
        .ok()
        .filter(|s| s.is_finite() && *s >= 0.0)
    {
        UNIX_EPOCH + Duration::from_secs_f64(seconds)
    } else {
        bail!("{flag}: {text:?} is not a time (a duration ago as 10m, RFC 3339 as 2026-12-02T10:00:00Z, or Unix seconds)");
    };
    Ok(netd::events::nanos(time))
}

/// `--filter KEY=VALUE`s as the API takes them (`{"type": ["network"]}`).
pub fn parse_filters(filters: &[String]) -> anyhow::Result<BTreeMap<String, Vec<String>>> {
    let mut map: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for filter in filters {
        let (key, value) = filter
            .split_once('=')
            .ok_or_else(|| anyhow!("--filter {filter:?}: expected KEY=VALUE"))?;
        if !netd::events::FILTER_KEYS.contains(&key) {
            bail!(
                "--filter {filter:?}: {key} is not a filter of events (use one of {})",
                netd::events::FILTER_KEYS.join(", ")
            );
        }
        map.entry(key.to_string())
            .or_default()
            .push(value.to_string());
    }
    Ok(map)
}

/// One event for people: time, type, action, objects, and how it went.
pub fn text_line(event: &Event) -> String {
    let objects = event.objects.describe();
    let mut line = format!("{} {} {}", event.time, event.object, event.action);
    if !objects.is_empty() {
        line.push(' ');
        line.push_str(&objects);
    }
    match (event.duration_ms, event.uid) {
        (Some(ms), uid) => {
            let uid = uid.map_or("?".to_string(), |u| u.to_string());
            line.push_str(&format!(" ({}, {ms:.1} ms, uid {uid})", event.result));
        }
        (None, _) => line.push_str(&format!(" ({}, by netd)", event.result)),
    }
    if let Some(error) = &event.error {
        line.push_str(&format!(": {error}"));
    }
    line
}

pub async fn run(client: &Client, args: EventsArgs) -> anyhow::Result<u8> {
    let now = SystemTime::now();
    let text = match args.format.as_deref() {
        None | Some("json") => false,
        Some("text") => true,
        Some(other) => bail!("--format: {other:?} is not a format (json or text)"),
    };
    let filters = parse_filters(&args.filter)?;
    let query = EventsQuery {
        since: args
            .since
            .map(|t| parse_time("--since", &t, now))
            .transpose()?,
        until: args
            .until
            .map(|t| parse_time("--until", &t, now))
            .transpose()?,
        filters: (!filters.is_empty())
            .then(|| serde_json::to_string(&filters))
            .transpose()?,
    };
    let path = format!(
        "/system/events?{}",
        serde_urlencoded::to_string(&query).context("encoding the query")?
    );
    let mut out = std::io::stdout().lock();
    let mut failed = None;
    client
        .lines(&path, |line| {
            let written = if text {
                match serde_json::from_slice::<Event>(line) {
                    Ok(event) => writeln!(out, "{}", text_line(&event)),
                    Err(_) => writeln!(out, "{}", String::from_utf8_lossy(line)),
                }
            } else {
                out.write_all(line).and_then(|()| out.write_all(b"\n"))
            };
            // Each line as it comes (a pipe would hold them), and a closed pipe ends.
            match written.and_then(|()| out.flush()) {
                Ok(()) => true,
                Err(e) => {
                    failed = Some(e);
                    false
                }
            }
        })
        .await?;
    match failed {
        Some(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(e).context("writing the events")
        }
        _ => Ok(0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_durations_ago_rfc3339_or_unix_seconds() {
        let now = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let at = |t: &str| parse_time("--since", t, now).map_err(|e| e.to_string());
        assert_eq!(at("10m"), Ok((1_000_000 - 600) * 1_000_000_000));
        assert_eq!(at("0s"), Ok(1_000_000 * 1_000_000_000));
        assert_eq!(at("1970-01-02T00:00:00Z"), Ok(86_400 * 1_000_000_000));
        assert_eq!(at("12.5"), Ok(12_500_000_000));
        let bad = at("yesterday").unwrap_err();
        assert!(
            bad.starts_with("--since: \"yesterday\" is not a time"),
            "{bad}"
        );
    }

    #[test]
    fn filters_group_values_by_key_and_refuse_unknown_keys() {
        let map = parse_filters(&[
            "type=network".into(),
            "event=create".into(),
            "event=destroy".into(),
        ])
        .map_err(|e| e.to_string());
        assert_eq!(
            map.map(|m| m.get("event").cloned()),
            Ok(Some(vec!["create".to_string(), "destroy".to_string()]))
        );
        let bad = parse_filters(&["colour=red".into()]).map_err(|e| e.to_string());
        assert!(bad.is_err_and(|e| e.contains("colour is not a filter")));
        assert!(parse_filters(&["network".into()]).is_err());
    }
}
