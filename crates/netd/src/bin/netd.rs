//! netd: the container network daemon.

use std::io::IsTerminal;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use netd::api::listen;
use netd::api::server;
use netd::config::{Args, Config, LogFormat};
use netd::engine::{EngineConfig, EngineHandle};
use netd::state::Paths;

/// Exit code of a usage error (a bad flag or setting), as clap's own.
const USAGE: u8 = 2;

fn main() -> ExitCode {
    let args = Args::parse();
    let config = match Config::from_args(&args) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(USAGE);
        }
    };
    // Bound first: an address in use is the operator's mistake, found before anything
    // starts or any socket is made.
    let metrics = match config
        .metrics_addr
        .map(std::net::TcpListener::bind)
        .transpose()
    {
        Ok(listener) => listener,
        Err(e) => {
            let addr = config
                .metrics_addr
                .map(|a| a.to_string())
                .unwrap_or_default();
            eprintln!("error: --metrics-addr {addr}: {e}");
            return ExitCode::from(USAGE);
        }
    };
    let format = config.log_format;
    init_log(format);
    match run(config, metrics) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            match format {
                LogFormat::Json => tracing::error!("{e:#}"),
                LogFormat::Text => eprintln!("error: {e:#}"),
            }
            ExitCode::FAILURE
        }
    }
}

fn init_log(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("NETD_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter);
    match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .init(),
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
    }
}

fn run(config: Config, metrics: Option<std::net::TcpListener>) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    netd::metrics::init(config.cluster.is_some());
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
    // Before any thread starts: the socket systemd may have passed.
    let activated = listen::activated().context("the socket systemd passed")?;
    let (engine, repairs) = EngineHandle::spawn(engine_config)?;
    for repair in &repairs {
        tracing::warn!("start-up repair: {repair}");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let cluster_store = config.cluster.as_ref().map(|c| c.endpoints.join(","));
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
        let gid = config.socket_group.as_ref().map(|g| g.gid);
        let owns_socket = activated.is_none();
        let listener = match activated {
            Some(listener) => {
                tracing::info!("netd listening on the socket systemd passed");
                tokio::net::UnixListener::from_std(listener).context("the socket systemd passed")?
            }
            None => {
                let listener = listen::bind(&config.socket, gid)
                    .with_context(|| format!("cannot listen on {}", config.socket.display()))?;
                tracing::info!(
                    "netd listening on {} (group {})",
                    config.socket.display(),
                    config
                        .socket_group
                        .as_ref()
                        .map_or("root", |g| g.name.as_str())
                );
                listener
            }
        };
        if let Some(path) = &config.docker_socket {
            let docker = match listen::bind(path, gid) {
                Ok(docker) => docker,
                Err(e) => {
                    let _ = std::fs::remove_file(&config.socket);
                    return Err(e).with_context(|| {
                        format!("--docker-socket: cannot listen on {}", path.display())
                    });
                }
            };
            tracing::info!("Docker network API on {}", path.display());
            let router = netd::api::docker::router(engine.clone())
                .into_make_service_with_connect_info::<listen::Caller>();
            tokio::spawn(async move {
                if let Err(e) = axum::serve(docker, router).await {
                    tracing::error!("Docker API server failed: {e}");
                }
            });
        }
        if let Some(listener) = metrics {
            listener.set_nonblocking(true).context("--metrics-addr")?;
            let address = listener.local_addr().context("--metrics-addr")?;
            let listener = tokio::net::TcpListener::from_std(listener).context("--metrics-addr")?;
            tracing::info!("metrics at http://{address}/metrics");
            let router = netd::api::metrics::router(engine.clone());
            tokio::spawn(async move {
                if let Err(e) = axum::serve(listener, router).await {
                    tracing::error!("the metrics server failed: {e}");
                }
            });
        }
        listen::notify_ready();
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .context("cannot handle SIGTERM")?;
        let shutdown = async move {
            tokio::select! {
                _ = term.recv() => {},
                _ = tokio::signal::ctrl_c() => {},
            }
        };
        let stopping = engine.clone();
        axum::serve(
            listener,
            server::router(server::Services {
                engine,
                cluster,
                started,
                cluster_store,
            })
            .into_make_service_with_connect_info::<listen::Caller>(),
        )
        .with_graceful_shutdown(shutdown)
        .await
        .context("API server failed")?;
        // Veths released a moment ago are deleted before netd goes.
        let _ = stopping
            .call(|e| {
                e.finish_deletions();
                Ok(())
            })
            .await;
        // A socket systemd passed stays systemd's (it listens on while netd restarts).
        if owns_socket {
            let _ = std::fs::remove_file(&config.socket);
        }
        if let Some(path) = &config.docker_socket {
            let _ = std::fs::remove_file(path);
        }
        tracing::info!("netd stopped; networks and sandboxes keep running");
        Ok(())
    })
}
