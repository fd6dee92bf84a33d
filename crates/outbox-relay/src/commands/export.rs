//! `webhooks export [NAME...]`: the webhooks (all, or those named) and their relations as a TOML
//! file that `apply` accepts, from [`outbox_admin::export`].

use crate::error::Failure;

/// The command: prints the file.
pub async fn run(url: &str, names: &[String]) -> Result<(), Failure> {
    let client = super::connect_migrated(url).await?;
    let exported = outbox_admin::export::export(&client, names).await?;
    for (name, reason) in &exported.skipped {
        eprintln!("warning: webhook {name:?} is not exported: {reason}");
    }
    print!("{}", exported.text);
    Ok(())
}
