//! The CNI protocol (spec 0.3.0 to 1.1.0): environment, configuration envelope, results,
//! errors, and the skeleton every plugin binary runs.

mod env;
mod error;
pub mod gojson;
mod result;
mod version;

use std::io::Read;

use serde::de::DeserializeOwned;
use serde::Deserialize;

use gojson::Node;

pub use env::{parse_args, CniEnv, Command};
pub use error::{CniError, Code, Context, Result};
pub use result::{go_ip, CniResult, Dns, DnsConf, Interface, IpConfig, RouteEntry};
pub use version::{Version, SUPPORTED};

/// The keys every plugin configuration has, whatever the plugin. Each plugin decodes its
/// own keys from the same document with [`NetConf::plugin`], as the reference plugins each
/// decode the configuration into their own Go struct.
#[derive(Debug, Clone)]
pub struct NetConf {
    pub version: Version,
    pub name: String,
    pub plugin_type: String,
    pub prev_result: Option<CniResult>,
    /// The configuration exactly as the runtime sent it: what delegates get.
    pub bytes: Vec<u8>,
    doc: Node,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Envelope {
    #[serde(default)]
    cni_version: String,
    #[serde(default)]
    name: String,
    #[serde(rename = "type", default)]
    plugin_type: String,
    #[serde(default)]
    prev_result: Option<Node>,
}

impl NetConf {
    pub fn parse(bytes: &[u8]) -> Result<NetConf> {
        let doc = Node::parse(bytes)
            .map_err(|e| CniError::new(Code::Decode, format!("configuration is not JSON: {e}")))?;
        if !matches!(doc, Node::Object(_)) {
            return Err(CniError::new(
                Code::Decode,
                "configuration is not a JSON object",
            ));
        }
        let envelope: Envelope = doc
            .decode()
            .map_err(|e| CniError::new(Code::Decode, format!("configuration: {e}")))?;
        if envelope.cni_version.is_empty() {
            return Err(CniError::new(
                Code::Decode,
                "configuration: missing field `cniVersion`",
            ));
        }
        let version = Version::parse(&envelope.cni_version)?;
        let prev_result = envelope
            .prev_result
            .as_ref()
            .map(CniResult::from_node)
            .transpose()?;
        Ok(NetConf {
            version,
            name: envelope.name,
            plugin_type: envelope.plugin_type,
            prev_result,
            bytes: bytes.to_vec(),
            doc,
        })
    }

    /// A plugin's own keys, decoded from the whole configuration with Go's rules (see
    /// [`gojson`]).
    pub fn plugin<T: DeserializeOwned>(&self) -> Result<T> {
        self.doc
            .decode()
            .map_err(|e| CniError::config(format!("{} configuration: {e}", self.plugin_type)))
    }

    /// The configuration as parsed, for decoders that need more than [`NetConf::plugin`].
    pub fn document(&self) -> &Node {
        &self.doc
    }

    /// Checks `name` as the spec requires, for the verbs that act on a network.
    pub fn require_valid_name(&self) -> Result<()> {
        validate_name(&self.name)
    }
}

/// The spec's rule for network names: an alphanumeric, then alphanumerics, `_`, `.`, `-`.
/// The name ends up in file paths and rule comments, so nothing else may pass.
pub fn validate_name(name: &str) -> Result<()> {
    if name.is_empty() {
        return Err(CniError::config(
            "name: missing (the network name is required)",
        ));
    }
    if !valid_identifier(name) {
        return Err(CniError::config(format!(
            "name: {name:?} is not a valid network name (an ASCII letter or digit, then letters, digits, _ . -)"
        )));
    }
    Ok(())
}

/// Alphanumeric first, then alphanumerics, `_`, `.`, `-` (names and container ids).
pub(crate) fn valid_identifier(text: &str) -> bool {
    text.bytes()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric())
        && text
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
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
    if let Err(e) = conf.require_valid_name() {
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
    match Node::parse(stdin).ok()?.get("cniVersion")? {
        Node::String(version) => Some(version.clone()),
        _ => None,
    }
}

fn version_answer(stdin: &[u8]) -> String {
    let asked = requested_version(stdin).unwrap_or_else(|| Version::LATEST.as_str().into());
    serde_json::json!({
        "cniVersion": asked,
        "supportedVersions": SUPPORTED.map(Version::as_str),
    })
    .to_string()
}
