//! The `outbox-relay` binary: command line, configuration, and the wiring of the pipeline
//! `outbox.events → listener → matcher → outbox.deliveries → sender → attempts`.
//!
//! The crates do the work; this crate only connects them:
//!
//! - [`catalog`] (the `outbox-catalog` crate) loads `outbox.webhooks`/`outbox.relations`,
//!   validates and compiles them, and swaps the result in live;
//! - every operator action (list, show, retry, test, ...) is a function of the `outbox-admin`
//!   crate; the commands, the admin API and the console are thin faces over it;
//! - [`relay`] runs the listener, the router, the sender and the HTTP endpoint;
//! - [`commands`] holds one module per command group (`apply`, `webhooks`, `export`, `deliveries`,
//!   `test`, `fields`, `demo`);
//! - [`http`], [`api`] and [`console`] serve `/metrics`, `/healthz`, `/readyz`, the admin API and
//!   the console;
//! - [`maintenance`] vacuums the hot queue, keeps the queue gauges fresh and deletes what expired;
//! - [`receiver`] and [`verify`] are `outbox-relay receive`, a receiver that checks signatures.
//!
//! Everything a test needs to start a relay in-process is public: [`relay::Relay`],
//! [`config::RelayConfig`].

pub mod api;
pub mod auth;
pub use outbox_catalog as catalog;
pub mod cli;
pub mod commands;
pub mod config;
pub mod console;
pub mod error;
pub mod health;
pub mod http;
pub mod maintenance;
mod output;
pub mod receiver;
pub mod relay;
pub mod state;
pub mod telemetry;
pub mod verify;

// The maintenance units by their earlier paths (tests and the benchmark use them).
pub use maintenance::{retention, sampler};

use cli::{Cli, Command, DeliveriesCommand, EventsCommand, WebhooksCommand};
use error::Failure;

/// Runs one command to completion.
pub async fn execute(cli: Cli) -> Result<(), Failure> {
    let url = || commands::database_url(&cli.database_url);
    match &cli.command {
        Command::Migrate(args) => {
            let url = url()?;
            let mut client = commands::connect(&url).await?;
            // A migration may redefine capture() in PL/pgSQL: the choice made before stays.
            let before = match outbox_core::schema_status(&client).await? {
                outbox_core::SchemaStatus::Missing => None,
                _ => Some(outbox_core::capture_in_use(&client).await?),
            };
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
            if let Some(wanted) = args.capture.map(outbox_core::Capture::from).or(before)
                && outbox_core::capture_in_use(&client).await? != wanted
            {
                outbox_core::set_capture(&mut client, wanted).await?;
            }
            println!(
                "outbox.capture runs the {} implementation",
                outbox_core::capture_in_use(&client).await?
            );
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
            // Take over SIGTERM/SIGINT before anything can ask for them, so a signal arriving
            // while the relay starts is a graceful stop, not the default instant death.
            let mut signals = Signals::new()?;
            let relay = relay::Relay::start(settings).await?;
            let token = relay.shutdown_token();
            tokio::spawn(async move {
                signals.next().await;
                tracing::info!(
                    "shutting down: finishing in-flight attempts (a second signal stops at once)"
                );
                token.cancel();
                signals.next().await;
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
            WebhooksCommand::Export { names } => commands::export::run(&url()?, names).await,
            WebhooksCommand::Pause { name, json } => {
                commands::webhooks::set_active(&url()?, name, false, *json).await
            }
            WebhooksCommand::Resume { name, json } => {
                commands::webhooks::set_active(&url()?, name, true, *json).await
            }
        },
        Command::Deliveries { command } => match command {
            DeliveriesCommand::List(args) => commands::deliveries::list(&url()?, args).await,
            DeliveriesCommand::Show { id, json } => {
                commands::deliveries::show(&url()?, *id, *json).await
            }
            DeliveriesCommand::Retry(args) => commands::deliveries::retry(&url()?, args).await,
            DeliveriesCommand::Cancel { ids, json } => {
                commands::deliveries::cancel(&url()?, ids, *json).await
            }
        },
        Command::Events { command } => match command {
            EventsCommand::Unrouted { json } => commands::events::unrouted(&url()?, *json).await,
            EventsCommand::Reroute(args) => commands::events::reroute(&url()?, args).await,
        },
        Command::Test(args) => {
            let request = commands::test_cmd::PreviewRequest {
                webhook: args.webhook.clone(),
                entity: args.entity.clone(),
                id: args.id.clone(),
                send: args.send,
            };
            commands::test_cmd::run(&url()?, &request, args.json).await
        }
        Command::Fields(args) => {
            commands::fields::run(
                &url()?,
                &args.event_type,
                args.entity_id.as_deref(),
                args.json,
            )
            .await
        }
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

/// SIGTERM and SIGINT (Ctrl-C), handled from the moment this is created.
pub struct Signals {
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
    #[cfg(unix)]
    int: tokio::signal::unix::Signal,
}

impl Signals {
    pub fn new() -> Result<Signals, Failure> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let handler = |kind| {
                signal(kind).map_err(|e| Failure::runtime(format!("cannot handle signals: {e}")))
            };
            Ok(Signals {
                term: handler(SignalKind::terminate())?,
                int: handler(SignalKind::interrupt())?,
            })
        }
        #[cfg(not(unix))]
        Ok(Signals {})
    }

    /// Resolves on the next SIGTERM or SIGINT.
    pub async fn next(&mut self) {
        #[cfg(unix)]
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// Resolves on SIGTERM or SIGINT (Ctrl-C).
pub async fn shutdown_signal() {
    match Signals::new() {
        Ok(mut signals) => signals.next().await,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
