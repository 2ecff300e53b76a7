//! Records the git commit the binaries are built from, for `--version` (`unknown` when
//! built outside a checkout, e.g. from a source tarball).

use std::process::Command;

fn main() {
    let commit = std::env::var("NETD_GIT_COMMIT").ok().or_else(|| {
        Command::new("git")
            .args(["rev-parse", "--short=12", "HEAD"])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    });
    let commit = commit
        .filter(|c| !c.is_empty())
        .unwrap_or_else(|| "unknown".to_string());
    println!("cargo:rustc-env=NETD_GIT_COMMIT={commit}");
    println!("cargo:rerun-if-env-changed=NETD_GIT_COMMIT");
    // The commit changes with HEAD and with the branch it points to.
    if let Ok(out) = Command::new("git")
        .args(["rev-parse", "--git-dir"])
        .output()
    {
        let dir = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if !dir.is_empty() {
            println!("cargo:rerun-if-changed={dir}/HEAD");
            println!("cargo:rerun-if-changed={dir}/refs/heads");
        }
    }
}
