//! The replies of MongoDB's write commands (`update`, `delete`), read in one place for every
//! writer (projections, projection changes): the per-statement `writeErrors` and the
//! command-level `writeConcernError`. A reply with `ok: 1` and a `writeConcernError` did write,
//! but not as durably as asked: the caller treats it as a transient failure (retried, offsets
//! not stored; docs/failures.md).

use mongodb::bson::{Bson, Document};

/// MongoDB's duplicate-key error code.
pub const DUPLICATE_KEY: i32 = 11000;

/// One statement MongoDB refused.
#[derive(Debug, Clone, Copy)]
pub struct StatementError<'a> {
    /// The statement's index in the command.
    pub index: usize,
    /// MongoDB's error code.
    pub code: i32,
    /// MongoDB's message.
    pub message: &'a str,
    error: &'a Document,
}

impl StatementError<'_> {
    /// Whether it is a duplicate key on an index of exactly these fields, in this order.
    pub fn is_duplicate_key_on<'f>(&self, fields: impl IntoIterator<Item = &'f str>) -> bool {
        self.code == DUPLICATE_KEY
            && self
                .error
                .get_document("keyPattern")
                .is_ok_and(|pattern| pattern.keys().map(String::as_str).eq(fields))
    }
}

/// The reply's `writeConcernError` message, if it has one.
pub fn write_concern_error(reply: &Document) -> Option<String> {
    reply.get_document("writeConcernError").ok().map(|concern| {
        let code = concern.get_i32("code").unwrap_or(0);
        let message = concern.get_str("errmsg").unwrap_or_default();
        format!("writeConcernError {code}: {message}")
    })
}

/// The reply's `writeErrors`, in order.
pub fn statement_errors(reply: &Document) -> impl Iterator<Item = StatementError<'_>> {
    reply.get_array("writeErrors").map(Vec::as_slice).unwrap_or_default().iter().filter_map(
        |error| {
            let error = match error {
                Bson::Document(d) => d,
                _ => return None,
            };
            Some(StatementError {
                index: error.get_i32("index").ok().and_then(|i| usize::try_from(i).ok())?,
                code: error.get_i32("code").unwrap_or(0),
                message: error.get_str("errmsg").unwrap_or_default(),
                error,
            })
        },
    )
}

#[cfg(test)]
mod tests {
    use mongodb::bson::doc;

    use super::*;

    #[test]
    fn statement_errors_and_write_concern() {
        let reply = doc! { "ok": 1, "n": 2, "writeErrors": [
            { "index": 1, "code": 11000, "errmsg": "E11000 duplicate key", "keyPattern": { "customer_id": 1 } },
            { "index": 3, "code": 121, "errmsg": "Document failed validation" },
            "not a document",
        ], "writeConcernError": { "code": 64, "errmsg": "waiting for replication timed out" } };
        let errors: Vec<_> = statement_errors(&reply).collect();
        assert_eq!(
            errors.iter().map(|e| (e.index, e.code)).collect::<Vec<_>>(),
            [(1, 11000), (3, 121)]
        );
        assert!(errors[0].is_duplicate_key_on(["customer_id"]));
        assert!(!errors[0].is_duplicate_key_on(["customer_id", "other"]));
        assert!(!errors[1].is_duplicate_key_on(["customer_id"]));
        assert_eq!(errors[1].message, "Document failed validation");
        assert_eq!(
            write_concern_error(&reply).as_deref(),
            Some("writeConcernError 64: waiting for replication timed out")
        );
        let clean = doc! { "ok": 1, "n": 1 };
        assert_eq!((statement_errors(&clean).count(), write_concern_error(&clean)), (0, None));
    }
}
