//! The CNI protocol (spec 0.3.0 to 1.1.0): environment, configuration envelope, results,
//! errors, and the skeleton every plugin binary runs.

mod env;
mod error;
mod result;
mod version;

use std::io::Read;

use serde::Deserialize;
use serde_json::{Map, Value};

pub use env::{parse_args, CniEnv, Command};
pub use error::{CniError, Code, Result};
pub use result::{CniResult, Dns, Interface, IpConfig, RouteEntry};
pub use version::{Version, SUPPORTED};

/// The keys every plugin configuration has, whatever the plugin; the rest stays in `raw`
/// (passed through untouched, and to delegates).
#[derive(Debug, Clone)]
pub struct NetConf {
    pub version: Version,
    pub name: String,
    pub plugin_type: String,
    pub prev_result: Option<CniResult>,
    /// The whole configuration as given.
    pub raw: Map<String, Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Envelope {
    cni_version: String,
    #[serde(default)]
    name: String,
    #[serde(rename = "type", default)]
    plugin_type: String,
    #[serde(default)]
    prev_result: Option<Value>,
}

impl NetConf {
    pub fn parse(bytes: &[u8]) -> Result<NetConf> {
        let raw: Map<String, Value> = serde_json::from_slice(bytes).map_err(|e| {
            CniError::new(
                Code::Decode,
                format!("configuration is not a JSON object: {e}"),
            )
        })?;
        let envelope: Envelope = serde_json::from_value(Value::Object(raw.clone()))
            .map_err(|e| CniError::new(Code::Decode, format!("configuration: {e}")))?;
        let version = Version::parse(&envelope.cni_version)?;
        let prev_result = match &envelope.prev_result {
            Some(Value::Null) | None => None,
            Some(value) => Some(CniResult::from_value(value)?),
        };
        Ok(NetConf {
            version,
            name: envelope.name,
            plugin_type: envelope.plugin_type,
            prev_result,
            raw,
        })
    }

    /// A plugin's own keys, read from the whole configuration.
    pub fn plugin<T: for<'de> Deserialize<'de>>(&self) -> Result<T> {
        serde_json::from_value(Value::Object(self.raw.clone()))
            .map_err(|e| CniError::config(format!("{} configuration: {e}", self.plugin_type)))
    }

    /// `runtimeConfig.<key>`, if the runtime passed it.
    pub fn runtime_config(&self, key: &str) -> Option<&Value> {
        self.raw.get("runtimeConfig").and_then(|r| r.get(key))
    }

    /// `args.cni.<key>` (CONVENTIONS.md).
    pub fn args_cni(&self, key: &str) -> Option<&Value> {
        self.raw
            .get("args")
            .and_then(|a| a.get("cni"))
            .and_then(|c| c.get(key))
    }
}

/// What a verb produced: a result to print, or nothing.
pub type Output = Option<String>;

/// A plugin: one function per verb; VERSION is answered by the skeleton.
pub trait Plugin {
    fn add(&self, env: &CniEnv, conf: &NetConf) -> Result<CniResult>;
    fn del(&self, env: &CniEnv, conf: &NetConf) -> Result<()>;
    fn check(&self, env: &CniEnv, conf: &NetConf) -> Result<()>;
    fn status(&self, env: &CniEnv, conf: &NetConf) -> Result<()>;
    fn gc(&self, env: &CniEnv, conf: &NetConf) -> Result<()>;
}

/// Runs a plugin the way a runtime expects: environment and stdin in, a result or the
/// spec's error JSON on stdout, exit status 0 or 1.
pub fn run_plugin(plugin: &dyn Plugin) -> i32 {
    let mut stdin = Vec::new();
    let read = std::io::stdin().read_to_end(&mut stdin);
    let (version, outcome) = match read {
        Ok(_) => dispatch(plugin, |k| std::env::var(k).ok(), &stdin),
        Err(e) => (
            Version::LATEST.as_str().to_string(),
            Err(CniError::io(format!("cannot read the configuration: {e}"))),
        ),
    };
    match outcome {
        Ok(Some(text)) => {
            println!("{text}");
            0
        }
        Ok(None) => 0,
        Err(e) => {
            println!("{}", e.to_json(&version));
            1
        }
    }
}

/// The skeleton's logic, without the process around it: returns the version to report
/// errors in, and what to print.
pub fn dispatch(
    plugin: &dyn Plugin,
    get: impl Fn(&str) -> Option<String>,
    stdin: &[u8],
) -> (String, Result<Output>) {
    let fallback = Version::LATEST.as_str().to_string();
    let env = match CniEnv::from_vars(get) {
        Ok(env) => env,
        Err(e) => return (fallback, Err(e)),
    };
    if env.command == Command::Version {
        return (fallback, Ok(Some(version_answer(stdin))));
    }
    let conf = match NetConf::parse(stdin) {
        Ok(conf) => conf,
        Err(e) => return (requested_version(stdin).unwrap_or(fallback), Err(e)),
    };
    let version = conf.version.as_str().to_string();
    if !conf.version.allows(env.command) {
        let e = CniError::new(
            Code::IncompatibleVersion,
            format!(
                "configuration version {} does not allow {}",
                conf.version,
                env.command.as_str()
            ),
        );
        return (version, Err(e));
    }
    let outcome = match env.command {
        Command::Add => plugin
            .add(&env, &conf)
            .map(|r| Some(r.to_json(conf.version))),
        Command::Del => plugin.del(&env, &conf).map(|()| None),
        Command::Check => plugin.check(&env, &conf).map(|()| None),
        Command::Status => plugin.status(&env, &conf).map(|()| None),
        Command::Gc => plugin.gc(&env, &conf).map(|()| None),
        Command::Version => Ok(None),
    };
    (version, outcome)
}

fn requested_version(stdin: &[u8]) -> Option<String> {
    let value: Value = serde_json::from_slice(stdin).ok()?;
    Some(value.get("cniVersion")?.as_str()?.to_string())
}

fn version_answer(stdin: &[u8]) -> String {
    let asked = requested_version(stdin).unwrap_or_else(|| Version::LATEST.as_str().into());
    serde_json::json!({
        "cniVersion": asked,
        "supportedVersions": SUPPORTED.map(Version::as_str),
    })
    .to_string()
}
