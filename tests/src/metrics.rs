//! netd's `/metrics` as a test reads it: scraped inside a test host and parsed by the
//! Prometheus project's OpenMetrics parser (`tools/metrics.py`, Debian's
//! python3-prometheus-client).

use std::collections::BTreeMap;

use crate::TestHost;

/// Where the tests' netds serve metrics (each test host has its own loopback).
pub const ADDR: &str = "127.0.0.1:9464";

const PROBE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tools/metrics.py");

/// One scrape: each sample by `name{label="value",...}` (labels sorted); panics when the
/// scrape or the parse fails.
pub fn scrape(host: &TestHost) -> BTreeMap<String, f64> {
    // Debian's interpreter, which has python3-prometheus-client.
    let out = crate::must(&mut host.cmd(
        "/usr/bin/python3",
        &[PROBE, &format!("http://{ADDR}/metrics")],
    ));
    out.lines()
        .map(|line| {
            let sample: serde_json::Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("metrics.py printed {line}: {e}"));
            let labels: BTreeMap<String, String> =
                serde_json::from_value(sample["labels"].clone()).unwrap_or_default();
            let labels: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
            let name = sample["name"].as_str().unwrap_or_default();
            let value = sample["value"].as_f64().unwrap_or(f64::NAN);
            (format!("{name}{{{}}}", labels.join(",")), value)
        })
        .collect()
}
