//! The command line (README.md, "Operating"; every command and flag has `--help`).

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
        /// Print JSON (every configuration key, secrets as ***) instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show one webhook's full configuration.
    Show {
        /// Webhook name.
        name: String,
        /// Print JSON instead of TOML.
        #[arg(long)]
        json: bool,
    },
    /// Pause a webhook: its deliveries queue without being sent until it is resumed.
    Pause {
        /// Webhook name.
        name: String,
        /// Print JSON ({"webhook": NAME, "active": false}) instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Resume a paused (or switched off) webhook: what queued meanwhile is sent.
    Resume {
        /// Webhook name.
        name: String,
        /// Print JSON ({"webhook": NAME, "active": true}) instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Print the webhooks (all, or those named) and the relations they use as a TOML file that
    /// `apply` accepts; secrets become ${VAR} placeholders, named in a comment.
    Export {
        /// Webhook names; none means every webhook and every relation.
        names: Vec<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum DeliveriesCommand {
    /// List deliveries, newest first.
    List(ListArgs),
    /// Show one delivery with all its attempts.
    Show {
        /// Delivery id (the first column of `deliveries list`).
        id: i64,
        /// Print JSON: the delivery's fields (its attempt counter as `attempt_count`) and `attempts`,
        /// every attempt.
        #[arg(long)]
        json: bool,
    },
    /// Re-queue deliveries with a fresh attempt budget (they keep their webhook-id).
    Retry(RetryArgs),
    /// Cancel pending deliveries: they are not sent and are kept as cancelled.
    Cancel {
        /// Delivery ids.
        #[arg(required = true)]
        ids: Vec<i64>,
        /// Print JSON ({"cancelled": [ids], "failed": [{"id", "error"}]}) instead of text.
        #[arg(long)]
        json: bool,
    },
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
    /// The records' entity, as in outbox.events (e.g. order or Warehouse\Shipment).
    #[arg(long)]
    pub entity: Option<String>,
    /// The record's id (entity_id); with --entity for one record.
    #[arg(long)]
    pub entity_id: Option<String>,
    /// Most deliveries shown (1 to 10000).
    #[arg(long, default_value_t = 50)]
    pub limit: i64,
    /// Print JSON (the columns of outbox.delivery_log) instead of a table.
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
    /// Print JSON ({"requeued": [ids]}) instead of text.
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

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use clap::CommandFactory;

    use super::Cli;

    fn walk(command: &clap::Command, path: &str, missing: &mut Vec<String>) {
        for arg in command.get_arguments() {
            let id = arg.get_id().as_str();
            if id == "help" || id == "version" {
                continue;
            }
            if arg.get_help().is_none() && arg.get_long_help().is_none() {
                missing.push(format!("{path} {id}"));
            }
        }
        for sub in command.get_subcommands() {
            let path = format!("{path} {}", sub.get_name());
            if sub.get_about().is_none() && sub.get_name() != "help" {
                missing.push(path.clone());
            }
            walk(sub, &path, missing);
        }
    }

    #[test]
    fn every_command_flag_and_argument_has_help() {
        let command = Cli::command();
        command.clone().debug_assert();
        let mut missing = Vec::new();
        walk(&command, "outbox-relay", &mut missing);
        assert!(missing.is_empty(), "no help text: {missing:?}");
    }

    fn repo() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
    }

    #[test]
    fn the_readme_command_table_is_one_table_naming_every_command() {
        let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
        let lines: Vec<&str> = readme.lines().collect();
        let start = lines
            .iter()
            .position(|l| *l == "| command | does |")
            .expect("the README has a command table");
        // A Markdown table ends at the first line that is not a row.
        let rows: Vec<&str> = lines[start + 2..]
            .iter()
            .take_while(|l| l.starts_with('|'))
            .copied()
            .collect();
        let after = lines[start + 2 + rows.len()..]
            .iter()
            .find(|l| !l.trim().is_empty());
        assert!(
            !after.is_some_and(|l| l.starts_with("| `outbox-relay")),
            "a blank line splits the command table before {after:?}"
        );
        let command = Cli::command();
        for sub in command.get_subcommands() {
            let name = sub.get_name();
            if name == "help" {
                continue;
            }
            let row = format!("| `outbox-relay {name}");
            assert!(
                rows.iter().any(|r| r.starts_with(&row)),
                "the command table has no row for `{name}`"
            );
        }
    }

    /// The repository must stand alone: nothing may point at design notes kept outside it.
    #[test]
    fn docs_and_code_do_not_point_outside_the_repository() {
        let needles = [
            ["DESIGN", ".md"].concat(),
            ["DESIGN ", "§"].concat(),
            ["../", "shared"].concat(),
        ];
        let mut found = Vec::new();
        let mut stack = vec![repo()];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).unwrap().flatten() {
                let path = entry.path();
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.starts_with('.') && name != ".ci" || name == "target" {
                    continue;
                }
                if path.is_dir() {
                    stack.push(path);
                    continue;
                }
                let Ok(text) = std::fs::read_to_string(&path) else {
                    continue;
                };
                for needle in &needles {
                    if text.contains(needle.as_str()) {
                        found.push(format!("{} mentions {needle:?}", path.display()));
                    }
                }
            }
        }
        assert!(found.is_empty(), "{found:#?}");
    }
}
