//! An upstream resolver for the DNS tests: dnsmasq in a test host's "internet"
//! namespace, answering only the records it is given.

use std::process::{Child, Stdio};
use std::time::Duration;

use crate::{run, TestHost};

/// A dnsmasq in the "internet" namespace answering the given `--host-record`s and
/// `--txt-record`s, and nothing else; killed on drop.
#[derive(Debug)]
pub struct Upstream(Child);

impl Upstream {
    pub fn start(host: &TestHost, listen: &str, extra: &[String]) -> Upstream {
        let mut cmd = host.internet_cmd(
            "dnsmasq",
            &[
                "--conf-file=/dev/null",
                "--keep-in-foreground",
                "--no-resolv",
                "--no-hosts",
                "--bind-interfaces",
                &format!("--listen-address={listen}"),
                "--port=53",
                "--pid-file=",
                "--user=root",
                "--group=root",
            ],
        );
        cmd.args(extra).stdout(Stdio::null()).stderr(Stdio::null());
        #[allow(clippy::expect_used)]
        let child = cmd.spawn().expect("start dnsmasq");
        let upstream = Upstream(child);
        let ready = TestHost::eventually(Duration::from_secs(5), || {
            let out = run(host
                .internet_cmd(
                    "dig",
                    &["+time=1", "+tries=1", &format!("@{listen}"), "ready.test"],
                )
                .stdin(Stdio::null()));
            String::from_utf8_lossy(&out.stdout).contains("status:")
        });
        assert!(ready, "dnsmasq on {listen} did not come up");
        upstream
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn record(kind: &str, value: &str) -> String {
    format!("--{kind}-record={value}")
}
