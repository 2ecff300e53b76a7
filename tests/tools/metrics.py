#!/usr/bin/env python3
"""Scrapes netd's /metrics and parses it with the Prometheus project's own OpenMetrics
parser (Debian python3-prometheus-client); prints every sample as one JSON object per
line: {"name", "labels", "value", "type"}. A text the parser refuses fails the scrape."""
import json
import sys
import urllib.request

from prometheus_client.openmetrics.parser import text_string_to_metric_families


def main():
    url = sys.argv[1]
    with urllib.request.urlopen(url, timeout=5) as response:
        kind = response.headers.get("Content-Type", "")
        text = response.read().decode("utf-8")
    if not kind.startswith("application/openmetrics-text"):
        sys.exit(f"unexpected content type {kind!r}")
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            print(json.dumps({
                "name": sample.name,
                "labels": sample.labels,
                "value": sample.value,
                "type": family.type,
            }, sort_keys=True))


if __name__ == "__main__":
    main()
