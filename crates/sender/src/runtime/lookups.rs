//! Related records for a claimed batch, loaded once for all of its deliveries that need them.
//!
//! Each claim starts one lookup (lazily: it runs when the first of its attempts asks for it),
//! which loads the related records of every delivery of the batch on the relay's lookup pool
//! ([`related::load_batched`]): one statement per relation for the whole batch. That pool
//! is separate from the one claims and completions use, so slow relation queries can never
//! starve them. Every attempt waits for the lookup only until its own deadline.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use futures_util::FutureExt;
use futures_util::future::{BoxFuture, Shared as SharedFuture};
use outbox_core::Event;
use serde_json::{Map, Value};

use super::Shared;
use crate::endpoint::Directory;
use crate::related::{self, Lookup, RelatedError};

/// Each delivery's related records, or why they could not be loaded.
type Loaded = Arc<HashMap<i64, Result<Map<String, Value>, RelatedError>>>;

/// The lookup of one claimed batch, shared by its attempts.
#[derive(Clone)]
pub(crate) struct BatchLookup(SharedFuture<BoxFuture<'static, Loaded>>);

/// One delivery of the batch that needs related records.
pub(crate) struct Wanted {
    pub delivery_id: i64,
    pub names: Vec<String>,
    pub event: Arc<Event>,
}

/// Why an attempt got no related records.
pub(crate) enum Missing {
    /// They could not be loaded (the attempt fails like any render error).
    Failed(String),
    /// The lookup did not finish before the attempt's deadline.
    OutOfTime,
}

impl BatchLookup {
    /// The lookup for `wanted`, or `None` when no delivery of the batch needs one.
    pub fn new(
        shared: Arc<Shared>,
        directory: Arc<Directory>,
        wanted: Vec<Wanted>,
    ) -> Option<BatchLookup> {
        if wanted.is_empty() {
            return None;
        }
        let load = async move {
            let client = match shared.lookups.get().await {
                Ok(client) => client,
                Err(e) => {
                    let reason = format!(
                        "cannot load related records: {}",
                        outbox_core::Error::from(e)
                    );
                    return Arc::new(
                        wanted
                            .iter()
                            .map(|w| {
                                (
                                    w.delivery_id,
                                    Err(RelatedError::Database {
                                        reason: reason.clone(),
                                    }),
                                )
                            })
                            .collect(),
                    );
                }
            };
            let lookups: Vec<Lookup<'_>> = wanted
                .iter()
                .map(|w| Lookup {
                    names: &w.names,
                    event: &w.event,
                })
                .collect();
            // The pooled connection's id: the batch functions are created once per session.
            let connection = {
                let mut hasher = std::hash::DefaultHasher::new();
                std::hash::Hash::hash(&deadpool_postgres::Object::id(&client), &mut hasher);
                std::hash::Hasher::finish(&hasher)
            };
            let results = related::load_batched(
                &client,
                connection,
                &directory.relations,
                &lookups,
                shared.options.relation_timeout,
                &shared.batching,
            )
            .await;
            Arc::new(
                wanted
                    .iter()
                    .map(|w| w.delivery_id)
                    .zip(results)
                    .collect::<HashMap<_, _>>(),
            )
        };
        Some(BatchLookup(load.boxed().shared()))
    }

    /// The related records of one delivery, waiting for them until `send_by` at most.
    pub async fn get(
        &self,
        delivery_id: i64,
        send_by: Instant,
    ) -> Result<Map<String, Value>, Missing> {
        let until = tokio::time::Instant::from_std(send_by);
        let loaded = tokio::time::timeout_at(until, self.0.clone())
            .await
            .map_err(|_| Missing::OutOfTime)?;
        match loaded.get(&delivery_id) {
            Some(Ok(related)) => Ok(related.clone()),
            Some(Err(e)) => Err(Missing::Failed(e.to_string())),
            None => Err(Missing::Failed(format!(
                "no related records were looked up for delivery {delivery_id}"
            ))),
        }
    }
}
