//! What a plugin changes, behind traits so that ADD and DEL run against fakes in unit
//! tests: the host's kernel, the container's namespace, the firewall (linkd's traits), and
//! the delegated IPAM plugin. [`CniHost::real`] opens the kernel and the firewall only when
//! a verb first needs them.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use linkd::{Firewall, Iptables, Kernel, MountedNamespaces, Namespaces, Netlink, TaggedRules};

use crate::delegate::{self, Running};
use crate::spec::{CniEnv, CniError, CniResult, Command, Result};

/// Runs the plugin a configuration delegates to (its IPAM).
pub trait Delegate: std::fmt::Debug {
    /// Fails when the plugin cannot be found (checked before anything is made).
    fn find(&mut self, env: &CniEnv, plugin_type: &str) -> Result<()>;
    /// Starts `plugin_type` for `command` with `config` on stdin.
    fn start(
        &mut self,
        env: &CniEnv,
        plugin_type: &str,
        command: Command,
        config: &[u8],
    ) -> Result<Running>;
    /// Runs it to the end; ADD returns its result.
    fn run(
        &mut self,
        env: &CniEnv,
        plugin_type: &str,
        command: Command,
        config: &[u8],
    ) -> Result<Option<CniResult>> {
        self.start(env, plugin_type, command, config)?.finish()
    }
}

/// Delegation as the spec has it: a binary found in `CNI_PATH`.
#[derive(Debug, Default, Clone, Copy)]
pub struct PathDelegate;

impl Delegate for PathDelegate {
    fn find(&mut self, env: &CniEnv, plugin_type: &str) -> Result<()> {
        delegate::find(env, plugin_type).map(|_| ())
    }

    fn start(
        &mut self,
        env: &CniEnv,
        plugin_type: &str,
        command: Command,
        config: &[u8],
    ) -> Result<Running> {
        delegate::start(env, plugin_type, command, config)
    }
}

/// A fake IPAM plugin: answers ADD with `result`, records every call as `VERB type`.
#[derive(Debug, Clone, Default)]
pub struct RecordingDelegate {
    pub result: Option<CniResult>,
    calls: Arc<Mutex<Vec<String>>>,
}

impl RecordingDelegate {
    pub fn answering(result: CniResult) -> Self {
        RecordingDelegate {
            result: Some(result),
            calls: Arc::default(),
        }
    }

    pub fn calls(&self) -> MutexGuard<'_, Vec<String>> {
        self.calls
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Delegate for RecordingDelegate {
    fn find(&mut self, _env: &CniEnv, plugin_type: &str) -> Result<()> {
        match &self.result {
            Some(_) => Ok(()),
            None => Err(CniError::config(format!(
                "ipam.type: no plugin {plugin_type:?} in CNI_PATH"
            ))),
        }
    }

    fn start(
        &mut self,
        _env: &CniEnv,
        plugin_type: &str,
        command: Command,
        _config: &[u8],
    ) -> Result<Running> {
        self.calls()
            .push(format!("{} {plugin_type}", command.as_str()));
        let answer = match command {
            Command::Add => self.result.clone(),
            _ => None,
        };
        Ok(Running::done(Ok(answer)))
    }
}

/// A [`CniHost`] borrowed part by part.
#[derive(Debug)]
pub struct Parts<'a> {
    pub kernel: &'a mut dyn Kernel,
    pub namespaces: &'a mut dyn Namespaces,
    pub firewall: &'a mut dyn Firewall,
    pub delegate: &'a mut dyn Delegate,
    pub run_dir: &'a Path,
}

/// The host a plugin works on.
#[derive(Debug)]
pub struct CniHost {
    kernel: Option<Box<dyn Kernel>>,
    pub namespaces: Box<dyn Namespaces>,
    firewall: Option<Box<dyn Firewall>>,
    pub delegate: Box<dyn Delegate>,
    /// The plugins' lock and remembered handles (see [`crate::run_dir`]).
    pub run_dir: PathBuf,
}

impl CniHost {
    /// This host: netlink in the plugin's namespace, namespaces by path, iptables, IPAM
    /// binaries in `CNI_PATH`.
    pub fn real() -> Self {
        CniHost {
            kernel: None,
            namespaces: Box::new(MountedNamespaces),
            firewall: None,
            delegate: Box::new(PathDelegate),
            run_dir: crate::run_dir(),
        }
    }

    /// A host of the given parts (fakes, in unit tests).
    pub fn of(
        kernel: Box<dyn Kernel>,
        namespaces: Box<dyn Namespaces>,
        firewall: Box<dyn Firewall>,
        delegate: Box<dyn Delegate>,
        run_dir: &Path,
    ) -> Self {
        CniHost {
            kernel: Some(kernel),
            namespaces,
            firewall: Some(firewall),
            delegate,
            run_dir: run_dir.to_path_buf(),
        }
    }

    /// The host's kernel, opened on first use.
    pub fn kernel(&mut self) -> Result<&mut dyn Kernel> {
        let kernel = match self.kernel.take() {
            Some(kernel) => kernel,
            None => Box::new(Netlink::open()?),
        };
        Ok(&mut **self.kernel.insert(kernel))
    }

    /// Every part at once (the kernel and firewall opened), for a verb that uses several.
    pub fn parts(&mut self) -> Result<Parts<'_>> {
        self.kernel()?;
        self.firewall();
        let (Some(kernel), Some(firewall)) = (self.kernel.as_mut(), self.firewall.as_mut()) else {
            return Err(CniError::io("the host's kernel or firewall is not open"));
        };
        Ok(Parts {
            kernel: &mut **kernel,
            namespaces: &mut *self.namespaces,
            firewall: &mut **firewall,
            delegate: &mut *self.delegate,
            run_dir: &self.run_dir,
        })
    }

    /// The firewall, opened on first use.
    pub fn firewall(&mut self) -> &mut dyn Firewall {
        &mut **self
            .firewall
            .get_or_insert_with(|| Box::new(TaggedRules::new(Iptables::default())))
    }

    /// Lets go of the firewall without waiting for the grace period of rules it deleted
    /// (see [`linkd::Firewall::release`]; single-threaded processes only).
    pub fn release_firewall(&mut self) {
        if let Some(firewall) = self.firewall.take() {
            firewall.release();
        }
    }
}
