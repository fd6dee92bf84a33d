//! The `outbox-relay` binary: command line, configuration, and the wiring of the pipeline
//! `outbox.events → listener → matcher → outbox.deliveries → sender → attempts`.
//!
//! The crates do the work; this crate only connects them:
//!
//! - [`catalog`] loads `outbox.webhooks`/`outbox.relations`, validates and compiles them with the
//!   matcher (patterns, CEL), renderer (templates) and sender (signing, timing), and swaps the
//!   result in live;
//! - [`relay`] runs the listener, the router, the sender and the HTTP endpoint;
//! - [`commands`] holds one module per command group (`apply`, `webhooks`, `deliveries`, `demo`);
//! - [`http`] and [`api`] serve `/metrics`, `/healthz`, `/readyz` and the admin API; [`sampler`]
//!   keeps the queue gauges fresh and [`retention`] deletes what expired;
//! - [`receiver`] and [`verify`] are `outbox-relay receive`, a receiver that checks signatures.
//!
//! Everything a test needs to start a relay in-process is public: [`relay::Relay`],
//! [`config::RelayConfig`].

pub mod api;
pub mod catalog;
pub mod cli;
pub mod commands;
pub mod config;
pub mod error;
pub mod http;
mod output;
pub mod receiver;
pub mod relay;
pub mod retention;
pub mod sampler;
pub mod telemetry;
pub mod verify;

use cli::{Cli, Command, DeliveriesCommand, WebhooksCommand};
use error::Failure;

/// Runs one command to completion.
pub async fn execute(cli: Cli) -> Result<(), Failure> {
    let url = || commands::database_url(&cli.database_url);
    match &cli.command {
        Command::Migrate => {
            let url = url()?;
            let mut client = commands::connect(&url).await?;
            let applied = outbox_core::migrate(&mut client).await?;
            if applied.is_empty() {
                println!(
                    "schema outbox is up to date (version {})",
                    outbox_core::SCHEMA_VERSION
                );
            } else {
                println!(
                    "schema outbox migrated to version {} (applied {})",
                    outbox_core::SCHEMA_VERSION,
                    applied
                        .iter()
                        .map(|v| v.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
            Ok(())
        }
        Command::Run(args) => {
            let mut config = config::RelayConfig::load(args.config.as_deref())?;
            if let Some(listen) = &args.listen {
                config.listen = listen.clone();
            }
            if let Some(format) = &args.log_format {
                config.log_format = format.clone();
            }
            let settings = config.settings(cli.database_url.clone())?;
            telemetry::init_logging(settings.json_logs);
            let relay = relay::Relay::start(settings).await?;
            let token = relay.shutdown_token();
            tokio::spawn(async move {
                shutdown_signal().await;
                tracing::info!(
                    "shutting down: finishing in-flight attempts (a second signal stops at once)"
                );
                token.cancel();
                shutdown_signal().await;
                tracing::warn!(
                    "stopping at once; attempts still in flight are retried once their lease expires"
                );
                std::process::exit(1);
            });
            relay.wait().await;
            Ok(())
        }
        Command::Apply(args) => {
            commands::apply::run(&url()?, &args.file, args.dry_run, args.prune).await
        }
        Command::Webhooks { command } => match command {
            WebhooksCommand::List { json } => commands::webhooks::list(&url()?, *json).await,
            WebhooksCommand::Show { name, json } => {
                commands::webhooks::show(&url()?, name, *json).await
            }
        },
        Command::Deliveries { command } => match command {
            DeliveriesCommand::List(args) => commands::deliveries::list(&url()?, args).await,
            DeliveriesCommand::Show { id, json } => {
                commands::deliveries::show(&url()?, *id, *json).await
            }
            DeliveriesCommand::Retry(args) => commands::deliveries::retry(&url()?, args).await,
        },
        Command::Receive(args) => {
            receiver::run(
                &args.listen,
                args.secrets.clone(),
                args.status,
                args.signature_header.clone(),
            )
            .await
        }
        Command::Demo(args) => commands::demo::run(cli.database_url.clone(), args.once).await,
    }
}

/// Resolves on SIGTERM or SIGINT (Ctrl-C).
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
