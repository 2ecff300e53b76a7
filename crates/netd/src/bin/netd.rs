//! netd: the container network daemon.

use std::io::IsTerminal;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use netd::api::server;
use netd::config::{Args, Config};
use netd::engine::{EngineConfig, EngineHandle};
use netd::state::Paths;

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("NETD_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<()> {
    let args = Args::parse();
    let config = Config::from_args(&args)?;
    let exe = std::env::current_exe().context("cannot find netd's own executable")?;
    let pause_binary = exe.with_file_name("netd-pause");
    if !pause_binary.exists() {
        anyhow::bail!(
            "{} is missing (it is installed next to netd)",
            pause_binary.display()
        );
    }
    let engine_config = EngineConfig {
        paths: Paths {
            root: config.root.clone(),
            run_dir: config.run_dir.clone(),
            pause_binary,
        },
        default_bridge: config.default_bridge.clone(),
        default_subnet: config.default_subnet,
        default_network: config.default_network,
        firewall_check: config.firewall_check,
        resolv_conf: config.resolv_conf.clone(),
        default_network_options: config.default_network_options.clone(),
    };
    let (engine, repairs) = EngineHandle::spawn(engine_config)?;
    for repair in &repairs {
        tracing::info!("start-up repair: {repair}");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let cluster = match &config.cluster {
            Some(settings) => {
                let (ip, name) = (settings.node_ip, settings.node_name.clone());
                let node = engine.call(move |e| e.cluster_node(ip, &name)).await?;
                tracing::info!(
                    "cluster node {} at {} (underlay {}), store {}",
                    node.node_name,
                    node.node_ip,
                    node.underlay,
                    settings.endpoints.join(",")
                );
                Some(netd::cluster::spawn(settings.clone(), node, engine.clone()))
            }
            None => None,
        };
        let listener = server::bind(&config.socket)
            .with_context(|| format!("cannot listen on {}", config.socket.display()))?;
        if let Some(path) = &config.docker_socket {
            let docker = server::bind(path)
                .with_context(|| format!("--docker-socket: cannot listen on {}", path.display()))?;
            tracing::info!("Docker network API on {}", path.display());
            let router = netd::api::docker::router(engine.clone());
            tokio::spawn(async move {
                if let Err(e) = axum::serve(docker, router).await {
                    tracing::error!("Docker API server failed: {e}");
                }
            });
        }
        tracing::info!("netd listening on {}", config.socket.display());
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .context("cannot handle SIGTERM")?;
        let shutdown = async move {
            tokio::select! {
                _ = term.recv() => {},
                _ = tokio::signal::ctrl_c() => {},
            }
        };
        axum::serve(
            listener,
            server::router(server::Services { engine, cluster }),
        )
        .with_graceful_shutdown(shutdown)
        .await
        .context("API server failed")?;
        let _ = std::fs::remove_file(&config.socket);
        if let Some(path) = &config.docker_socket {
            let _ = std::fs::remove_file(path);
        }
        tracing::info!("netd stopped; networks and sandboxes keep running");
        Ok(())
    })
}
