//! NetworkPolicy reading (every field, Kubernetes' defaults, every refusal naming its
//! field) and rendering (chains and sets compared with golden files under
//! `tests/golden/policy/`; `UPDATE_GOLDEN=1` rewrites them).

// Tests fail by panicking with a reason.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::path::PathBuf;

use bridge_driver::policy::render::{set_destroy_text, set_restore_text, set_update_text};
use bridge_driver::policy::{parse_policies, policy_rules, Labels, PolicyEndpoint, PolicyType};

fn check(name: &str, actual: &str) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden/policy")
        .join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, actual).expect("write golden");
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("missing {}: {e} (run with UPDATE_GOLDEN=1)", path.display()));
    assert_eq!(
        actual,
        expected,
        "rendering differs from {}",
        path.display()
    );
}

const EVERYTHING: &str = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: api-allow
  namespace: prod
  labels: {team: a}
  uid: 0b1c
  resourceVersion: "12"
spec:
  podSelector:
    matchLabels: {app: api}
    matchExpressions:
      - {key: tier, operator: In, values: [back, mid]}
  ingress:
    - from:
        - podSelector: {matchLabels: {app: web}}
        - namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: ops}}
          podSelector: {matchExpressions: [{key: role, operator: Exists}]}
        - ipBlock: {cidr: 192.0.2.0/24, except: [192.0.2.128/25]}
      ports:
        - {protocol: TCP, port: 8080}
        - {protocol: UDP, port: 5000, endPort: 5010}
  egress:
    - to:
        - namespaceSelector: {}
      ports:
        - {port: 5432}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny-all}
spec:
  podSelector: {}
  policyTypes: [Egress, Ingress]
"#;

fn web(namespace: &str, labels: &[(&str, &str)], ip: &str) -> PolicyEndpoint {
    let mut l: Labels = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    l.insert("netd.namespace".into(), namespace.into());
    PolicyEndpoint {
        labels: l,
        ips: vec![ip.parse().unwrap()],
    }
}

#[test]
fn every_supported_field_reads_with_kubernetes_defaults() {
    let policies = parse_policies(EVERYTHING, None).unwrap();
    assert_eq!(policies.len(), 2);
    let api = &policies[0];
    assert_eq!(api.key(), "prod/api-allow");
    assert_eq!(
        api.spec.policy_types,
        vec![PolicyType::Ingress, PolicyType::Egress],
        "Ingress always, Egress because egress rules are given"
    );
    assert_eq!(api.spec.ingress[0].from.len(), 3);
    assert_eq!(api.spec.ingress[0].ports[1].end_port, Some(5010));
    let deny = &policies[1];
    assert_eq!(deny.key(), "default/deny-all");
    assert!(deny.spec.ingress.is_empty() && deny.spec.egress.is_empty());
    assert!(deny.has(PolicyType::Egress) && deny.has(PolicyType::Ingress));
    // JSON, a List, and the namespace from the command line.
    let json = r#"{"apiVersion":"v1","kind":"List","items":[{"apiVersion":"networking.k8s.io/v1",
        "kind":"NetworkPolicy","metadata":{"name":"x"},"spec":{"podSelector":{},
        "egress":[{}]}}]}"#;
    let listed = parse_policies(json, Some("dev")).unwrap();
    assert_eq!(listed[0].key(), "dev/x");
    assert_eq!(
        listed[0].spec.policy_types,
        vec![PolicyType::Ingress, PolicyType::Egress]
    );
    // What inspect prints reads back as the same policy.
    let printed = serde_json::to_string(api).unwrap();
    assert_eq!(&parse_policies(&printed, None).unwrap()[0], api);
}

#[test]
fn bad_policies_are_refused_naming_the_field() {
    let base = |spec: &str| {
        format!("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: p}}\nspec: {spec}\n")
    };
    let cases: Vec<(String, &str)> = vec![
        ("{{{".into(), "not YAML or JSON"),
        ("apiVersion: v1\nkind: NetworkPolicy\nmetadata: {name: p}\nspec: {podSelector: {}}".into(), "apiVersion"),
        ("apiVersion: networking.k8s.io/v1\nkind: Pod\nmetadata: {name: p}\nspec: {}".into(), "kind"),
        ("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: P_1}\nspec: {podSelector: {}}".into(), "metadata.name"),
        ("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: p, namespace: other}\nspec: {podSelector: {}}".into(), "metadata.namespace"),
        (base("{}"), "spec.podSelector"),
        (base("{podSelector: {}, colour: blue}"), "spec.colour"),
        (base("{podSelector: {matchLabels: {bad key: x}}}"), "spec.podSelector.matchLabels.bad key"),
        (base("{podSelector: {matchLabels: {app: -x}}}"), "spec.podSelector.matchLabels.app"),
        (base("{podSelector: {matchExpressions: [{key: a, operator: In}]}}"), "spec.podSelector.matchExpressions[0].values"),
        (base("{podSelector: {matchExpressions: [{key: a, operator: Like, values: [x]}]}}"), "spec.podSelector.matchExpressions[0].operator"),
        (base("{podSelector: {matchExpressions: [{key: a, operator: Exists, values: [x]}]}}"), "matchExpressions[0].values"),
        (base("{podSelector: {}, policyTypes: [Sideways]}"), "spec.policyTypes[0]"),
        (base("{podSelector: {}, ingress: [{from: [{ipBlock: {cidr: 10.0.0.0/33}}]}]}"), "spec.ingress[0].from[0].ipBlock.cidr"),
        (base("{podSelector: {}, ingress: [{from: [{ipBlock: {cidr: 10.0.0.1/8}}]}]}"), "host bits"),
        (base("{podSelector: {}, ingress: [{from: [{ipBlock: {cidr: 10.0.0.0/8, except: [11.0.0.0/16]}}]}]}"), "spec.ingress[0].from[0].ipBlock.except[0]"),
        (base("{podSelector: {}, ingress: [{from: [{ipBlock: {cidr: 10.0.0.0/8}, podSelector: {}}]}]}"), "spec.ingress[0].from[0]"),
        (base("{podSelector: {}, ingress: [{from: [{}]}]}"), "spec.ingress[0].from[0]"),
        (base("{podSelector: {}, egress: [{to: [{serviceAccount: x}]}]}"), "spec.egress[0].to[0].serviceAccount"),
        (base("{podSelector: {}, ingress: [{ports: [{port: http}]}]}"), "named ports"),
        (base("{podSelector: {}, ingress: [{ports: [{port: 70000}]}]}"), "spec.ingress[0].ports[0].port"),
        (base("{podSelector: {}, ingress: [{ports: [{port: 0}]}]}"), "spec.ingress[0].ports[0].port"),
        (base("{podSelector: {}, ingress: [{ports: [{port: 90, endPort: 80}]}]}"), "spec.ingress[0].ports[0].endPort"),
        (base("{podSelector: {}, ingress: [{ports: [{endPort: 80}]}]}"), "needs port"),
        (base("{podSelector: {}, ingress: [{ports: [{protocol: ICMP}]}]}"), "spec.ingress[0].ports[0].protocol"),
        (format!("{}---\n{}", base("{podSelector: {}}"), base("{podSelector: {}}")), "given twice"),
        (format!("{}---\n{}", base("{podSelector: {}}"), base("{podSelector: {}, bad: 1}")), "document 2: spec.bad"),
    ];
    for (text, says) in cases {
        let err = parse_policies(&text, Some("default"))
            .unwrap_err()
            .to_string();
        assert!(err.contains(says), "{text}\n-> {err}\n(wanted {says:?})");
    }
}

#[test]
fn rendering_is_golden_and_does_not_grow_with_sandboxes() {
    let policies = parse_policies(EVERYTHING, None).unwrap();
    let endpoints = vec![
        web("prod", &[("app", "api"), ("tier", "back")], "10.1.0.2"),
        web("prod", &[("app", "api"), ("tier", "front")], "10.1.0.3"),
        web("prod", &[("app", "web")], "10.1.0.4"),
        web("ops", &[("role", "admin")], "10.1.0.5"),
        web("default", &[], "10.1.0.6"),
    ];
    let rules = policy_rules(&policies, &endpoints);
    let mut text = String::new();
    for chain in &rules.chains {
        text.push_str(&format!(":{} - [0:0]\n", chain.name));
    }
    for chain in &rules.chains {
        for rule in &chain.rules {
            text.push_str(rule);
            text.push('\n');
        }
    }
    text.push_str("# ipset restore\n");
    text.push_str(&set_restore_text(&rules.sets));
    check("two-policies.rules", &text);

    // 1000 sandboxes: the same rules, only the sets' members differ.
    let many: Vec<PolicyEndpoint> = (0..1000u32)
        .map(|i| {
            let ip = std::net::Ipv4Addr::from(u32::from(std::net::Ipv4Addr::new(10, 2, 0, 2)) + i);
            web(
                "prod",
                &[
                    ("app", if i % 2 == 0 { "api" } else { "web" }),
                    ("tier", "back"),
                ],
                &ip.to_string(),
            )
        })
        .collect();
    let big = policy_rules(&policies, &many);
    assert_eq!(big.chains, rules.chains);
    let members: usize = big.sets.iter().map(|s| s.members.len()).sum();
    assert!(members > 1000, "{members}");

    // A label change is set members only.
    let mut changed = endpoints.clone();
    changed[2].labels.insert("app".into(), "other".into());
    let after = policy_rules(&policies, &changed);
    assert_eq!(after.chains, rules.chains);
    check(
        "label-change.ipset",
        &set_update_text(&rules.sets, &after.sets),
    );

    // Removing a policy: its sets go (after the rules that use them).
    let fewer = policy_rules(&policies[1..], &endpoints);
    check(
        "policy-removed.ipset",
        &set_destroy_text(&rules.sets, &fewer.sets),
    );
    assert!(policy_rules(&[], &endpoints).is_empty());
}

#[test]
fn allow_everything_and_the_whole_internet() {
    let text = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: open}
spec:
  podSelector: {matchLabels: {app: x}}
  ingress: [{}]
  egress:
    - to: [{ipBlock: {cidr: 0.0.0.0/0, except: [10.0.0.0/8]}}]
    - to: [{ipBlock: {cidr: "2001:db8::/32"}}]
"#;
    let policies = parse_policies(text, None).unwrap();
    let rules = policy_rules(&policies, &[web("default", &[("app", "x")], "10.1.0.9")]);
    let mut out = String::new();
    for chain in &rules.chains {
        for rule in &chain.rules {
            out.push_str(rule);
            out.push('\n');
        }
    }
    out.push_str(&set_restore_text(&rules.sets));
    check("allow-all-and-internet.rules", &out);
}
