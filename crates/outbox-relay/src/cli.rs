//! The command line (DESIGN §4).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "outbox-relay",
    version,
    about = "Transactional outbox relay for Postgres: committed changes become signed, retried, logged webhooks",
    propagate_version = true
)]
pub struct Cli {
    /// Postgres URL of the business database (or set DATABASE_URL).
    #[arg(long, env = "DATABASE_URL", global = true, hide_env_values = true)]
    pub database_url: Option<String>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create or update schema `outbox` (idempotent, safe to run concurrently).
    Migrate(MigrateArgs),
    /// Run the relay: listener, router, sender and the HTTP endpoint.
    Run(RunArgs),
    /// Validate the webhooks and relations of a TOML file and write them in one transaction.
    Apply(ApplyArgs),
    /// Show configured webhooks (secrets as ***).
    Webhooks {
        #[command(subcommand)]
        command: WebhooksCommand,
    },
    /// The webhook queue: list, inspect and re-queue deliveries.
    Deliveries {
        #[command(subcommand)]
        command: DeliveriesCommand,
    },
    /// Events the relay set aside because it could not route them: list them, route them again.
    Events {
        #[command(subcommand)]
        command: EventsCommand,
    },
    /// Render (and optionally send) a webhook's request for the latest event of one record.
    Test(TestArgs),
    /// List the merge fields templates can use, from the latest event of a type (or record).
    Fields(FieldsArgs),
    /// A local webhook receiver for trying webhooks out: prints each request and whether its
    /// signature verifies.
    Receive(ReceiveArgs),
    /// Zero-setup tour: starts a private Postgres (or uses a throwaway database on DATABASE_URL's
    /// server), creates example orders/shipments tables and webhooks to a built-in receiver, writes
    /// sample data and shows the deliveries flowing. Ctrl-C stops it and removes what it created.
    Demo(DemoArgs),
}

#[derive(Debug, Args)]
pub struct MigrateArgs {
    /// Which implementation `outbox.capture()` runs from now on: `native` (the C library from
    /// extension/outbox_capture, installed on the database server; needs a superuser) or
    /// `plpgsql`. Without it, the current one stays.
    #[arg(long, value_enum)]
    pub capture: Option<CaptureArg>,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum CaptureArg {
    Plpgsql,
    Native,
}

impl From<CaptureArg> for outbox_core::Capture {
    fn from(arg: CaptureArg) -> Self {
        match arg {
            CaptureArg::Plpgsql => outbox_core::Capture::Plpgsql,
            CaptureArg::Native => outbox_core::Capture::Native,
        }
    }
}

#[derive(Debug, Args)]
pub struct ReceiveArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:9999")]
    pub listen: String,
    /// Secret to verify signatures with (repeat for several): whsec_... for the standard scheme,
    /// the shared text for hmac-sha256.
    #[arg(long = "secret", value_name = "S")]
    pub secrets: Vec<String>,
    /// Header holding hmac-sha256 signatures.
    #[arg(long, default_value = "ms-signature")]
    pub signature_header: String,
    /// HTTP status to answer with (e.g. 500 to watch the relay retry).
    #[arg(long, default_value_t = 200)]
    pub status: u16,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Exit (0) as soon as the sample deliveries succeeded, instead of running until Ctrl-C.
    #[arg(long)]
    pub once: bool,
}

impl Command {
    /// Commands that run until stopped (rather than print an answer and exit).
    pub fn is_long_running(&self) -> bool {
        matches!(
            self,
            Command::Run(_) | Command::Receive(_) | Command::Demo(_)
        )
    }
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Address of the HTTP endpoint (metrics, health, admin API) [default: 127.0.0.1:9464].
    #[arg(long)]
    pub listen: Option<String>,
    /// Relay configuration file (TOML); every key can also be set as OUTBOX_<KEY>.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Log format: text or json.
    #[arg(long)]
    pub log_format: Option<String>,
}

#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// TOML file with [[webhook]] and [[relation]] entries.
    pub file: PathBuf,
    /// Validate and print the plan without writing anything.
    #[arg(long)]
    pub dry_run: bool,
    /// Remove webhooks (and relations) that are not in the file; their queued deliveries are cancelled.
    #[arg(long)]
    pub prune: bool,
}

#[derive(Debug, Subcommand)]
pub enum WebhooksCommand {
    /// List every webhook with its validity.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Show one webhook's full configuration.
    Show {
        name: String,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum DeliveriesCommand {
    /// List deliveries, newest first.
    List(ListArgs),
    /// Show one delivery with all its attempts.
    Show {
        id: i64,
        #[arg(long)]
        json: bool,
    },
    /// Re-queue deliveries with a fresh attempt budget (they keep their webhook-id).
    Retry(RetryArgs),
}

#[derive(Debug, Subcommand)]
pub enum EventsCommand {
    /// List the events set aside as unroutable, with the reason for each.
    Unrouted {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Route set-aside events again (after fixing the cause), by the webhooks as they are now.
    Reroute(RerouteArgs),
}

#[derive(Debug, Args)]
pub struct RerouteArgs {
    /// Event ids, as `events unrouted` lists them.
    pub ids: Vec<i64>,
    /// Every event listed by `events unrouted`.
    #[arg(long, conflicts_with = "ids")]
    pub all: bool,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// pending, in_flight, succeeded, dead or cancelled.
    #[arg(long)]
    pub status: Option<String>,
    /// Webhook name.
    #[arg(long)]
    pub webhook: Option<String>,
    #[arg(long)]
    pub entity: Option<String>,
    #[arg(long)]
    pub entity_id: Option<String>,
    #[arg(long, default_value_t = 50)]
    pub limit: i64,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct RetryArgs {
    /// Delivery ids.
    pub ids: Vec<i64>,
    /// Re-queue every delivery with this status (e.g. dead) instead of listing ids.
    #[arg(long, conflicts_with = "ids")]
    pub status: Option<String>,
    /// With --status: only this webhook's deliveries.
    #[arg(long, requires = "status")]
    pub webhook: Option<String>,
    /// With --status: only deliveries finished since this time (RFC 3339, e.g. 2026-11-24T08:00:00Z,
    /// or a duration ago such as 2h).
    #[arg(long, requires = "status")]
    pub since: Option<String>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct TestArgs {
    /// Webhook name.
    pub webhook: String,
    /// The record's entity (model), as in outbox.events, e.g. order or Warehouse\Shipment.
    #[arg(long)]
    pub entity: String,
    /// The record's id (entity_id).
    #[arg(long)]
    pub id: String,
    /// Send the request once (signature and auth included) and print the response; nothing is
    /// written to the queue.
    #[arg(long)]
    pub send: bool,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct FieldsArgs {
    /// Event type (order.updated), or a pattern (order.*, *).
    pub event_type: String,
    /// Use the latest event of this record (entity_id) instead of the latest of the type.
    #[arg(long)]
    pub entity_id: Option<String>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}
