//! The spec versions the plugins speak, and what each allows.

use std::fmt;

use super::error::{CniError, Code, Result};

/// A CNI spec version netd's plugins support.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Version {
    V0_3_0,
    V0_3_1,
    V0_4_0,
    V1_0_0,
    V1_1_0,
}

/// All of them, oldest first (VERSION lists them).
pub const SUPPORTED: [Version; 5] = [
    Version::V0_3_0,
    Version::V0_3_1,
    Version::V0_4_0,
    Version::V1_0_0,
    Version::V1_1_0,
];

impl Version {
    pub const LATEST: Version = Version::V1_1_0;

    pub fn as_str(self) -> &'static str {
        match self {
            Version::V0_3_0 => "0.3.0",
            Version::V0_3_1 => "0.3.1",
            Version::V0_4_0 => "0.4.0",
            Version::V1_0_0 => "1.0.0",
            Version::V1_1_0 => "1.1.0",
        }
    }

    pub fn parse(text: &str) -> Result<Version> {
        SUPPORTED
            .into_iter()
            .find(|v| v.as_str() == text)
            .ok_or_else(|| {
                CniError::new(
                    Code::IncompatibleVersion,
                    format!(
                        "incompatible CNI versions: config is {text:?}, plugin supports {}",
                        SUPPORTED.map(Version::as_str).join(", ")
                    ),
                )
            })
    }

    /// Results before 1.0.0 tag each address with its IP version.
    pub fn ips_have_version(self) -> bool {
        self < Version::V1_0_0
    }

    /// CHECK came with 0.4.0; GC and STATUS with 1.1.0.
    pub fn allows(self, command: super::Command) -> bool {
        use super::Command;
        match command {
            Command::Check => self >= Version::V0_4_0,
            Command::Gc | Command::Status => self >= Version::V1_1_0,
            Command::Add | Command::Del | Command::Version => true,
        }
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
