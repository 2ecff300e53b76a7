//! The environment a runtime runs a plugin with: `CNI_COMMAND` and the rest, `CNI_ARGS`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::error::{CniError, Code, Result};

/// The verbs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Add,
    Del,
    Check,
    Version,
    Status,
    Gc,
}

impl Command {
    pub fn parse(text: &str) -> Result<Command> {
        Ok(match text {
            "ADD" => Command::Add,
            "DEL" => Command::Del,
            "CHECK" => Command::Check,
            "VERSION" => Command::Version,
            "STATUS" => Command::Status,
            "GC" => Command::Gc,
            other => {
                return Err(CniError::new(
                    Code::InvalidEnvironment,
                    format!("unknown CNI_COMMAND {other:?} (ADD, DEL, CHECK, VERSION, STATUS, GC)"),
                ))
            }
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Command::Add => "ADD",
            Command::Del => "DEL",
            Command::Check => "CHECK",
            Command::Version => "VERSION",
            Command::Status => "STATUS",
            Command::Gc => "GC",
        }
    }
}

/// What the runtime told the plugin through the environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CniEnv {
    pub command: Command,
    pub container_id: String,
    /// Empty on a DEL for a sandbox that is already gone.
    pub netns: String,
    pub ifname: String,
    /// `CNI_ARGS`, in order.
    pub args: Vec<(String, String)>,
    pub path: Vec<PathBuf>,
}

impl CniEnv {
    /// Reads the environment, requiring what the verb needs.
    pub fn from_vars(get: impl Fn(&str) -> Option<String>) -> Result<CniEnv> {
        let command = Command::parse(&get("CNI_COMMAND").unwrap_or_default())?;
        let required: &[&str] = match command {
            Command::Add | Command::Check => {
                &["CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_PATH"]
            }
            Command::Del => &["CNI_CONTAINERID", "CNI_IFNAME", "CNI_PATH"],
            Command::Status | Command::Gc => &["CNI_PATH"],
            Command::Version => &[],
        };
        let missing: Vec<&str> = required
            .iter()
            .copied()
            .filter(|k| get(k).is_none_or(|v| v.is_empty()))
            .collect();
        if !missing.is_empty() {
            return Err(CniError::new(
                Code::InvalidEnvironment,
                format!(
                    "required environment variables missing: {}",
                    missing.join(", ")
                ),
            ));
        }
        let container_id = get("CNI_CONTAINERID").unwrap_or_default();
        if !container_id.is_empty() && !super::valid_identifier(&container_id) {
            return Err(CniError::new(
                Code::InvalidEnvironment,
                format!(
                    "CNI_CONTAINERID {container_id:?}: not a valid container id (an ASCII letter or digit, then letters, digits, _ . -)"
                ),
            ));
        }
        let ifname = get("CNI_IFNAME").unwrap_or_default();
        if !ifname.is_empty() {
            bridge_driver::names::validate_ifname("CNI_IFNAME", &ifname)
                .map_err(|e| CniError::new(Code::InvalidEnvironment, e.to_string()))?;
        }
        Ok(CniEnv {
            command,
            container_id,
            netns: get("CNI_NETNS").unwrap_or_default(),
            ifname,
            args: parse_args(&get("CNI_ARGS").unwrap_or_default())?,
            path: std::env::split_paths(&get("CNI_PATH").unwrap_or_default()).collect(),
        })
    }

    /// The `CNI_ARGS` keys a plugin understands; any other is an error unless
    /// `IgnoreUnknown` is set, as the reference plugins do.
    pub fn known_args(&self, known: &[&str]) -> Result<BTreeMap<String, String>> {
        let ignore = self.args.iter().any(|(k, v)| {
            k == "IgnoreUnknown" && matches!(v.to_ascii_lowercase().as_str(), "1" | "true")
        });
        let mut out = BTreeMap::new();
        let mut unknown = Vec::new();
        for (key, value) in &self.args {
            if known.contains(&key.as_str()) || key.starts_with("K8S_POD_") {
                out.insert(key.clone(), value.clone());
            } else if key != "IgnoreUnknown" {
                unknown.push(key.as_str());
            }
        }
        if !unknown.is_empty() && !ignore {
            return Err(CniError::new(
                Code::InvalidEnvironment,
                format!("CNI_ARGS: unknown args {unknown:?} (set IgnoreUnknown=1 to allow)"),
            ));
        }
        Ok(out)
    }
}

/// `K=V;K2=V2`.
pub fn parse_args(text: &str) -> Result<Vec<(String, String)>> {
    text.split(';')
        .filter(|pair| !pair.is_empty())
        .map(|pair| match pair.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
            _ => Err(CniError::new(
                Code::InvalidEnvironment,
                format!("CNI_ARGS: {pair:?} is not KEY=VALUE"),
            )),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Result<CniEnv> {
        let map: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        CniEnv::from_vars(|k| map.get(k).cloned())
    }

    #[test]
    fn required_variables_depend_on_the_verb() {
        let err = env(&[("CNI_COMMAND", "ADD"), ("CNI_CONTAINERID", "c1")]).expect_err("missing");
        assert_eq!(err.code, 4);
        assert!(err.msg.contains("CNI_NETNS"), "{}", err.msg);
        let del = env(&[
            ("CNI_COMMAND", "DEL"),
            ("CNI_CONTAINERID", "c1"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_PATH", "/opt/cni/bin"),
            ("CNI_NETNS", ""),
        ])
        .expect("DEL without a namespace");
        assert!(del.netns.is_empty());
        assert!(env(&[("CNI_COMMAND", "VERSION")]).is_ok());
        assert_eq!(env(&[("CNI_COMMAND", "FROB")]).expect_err("verb").code, 4);
    }

    #[test]
    fn args_and_ignore_unknown() {
        let e = env(&[
            ("CNI_COMMAND", "VERSION"),
            (
                "CNI_ARGS",
                "IgnoreUnknown=1;K8S_POD_NAME=web;IP=10.1.0.9;FOO=bar",
            ),
        ])
        .expect("env");
        let known = e.known_args(&["IP"]).expect("ignored");
        assert_eq!(known.get("IP").map(String::as_str), Some("10.1.0.9"));
        assert_eq!(known.get("K8S_POD_NAME").map(String::as_str), Some("web"));
        let strict = env(&[("CNI_COMMAND", "VERSION"), ("CNI_ARGS", "FOO=bar")]).expect("env");
        assert!(strict.known_args(&["IP"]).is_err());
        assert!(parse_args("novalue").is_err());
    }
}
