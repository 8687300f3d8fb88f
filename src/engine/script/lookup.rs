//! The read-only MongoDB look-ups behind a strategy's `mongoClient`: `findOne`, `find(...)
//! .toArray()` and `countDocuments`, with the driver's own option names (`projection`,
//! `sort`, `limit`, `skip`, ...). The script runs on a blocking thread; each look-up blocks on
//! the tokio runtime's handle, bounded by the time left to the call.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures::TryStreamExt;
use mongodb::bson::{Bson, Document};
use mongodb::options::{CountOptions, FindOneOptions, FindOptions};
use rquickjs::function::Opt;
use rquickjs::{Ctx, Exception, Function, Value};
use tokio::runtime::Handle;

use super::convert;

/// What a strategy call may read: the database given to the call and the runtime that drives
/// the driver.
pub(super) struct Lookups {
    db: mongodb::Database,
    handle: Handle,
}

impl Lookups {
    /// Look-ups through `db`, driven by `handle` (never called from one of its workers).
    pub(super) fn new(db: mongodb::Database, handle: Handle) -> Self {
        Lookups { db, handle }
    }
}

/// A look-up that failed during the call.
#[derive(Debug, Clone)]
pub(super) struct LookupFailure {
    /// The driver's error, or the timeout.
    pub message: String,
    /// It ran past the call's deadline.
    pub timed_out: bool,
}

/// The look-ups of the running strategy call, shared with the native function.
#[derive(Default)]
pub(super) struct LookupSlot {
    current: Mutex<Option<Active>>,
}

struct Active {
    db: mongodb::Database,
    handle: Handle,
    failure: Option<LookupFailure>,
}

impl LookupSlot {
    /// Serves `lookups` until [`LookupSlot::end`].
    pub(super) fn begin(&self, lookups: &Lookups) {
        let active =
            Active { db: lookups.db.clone(), handle: lookups.handle.clone(), failure: None };
        *self.lock() = Some(active);
    }

    /// Stops serving; the first look-up that failed, if any.
    pub(super) fn end(&self) -> Option<LookupFailure> {
        self.lock().take().and_then(|active| active.failure)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Active>> {
        self.current.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The native `lookup(op, database, collection, filter, options)` the prelude's client calls;
/// `remaining` tells the time left to the running call.
pub(super) fn native<'js>(
    ctx: &Ctx<'js>,
    slot: Arc<LookupSlot>,
    remaining: impl Fn() -> Duration + 'static,
) -> rquickjs::Result<Function<'js>> {
    Function::new(
        ctx.clone(),
        move |ctx: Ctx<'js>,
              op: String,
              database: String,
              collection: String,
              filter: Opt<Value<'js>>,
              options: Opt<Value<'js>>|
              -> rquickjs::Result<Value<'js>> {
            let filter = document_arg(&ctx, "filter", filter.0)?;
            let options = document_arg(&ctx, "options", options.0)?;
            let query = Query { op: &op, database: &database, collection: &collection };
            let found = run(&slot, query, filter, options, remaining())
                .map_err(|message| Exception::throw_message(&ctx, &message))?;
            convert::bson_to_js(&ctx, &found)
        },
    )
}

/// An optional argument as a document: absent, `undefined` and `null` are empty.
fn document_arg<'js>(
    ctx: &Ctx<'js>,
    what: &str,
    value: Option<Value<'js>>,
) -> rquickjs::Result<Document> {
    match value.filter(|v| !v.is_undefined() && !v.is_null()) {
        None => Ok(Document::new()),
        Some(value) => match convert::js_to_bson(ctx, &value) {
            Ok(Some(Bson::Document(doc))) => Ok(doc),
            Ok(_) => Err(Exception::throw_type(ctx, &format!("the {what} must be an object"))),
            Err(e) => Err(Exception::throw_type(ctx, &format!("the {what}: {e}"))),
        },
    }
}

#[derive(Clone, Copy)]
struct Query<'a> {
    op: &'a str,
    database: &'a str,
    collection: &'a str,
}

/// Runs one look-up for the active call, recording a failure so the call cannot succeed.
fn run(
    slot: &LookupSlot,
    query: Query<'_>,
    filter: Document,
    options: Document,
    remaining: Duration,
) -> Result<Bson, String> {
    let (db, handle) = match slot.lock().as_ref() {
        Some(active) => (active.db.clone(), active.handle.clone()),
        None => return Err("mongoClient is only available during a strategy call".into()),
    };
    let db = match query.database == db.name() {
        true => db,
        false => db.client().database(query.database),
    };
    let collection = db.collection::<Document>(query.collection);
    let result = handle.block_on(async {
        tokio::time::timeout(remaining, execute(&collection, query.op, filter, options)).await
    });
    let (message, failure) = match result {
        Ok(Ok(found)) => return Ok(found),
        Ok(Err(Refused::Script(message))) => (message, None),
        Ok(Err(Refused::Server(message))) => {
            (message.clone(), Some(LookupFailure { message, timed_out: false }))
        }
        Err(_) => {
            let message = "the time limit was reached".to_string();
            (message.clone(), Some(LookupFailure { message, timed_out: true }))
        }
    };
    if let (Some(failure), Some(active)) = (failure, slot.lock().as_mut()) {
        active.failure.get_or_insert(failure);
    }
    Err(format!("{} on {}.{}: {message}", query.op, query.database, query.collection))
}

/// Why a look-up failed: the script asked for something invalid (thrown to it, a message
/// error if uncaught), or the server could not answer (transient).
enum Refused {
    Script(String),
    Server(String),
}

impl From<mongodb::error::Error> for Refused {
    fn from(e: mongodb::error::Error) -> Self {
        use mongodb::error::ErrorKind;
        // The driver's retryable-read codes: the server is unreachable, shutting down,
        // stepping down or recovering.
        const UNAVAILABLE: [i32; 13] =
            [6, 7, 89, 91, 134, 189, 262, 9001, 10107, 11600, 11602, 13435, 13436];
        let transient = match &*e.kind {
            ErrorKind::Command(c) => UNAVAILABLE.contains(&c.code),
            ErrorKind::InvalidArgument { .. }
            | ErrorKind::BsonSerialization(_)
            | ErrorKind::BsonDeserialization(_) => false,
            _ => true,
        };
        match transient {
            true => Refused::Server(e.to_string()),
            false => Refused::Script(e.to_string()),
        }
    }
}

async fn execute(
    collection: &mongodb::Collection<Document>,
    op: &str,
    filter: Document,
    options: Document,
) -> Result<Bson, Refused> {
    match op {
        "findOne" => {
            let options: FindOneOptions = parse_options(options)?;
            let found = collection.find_one(filter).with_options(options).await?;
            Ok(found.map_or(Bson::Null, Bson::Document))
        }
        "find" => {
            let options: FindOptions = parse_options(options)?;
            let cursor = collection.find(filter).with_options(options).await?;
            let found: Vec<Document> = cursor.try_collect().await?;
            Ok(Bson::Array(found.into_iter().map(Bson::Document).collect()))
        }
        "countDocuments" => {
            let options: CountOptions = parse_options(options)?;
            let count = collection.count_documents(filter).with_options(options).await;
            Ok(Bson::Int64(i64::try_from(count?).unwrap_or(i64::MAX)))
        }
        other => Err(Refused::Script(format!("unknown look-up {other:?}"))),
    }
}

fn parse_options<T: serde::de::DeserializeOwned>(options: Document) -> Result<T, Refused> {
    mongodb::bson::from_document(options)
        .map_err(|e| Refused::Script(format!("invalid options: {e}")))
}
