//! Recovery: the data plane outlives netd, restarts change nothing, reconciliation repairs
//! external damage, and a crash in the middle of operations leaks nothing.

// Tests fail by panicking with a reason.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::time::Duration;

use netd_tests::{TestHost, INTERNET_IP};

fn ps_ids(host: &TestHost) -> BTreeSet<String> {
    let text = host.netctl_ok(&["ps", "-q"]);
    text.lines().map(str::to_string).collect()
}

#[test]
fn data_plane_outlives_netd_and_restart_duplicates_nothing() {
    let mut host = TestHost::new();
    host.add_internet();
    host.netctl_ok(&["network", "create", "--subnet", "10.1.0.0/24", "mynet"]);
    host.netctl_ok(&["run", "-d", "--name", "a", "--network", "mynet"]);
    host.netctl_ok(&["run", "-d", "--name", "b", "--network", "mynet"]);
    host.netctl_ok(&[
        "run",
        "-d",
        "--name",
        "job",
        "--network",
        "mynet",
        "--",
        "sleep",
        "300",
    ]);
    let rules = host.iptables();
    let links = host.links();
    let b = host.ip_of("b", "mynet");

    host.stop_netd();
    // Everything keeps working while netd is down.
    let pauses = host.pause_pids();
    assert_eq!(pauses.len(), 3);
    for pid in &pauses {
        assert!(
            std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "pause {pid} survives netd"
        );
    }
    let netns_dir = host.run_dir().join("netns");
    assert_eq!(std::fs::read_dir(&netns_dir).expect("netns dir").count(), 3);
    let ping = |from: &str, to: &str| {
        let path = host.run_dir().join("netns").join(from);
        host.cmd(
            "nsenter",
            &[
                &format!("--net={}", path.display()),
                "ping",
                "-c1",
                "-W1",
                to,
            ],
        )
        .output()
        .expect("ping")
        .status
        .success()
    };
    let ids: Vec<String> = std::fs::read_dir(&netns_dir)
        .expect("dir")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        ids.iter().all(|id| ping(id, INTERNET_IP)),
        "egress works with netd stopped"
    );

    host.start_netd();
    assert_eq!(
        host.iptables(),
        rules,
        "a restart neither duplicates nor loses rules"
    );
    assert_eq!(host.links(), links);
    assert_eq!(
        host.netctl_ok(&["system", "reconcile"]),
        "nothing to repair"
    );
    assert!(host.can_ping("a", &b));
    assert!(host.inspect("job")["State"]["Running"]
        .as_bool()
        .expect("bool"));
    let err = host.netctl_err(&["rm", "job"]);
    assert!(
        err.contains("running processes"),
        "detached processes are still known: {err}"
    );
}

#[test]
fn reconcile_repairs_an_external_firewall_flush() {
    // Without the periodic check, which would race this test to the repair.
    let mut host = TestHost::with_args(&["--firewall-check-interval", "0"]);
    host.add_internet();
    host.netctl_ok(&["network", "create", "--subnet", "10.2.0.0/24", "n"]);
    host.netctl_ok(&["run", "-d", "--name", "a", "--network", "n"]);
    let rules = host.iptables();
    assert!(host.can_ping("a", INTERNET_IP));
    host.sh_ok("iptables", &["-t", "nat", "-F"]);
    host.sh_ok("iptables", &["-F", "FORWARD"]);
    assert!(!host.can_ping("a", INTERNET_IP), "NAT gone: no answers");
    let repairs = host.netctl_ok(&["system", "reconcile"]);
    assert!(repairs.contains("NETD-POSTROUTING"), "{repairs}");
    assert!(repairs.contains("FORWARD"), "{repairs}");
    assert_eq!(host.iptables(), rules);
    assert!(host.can_ping("a", INTERNET_IP));
    assert_eq!(
        host.netctl_ok(&["system", "reconcile"]),
        "nothing to repair"
    );
}

#[test]
fn the_periodic_check_runs_while_clients_keep_netd_busy() {
    let mut host = TestHost::with_args(&["--firewall-check-interval", "1"]);
    host.add_internet();
    host.netctl_ok(&["network", "create", "--subnet", "10.2.1.0/24", "n"]);
    host.netctl_ok(&["run", "-d", "--name", "a", "--network", "n"]);
    let rules = host.iptables();
    let stop = std::sync::atomic::AtomicBool::new(false);
    let requests = std::sync::atomic::AtomicU32::new(0);
    let restored = std::thread::scope(|s| {
        // A client that never lets the engine wait a whole interval for its next job.
        s.spawn(|| {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                host.netctl_ok(&["network", "ls"]);
                requests.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        });
        std::thread::sleep(Duration::from_millis(300));
        host.sh_ok("iptables", &["-t", "nat", "-F"]);
        let restored = TestHost::eventually(Duration::from_secs(8), || host.iptables() == rules);
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        restored
    });
    let requests = requests.load(std::sync::atomic::Ordering::Relaxed);
    assert!(requests > 20, "the client made only {requests} requests");
    assert!(
        restored,
        "the check did not run under load ({requests} requests)"
    );
    assert!(host.can_ping("a", INTERNET_IP));
}

#[test]
fn reconcile_restarts_a_dead_pause_and_rebuilds_a_deleted_bridge() {
    let host = TestHost::new();
    host.netctl_ok(&[
        "network",
        "create",
        "--subnet",
        "10.3.0.0/24",
        "--opt",
        "bridge-name=brx",
        "n",
    ]);
    host.netctl_ok(&["run", "-d", "--name", "a", "--network", "n"]);
    host.netctl_ok(&["run", "-d", "--name", "b", "--network", "n"]);
    let pid = host.inspect("a")["State"]["Pid"].as_i64().expect("pid");
    // SAFETY: kill of the pause pid netd reported for a sandbox of this test host.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    assert!(TestHost::eventually(Duration::from_secs(5), || {
        host.inspect("a")["State"]["Running"] == false
    }));
    host.sh_ok("ip", &["link", "del", "brx"]);
    assert!(!host.can_ping("a", &host.ip_of("b", "n")));

    let repairs = host.netctl_ok(&["system", "reconcile"]);
    assert!(repairs.contains("created bridge brx"), "{repairs}");
    assert!(repairs.contains("restarted its pause process"), "{repairs}");
    assert!(repairs.contains("recreated interface eth0"), "{repairs}");
    let new_pid = host.inspect("a")["State"]["Pid"].as_i64().expect("pid");
    assert!(new_pid > 0 && new_pid != pid);
    assert!(host.can_ping("a", &host.ip_of("b", "n")));
    assert_eq!(
        host.netctl_ok(&["system", "reconcile"]),
        "nothing to repair"
    );
}

#[test]
fn a_lost_namespace_is_rebuilt_at_start() {
    let mut host = TestHost::new();
    host.netctl_ok(&["network", "create", "--subnet", "10.4.0.0/24", "n"]);
    let id = host.netctl_ok(&["run", "-d", "--name", "a", "--network", "n"]);
    host.netctl_ok(&["run", "-d", "--name", "b", "--network", "n"]);
    host.stop_netd();
    // As after a reboot: the pause process and the namespace mount are gone.
    let pid = std::fs::read_to_string(host.run_dir().join("sandboxes").join(&id).join("pause.pid"))
        .expect("pid file");
    // SAFETY: kill of a pause pid from this test host's run directory.
    unsafe { libc::kill(pid.trim().parse().expect("pid"), libc::SIGKILL) };
    let mount = host.run_dir().join("netns").join(&id);
    let c = std::ffi::CString::new(mount.to_string_lossy().as_bytes()).expect("path");
    // SAFETY: umount2 on a path under this test host's run directory.
    assert_eq!(unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) }, 0);
    host.start_netd();
    assert!(
        host.netd_log().contains("recreated its network namespace"),
        "{}",
        host.netd_log()
    );
    assert!(host.can_ping("a", &host.ip_of("b", "n")));
    assert_eq!(host.ip_of("a", "n"), "10.4.0.2", "same address as recorded");
}

#[test]
fn kill_9_in_the_middle_of_operations_leaks_nothing() {
    let mut host = TestHost::new();
    host.netctl_ok(&["network", "create", "--subnet", "10.5.0.0/24", "n"]);
    for round in 0..4u64 {
        // A stream of operations from a client, and netd killed while it runs.
        let script = format!(
            "for i in $(seq 1 40); do {bin} --socket {sock} run -d --network n >/dev/null 2>&1; \
             {bin} --socket {sock} network create crash{round}x$i >/dev/null 2>&1; done; \
             for id in $({bin} --socket {sock} ps -q 2>/dev/null); do {bin} --socket {sock} rm -f $id >/dev/null 2>&1; done",
            bin = host.bin.join("netctl").display(),
            sock = host.socket().display(),
        );
        let mut client = host.cmd("sh", &["-c", &script]).spawn().expect("client");
        // The kill must come while there is work in hand: some sandboxes already made.
        let before = ps_ids(&host).len();
        assert!(
            TestHost::eventually(Duration::from_secs(10), || ps_ids(&host).len() > before),
            "round {round}: the client made no sandbox"
        );
        std::thread::sleep(Duration::from_millis(round * 60));
        host.kill_netd();
        let _ = client.wait();
        host.start_netd();

        // Whatever netd now lists is whole, and nothing else of netd's is left.
        let ids = ps_ids(&host);
        assert!(
            !ids.is_empty(),
            "round {round}: the sandboxes made before the kill are gone"
        );
        let veths: BTreeSet<String> = host.sandbox_veths().into_iter().collect();
        let settled = TestHost::eventually(Duration::from_secs(5), || {
            host.sandbox_veths().len() == ids.len()
                && host.netns_mounts().len() == ids.len()
                && host.live_pauses().len() == ids.len()
        });
        assert!(
            settled,
            "round {round}: {} sandboxes but veths {:?}, mounts {:?}, pause processes {:?}",
            ids.len(),
            veths,
            host.netns_mounts(),
            host.live_pauses()
        );
        for id in &ids {
            let inspect = host.inspect(id);
            assert_eq!(inspect["State"]["Running"], true, "round {round}: {id}");
            let ip = inspect["NetworkSettings"]["Networks"]["n"]["IPAddress"]
                .as_str()
                .expect("ip")
                .to_string();
            assert!(
                host.cmd("ping", &["-c1", "-W1", &ip])
                    .output()
                    .expect("ping")
                    .status
                    .success(),
                "{ip}"
            );
        }
        let nets: serde_json::Value =
            serde_json::from_str(&host.netctl_ok(&["network", "inspect", "n"])).expect("json");
        assert_eq!(
            nets[0]["Containers"].as_object().map(|c| c.len()),
            Some(ids.len())
        );
        let bridges = host
            .sh_ok("ip", &["-o", "link", "show", "type", "bridge"])
            .lines()
            .count();
        let networks = host.netctl_ok(&["network", "ls", "-q"]).lines().count();
        assert_eq!(bridges, networks, "round {round}: one bridge per network");
        let filter = host.sh_ok("iptables-save", &["-t", "filter"]);
        let chains = filter
            .lines()
            .filter(|l| l.starts_with(":NETD-FWD-"))
            .count();
        assert_eq!(chains, networks, "round {round}: one chain per network");
        assert_eq!(
            host.netctl_ok(&["system", "reconcile"]),
            "nothing to repair",
            "round {round}"
        );
        // Clean up for the next round.
        for id in ids {
            host.netctl_ok(&["rm", "-f", &id]);
        }
        for name in host
            .netctl_ok(&["network", "ls", "--format", "{{.Name}}"])
            .lines()
        {
            if name.starts_with("crash") {
                host.netctl_ok(&["network", "rm", name]);
            }
        }
    }
}
