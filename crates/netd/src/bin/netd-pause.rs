//! netd-pause NETNS SANDBOX_ID PIDFILE: holds a sandbox's network namespace, like the
//! Kubernetes pause container. Enters NETNS, forks, writes the child's pid to PIDFILE,
//! prints it and exits; the child detaches (own session, stdio on /dev/null) and sleeps
//! until killed. The pid file is written here, not by netd, so that it exists even if netd
//! dies while the pause process starts.

use std::fs::File;
use std::process::ExitCode;

use nix::sys::signal::{signal, SigHandler, Signal};
use nix::unistd::{fork, setsid, ForkResult};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 4 {
        eprintln!("usage: netd-pause NETNS SANDBOX_ID PIDFILE");
        return ExitCode::from(2);
    }
    if let Err(e) = linkd::Netns::open(&args[1]).and_then(|netns| netns.join()) {
        eprintln!("netd-pause: {e}");
        return ExitCode::FAILURE;
    }
    // SAFETY: the process is single-threaded here, so fork is sound.
    match unsafe { fork() } {
        Ok(ForkResult::Parent { child }) => {
            let tmp = format!("{}.tmp", args[3]);
            let written = std::fs::write(&tmp, format!("{child}\n"))
                .and_then(|()| std::fs::rename(&tmp, &args[3]));
            if let Err(e) = written {
                eprintln!("netd-pause: {}: {e}", args[3]);
                let _ = nix::sys::signal::kill(child, nix::sys::signal::Signal::SIGKILL);
                return ExitCode::FAILURE;
            }
            println!("{child}");
            ExitCode::SUCCESS
        }
        Ok(ForkResult::Child) => {
            let _ = setsid();
            let _ = std::env::set_current_dir("/");
            if let Ok(null) = File::options().read(true).write(true).open("/dev/null") {
                let _ = nix::unistd::dup2_stdin(&null);
                let _ = nix::unistd::dup2_stdout(&null);
                let _ = nix::unistd::dup2_stderr(&null);
            }
            for sig in [Signal::SIGHUP, Signal::SIGINT, Signal::SIGPIPE] {
                // SAFETY: installing SIG_IGN runs no handler code.
                let _ = unsafe { signal(sig, SigHandler::SigIgn) };
            }
            loop {
                nix::unistd::pause();
            }
        }
        Err(e) => {
            eprintln!("netd-pause: fork: {e}");
            ExitCode::FAILURE
        }
    }
}
