//! Encodes documents and the raw `update` commands (the writer's upserts, and the
//! projection-change upserts, encoded beforehand by their builder with this module's
//! `open` / `element` / `close`) straight into BSON bytes: one buffer,
//! lengths patched in place, no nested buffers copied into their parents and no pass through
//! serde (which the driver's `Document` encoder takes, and which was the engine's largest CPU
//! cost). Produces exactly the bytes `bson::to_vec` would. Updates are encoded as soon as
//! they are mapped, while their values are still in the CPU's cache.

use mongodb::bson::{self, Bson, Document, RawDocument, RawDocumentBuf};

/// Why a document could not be encoded.
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    /// A key (a BSON C string) contains a NUL byte.
    #[error("the key {0:?} contains a NUL byte")]
    NulInKey(String),
    /// A rare BSON type went through the driver's encoder, which refused it.
    #[error("encoding {key:?} failed: {source}")]
    Fallback {
        /// The element's key.
        key: String,
        /// The encoder's error.
        source: Box<bson::ser::Error>,
    },
    /// The finished command was not a well-formed document.
    #[error("the encoded command is malformed: {0}")]
    Malformed(Box<bson::raw::Error>),
    /// A document or string is larger than BSON allows.
    #[error("an element is larger than 2 GiB")]
    TooLarge,
}

/// `doc` as a BSON document of its own.
pub fn to_raw(doc: &Document) -> Result<RawDocumentBuf, EncodeError> {
    let mut out = Vec::with_capacity(512);
    document(doc, &mut out)?;
    RawDocumentBuf::from_bytes(out).map_err(|e| EncodeError::Malformed(Box::new(e)))
}

/// `{update: collection, updates: [{q, u, upsert: true}, ...], ordered: false, writeConcern}`.
pub fn update_command<'a>(
    collection: &str,
    statements: impl Iterator<Item = (&'a Document, &'a RawDocumentBuf)>,
    write_concern: &Document,
) -> Result<RawDocumentBuf, EncodeError> {
    upserts(collection, statements, false, write_concern, |update, out| {
        out.push(0x03);
        cstring("u", out)?;
        out.extend_from_slice(update.as_bytes());
        Ok(())
    })
}

/// `{update: collection, updates: [statement, ...], ordered: true, writeConcern}` of
/// statements encoded beforehand (the projection-change upserts, whose update is a pipeline),
/// applied in order.
pub fn ordered_update_command<'a>(
    collection: &str,
    statements: impl Iterator<Item = &'a RawDocument>,
    write_concern: &Document,
) -> Result<RawDocumentBuf, EncodeError> {
    let mut out = Vec::with_capacity(4096);
    let command = open(&mut out);
    string_element("update", collection, &mut out)?;
    out.push(0x04);
    cstring("updates", &mut out)?;
    let array = open(&mut out);
    let mut index = itoa_buffer();
    for (i, statement) in statements.enumerate() {
        out.push(0x03);
        cstring(index.format(i), &mut out)?;
        out.extend_from_slice(statement.as_bytes());
    }
    close(array, &mut out)?;
    out.extend_from_slice(&[0x08, b'o', b'r', b'd', b'e', b'r', b'e', b'd', 0, 1]);
    write_concern_element(write_concern, &mut out)?;
    close(command, &mut out)?;
    RawDocumentBuf::from_bytes(out).map_err(|e| EncodeError::Malformed(Box::new(e)))
}

/// The `update` command of upsert statements `{q, u, upsert: true}`; `u` appends the `u`
/// element of a statement.
fn upserts<'a, U>(
    collection: &str,
    statements: impl Iterator<Item = (&'a Document, U)>,
    ordered: bool,
    write_concern: &Document,
    mut u: impl FnMut(U, &mut Vec<u8>) -> Result<(), EncodeError>,
) -> Result<RawDocumentBuf, EncodeError> {
    let mut out = Vec::with_capacity(4096);
    let command = open(&mut out);
    string_element("update", collection, &mut out)?;
    out.push(0x04);
    cstring("updates", &mut out)?;
    let array = open(&mut out);
    let mut index = itoa_buffer();
    for (i, (filter, update)) in statements.enumerate() {
        out.push(0x03);
        cstring(index.format(i), &mut out)?;
        let statement = open(&mut out);
        out.push(0x03);
        cstring("q", &mut out)?;
        document(filter, &mut out)?;
        u(update, &mut out)?;
        out.extend_from_slice(&[0x08, b'u', b'p', b's', b'e', b'r', b't', 0, 1]);
        close(statement, &mut out)?;
    }
    close(array, &mut out)?;
    out.extend_from_slice(&[0x08, b'o', b'r', b'd', b'e', b'r', b'e', b'd', 0, u8::from(ordered)]);
    write_concern_element(write_concern, &mut out)?;
    close(command, &mut out)?;
    RawDocumentBuf::from_bytes(out).map_err(|e| EncodeError::Malformed(Box::new(e)))
}

/// Appends the `writeConcern` element (none when `concern` is empty: the server's default).
fn write_concern_element(concern: &Document, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    if concern.is_empty() {
        return Ok(());
    }
    out.push(0x03);
    cstring("writeConcern", out)?;
    document(concern, out)
}

/// Appends `doc` as a BSON document.
pub fn document(doc: &Document, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    let start = open(out);
    for (key, value) in doc {
        element(key, value, out)?;
    }
    close(start, out)
}

fn array(values: &[Bson], out: &mut Vec<u8>) -> Result<(), EncodeError> {
    let start = open(out);
    let mut index = itoa_buffer();
    for (i, value) in values.iter().enumerate() {
        element(index.format(i), value, out)?;
    }
    close(start, out)
}

/// Appends one element: type byte, key, value.
pub(crate) fn element(key: &str, value: &Bson, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    let type_at = out.len();
    out.push(value.element_type() as u8);
    cstring(key, out)?;
    match value {
        Bson::Double(d) => out.extend_from_slice(&d.to_le_bytes()),
        Bson::String(s) => string(s, out)?,
        Bson::Document(d) => document(d, out)?,
        Bson::Array(a) => array(a, out)?,
        Bson::Boolean(b) => out.push(u8::from(*b)),
        Bson::Null | Bson::Undefined | Bson::MaxKey | Bson::MinKey => {}
        Bson::Int32(i) => out.extend_from_slice(&i.to_le_bytes()),
        Bson::Int64(i) => out.extend_from_slice(&i.to_le_bytes()),
        Bson::DateTime(t) => out.extend_from_slice(&t.timestamp_millis().to_le_bytes()),
        Bson::ObjectId(id) => out.extend_from_slice(&id.bytes()),
        Bson::Decimal128(d) => out.extend_from_slice(&d.bytes()),
        other => {
            out.truncate(type_at);
            fallback(key, other, out)?;
        }
    }
    Ok(())
}

/// Rare types (regex, code, binary, timestamp, ...): the driver's encoder, spliced in.
fn fallback(key: &str, value: &Bson, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    let mut one = Document::new();
    one.insert(key, value.clone());
    let bytes = bson::to_vec(&one)
        .map_err(|e| EncodeError::Fallback { key: key.to_string(), source: Box::new(e) })?;
    // Drop the document's length prefix and trailing NUL: what is left is the element.
    out.extend_from_slice(&bytes[4..bytes.len() - 1]);
    Ok(())
}

/// Appends a string element.
pub(crate) fn string_element(key: &str, value: &str, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    out.push(0x02);
    cstring(key, out)?;
    string(value, out)
}

fn string(s: &str, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    let len = i32::try_from(s.len() + 1).map_err(|_| EncodeError::TooLarge)?;
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(s.as_bytes());
    out.push(0);
    Ok(())
}

/// Appends a key (a BSON C string).
pub(crate) fn cstring(s: &str, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    if s.as_bytes().contains(&0) {
        return Err(EncodeError::NulInKey(s.to_string()));
    }
    out.extend_from_slice(s.as_bytes());
    out.push(0);
    Ok(())
}

/// Starts a document: a length placeholder, patched by [`close`].
pub(crate) fn open(out: &mut Vec<u8>) -> usize {
    let start = out.len();
    out.extend_from_slice(&[0; 4]);
    start
}

/// Ends the document [`open`] started at `start`.
pub(crate) fn close(start: usize, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    out.push(0);
    let len = i32::try_from(out.len() - start).map_err(|_| EncodeError::TooLarge)?;
    out[start..start + 4].copy_from_slice(&len.to_le_bytes());
    Ok(())
}

/// Array indexes as keys, without an allocation per element.
fn itoa_buffer() -> IndexKey {
    IndexKey { buf: String::with_capacity(8) }
}

struct IndexKey {
    buf: String,
}

impl IndexKey {
    fn format(&mut self, i: usize) -> &str {
        use std::fmt::Write;
        self.buf.clear();
        // Writing to a String cannot fail.
        let _ = write!(self.buf, "{i}");
        &self.buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mongodb::bson::oid::ObjectId;
    use mongodb::bson::spec::BinarySubtype;
    use mongodb::bson::{Binary, DateTime, Decimal128, Regex, Timestamp, doc};

    fn every_type() -> Document {
        doc! {
            "double": 1.5, "string": "ü\u{0}x", "int32": 7_i32, "int64": -9_000_000_000_i64,
            "bool": true, "null": Bson::Null, "date": DateTime::from_millis(1_700_000_000_042),
            "oid": ObjectId::from_bytes([7; 12]),
            "decimal": Decimal128::from_bytes([3; 16]),
            "nested": { "a": [1_i32, "two", { "three": [] }, Bson::Null], "b": {} },
            "regex": Regex { pattern: "^a".into(), options: "i".into() },
            "binary": Binary { subtype: BinarySubtype::Generic, bytes: vec![1, 2, 3] },
            "timestamp": Timestamp { time: 5, increment: 6 },
            "code": Bson::JavaScriptCode("f()".into()),
            "symbol": Bson::Symbol("s".into()),
            "undefined": Bson::Undefined, "max": Bson::MaxKey, "min": Bson::MinKey,
        }
    }

    #[test]
    fn documents_encode_exactly_as_the_driver_does() {
        for doc in [Document::new(), doc! { "a": 1_i32 }, every_type()] {
            let mut ours = Vec::new();
            document(&doc, &mut ours).unwrap();
            assert_eq!(ours, bson::to_vec(&doc).unwrap(), "{doc}");
        }
    }

    #[test]
    fn the_update_command_is_the_documented_shape() {
        let filter = doc! { "customer_id": "C-1", "$or": [{ "n": { "$lte": 4_i64 } }] };
        let update = every_type();
        let u = to_raw(&update).unwrap();
        let concern = doc! { "w": "majority", "wtimeout": 10_000_i64 };
        let statements = [(&filter, &u), (&filter, &u)];
        let raw = update_command("pr_customers", statements.into_iter(), &concern).unwrap();
        let statement = doc! { "q": filter.clone(), "u": update.clone(), "upsert": true };
        let expected = doc! {
            "update": "pr_customers",
            "updates": [statement.clone(), statement.clone()],
            "ordered": false,
            "writeConcern": concern,
        };
        assert_eq!(raw.as_bytes(), bson::to_vec(&expected).unwrap());
        // No concern: the server's default, no element.
        let raw = update_command("pr_customers", statements.into_iter(), &doc! {}).unwrap();
        let expected = doc! {
            "update": "pr_customers",
            "updates": [statement.clone(), statement],
            "ordered": false,
        };
        assert_eq!(raw.as_bytes(), bson::to_vec(&expected).unwrap());
    }

    #[test]
    fn the_ordered_update_command_is_the_documented_shape() {
        let filter = doc! { "type": "sv_customers", "identifier": { "customerId": "C-7" } };
        let pipeline = vec![doc! { "$set": every_type() }, doc! { "$unset": "x" }];
        let statement = |u: &[Document]| doc! { "q": filter.clone(), "u": u, "upsert": true };
        let (first, second) = (statement(&pipeline), statement(&pipeline[..1]));
        let raw = [to_raw(&first).unwrap(), to_raw(&second).unwrap()];
        let concern = doc! { "w": 2, "wtimeout": 500_i64, "j": true };
        let command =
            ordered_update_command("fd-pc-crm", raw.iter().map(|r| r.as_ref()), &concern).unwrap();
        let expected = doc! {
            "update": "fd-pc-crm",
            "updates": [first, second],
            "ordered": true,
            "writeConcern": concern.clone(),
        };
        assert_eq!(command.as_bytes(), bson::to_vec(&expected).unwrap());
        let empty = ordered_update_command("c", std::iter::empty(), &doc! {}).unwrap();
        let expected = doc! { "update": "c", "updates": [], "ordered": true };
        assert_eq!(empty.as_bytes(), bson::to_vec(&expected).unwrap());
    }

    #[test]
    fn a_nul_in_a_key_is_an_error_not_a_panic() {
        let mut out = Vec::new();
        let err = document(&doc! { "a": { "b\u{0}c": 1_i32 } }, &mut out).unwrap_err();
        assert!(err.to_string().contains("NUL"), "{err}");
        let err = document(
            &doc! { "r": Regex { pattern: "a\u{0}".into(), options: String::new() } },
            &mut out,
        );
        assert!(err.is_err());
    }
}
