//! The Debezium adapter on records shaped as Debezium's documentation and connector test
//! fixtures show them (each test says where).

use serde_json::json;

use super::super::fixture::{change, code, obj, pk, record};
use super::*;
use crate::engine::cast::Cast;

const KEY: &str = r#"{"customer_id":"C-1"}"#;
const D1: &str = r#"{"before":null,"after":{"customer_id":"C-1","name":"Ada","age":36,"signup_at":"2023-01-15","vip":"true"},"source":{"connector":"postgresql","table":"customers"},"op":"c","ts_ms":1700000000000}"#;

fn dbz(key: Option<&str>, value: &str) -> Result<Adapted, AdapterError> {
    Debezium::default().adapt(record(key, Some(value)), &pk())
}

fn with(
    options: DebeziumOptions,
    key: Option<&str>,
    value: Option<&str>,
) -> Result<Adapted, AdapterError> {
    Debezium::new(options, vec![]).adapt(record(key, value), &pk())
}

fn unwrapped() -> DebeziumOptions {
    DebeziumOptions { format: DebeziumFormat::Unwrapped, ..DebeziumOptions::default() }
}

#[test]
fn d1_create_and_snapshot_read_are_inserts() {
    for op in ["c", "r"] {
        let c = change(dbz(Some(KEY), &D1.replace(r#""op":"c""#, &format!(r#""op":"{op}""#))));
        assert_eq!((c.op, c.position), (Op::Insert, None), "op {op}");
        assert_eq!(c.key, obj(json!({"customer_id": "C-1"})));
        assert_eq!(c.after.unwrap()["age"], json!(36));
    }
}

#[test]
fn d2_update_and_d3_delete() {
    let c = change(dbz(
        Some(KEY),
        r#"{"before":{"customer_id":"C-1","age":36},"after":{"customer_id":"C-1","name":"Ada","age":37},"op":"u"}"#,
    ));
    assert_eq!((c.op, c.before.unwrap()["age"].clone()), (Op::Update, json!(36)));
    let c = change(dbz(
        Some(KEY),
        r#"{"before":{"customer_id":"C-1","name":"Ada","age":37},"after":null,"op":"d"}"#,
    ));
    assert_eq!((c.op, c.after), (Op::Delete, None));
    assert_eq!(c.key, obj(json!({"customer_id": "C-1"})));
}

#[test]
fn schema_envelope_is_unwrapped() {
    let wrapped = format!(r#"{{"schema":{{"type":"struct"}},"payload":{D1}}}"#);
    assert_eq!(dbz(Some(KEY), &wrapped), dbz(Some(KEY), D1));
    let null_payload = r#"{"schema":{"type":"struct"},"payload":null}"#;
    assert_eq!(dbz(Some(KEY), null_payload), Ok(Adapted::Skip(Skip::Tombstone)));
}

#[test]
fn skips_tombstones_and_truncates() {
    // docs/vectors.md #28 and #29.
    let adapter = Debezium::default();
    assert_eq!(adapter.adapt(record(Some(KEY), None), &pk()), Ok(Adapted::Skip(Skip::Tombstone)));
    assert_eq!(
        adapter.adapt(record(Some(KEY), Some("")), &pk()),
        Ok(Adapted::Skip(Skip::Tombstone))
    );
    let truncate = r#"{"before":null,"after":null,"op":"t"}"#;
    assert_eq!(dbz(None, truncate), Ok(Adapted::Skip(Skip::Truncate)));
    // The PostgreSQL connector's documented truncate event: no key, no before/after.
    let documented = r#"{"source":{"version":"2.4.0.Final","connector":"postgresql","name":"PostgreSQL_server","ts_ms":1559033904863,"snapshot":"false","db":"postgres","schema":"public","table":"customers","txId":556,"lsn":46523128},"op":"t","ts_ms":1559033904961}"#;
    assert_eq!(dbz(None, documented), Ok(Adapted::Skip(Skip::Truncate)));
    assert_eq!(with(unwrapped(), None, Some(documented)), Ok(Adapted::Skip(Skip::Truncate)));
}

#[test]
fn pk_change_and_delete_by_key() {
    // docs/vectors.md #30 (the key is the new row's) and #31.
    let c = change(dbz(
        Some(r#"{"customer_id":"C-9"}"#),
        r#"{"before":{"customer_id":"C-1"},"after":{"customer_id":"C-9","name":"x"},"op":"u"}"#,
    ));
    assert_eq!(c.key, obj(json!({"customer_id": "C-9"})));
    assert_eq!(c.before.unwrap()["customer_id"], json!("C-1"));
    let c = change(dbz(Some(KEY), r#"{"before":null,"after":null,"op":"d"}"#));
    assert_eq!((c.op, c.key), (Op::Delete, obj(json!({"customer_id": "C-1"}))));
}

#[test]
fn missing_op_is_inferred() {
    // docs/vectors.md #32.
    let c = change(dbz(None, r#"{"before":null,"after":{"customer_id":"C-4"}}"#));
    assert_eq!(c.op, Op::Insert);
    let c = change(dbz(None, r#"{"before":{"customer_id":"C-4"},"after":{"customer_id":"C-4"}}"#));
    assert_eq!(c.op, Op::Update);
    let c = change(dbz(None, r#"{"before":{"customer_id":"C-4"}}"#));
    assert_eq!(c.op, Op::Delete);
    assert_eq!(code(dbz(Some(KEY), r#"{"before":null,"after":null}"#)), "MALFORMED_VALUE");
}

#[test]
fn pk_fields_missing_from_the_image_come_from_the_key() {
    let c = change(dbz(Some(KEY), r#"{"after":{"name":"no pk here"},"op":"u"}"#));
    assert_eq!(c.key, obj(json!({"customer_id": "C-1"})));
}

#[test]
fn edge_cases() {
    let cases = [
        (Some(KEY), r#"{"after":{"customer_id":"C-1"},"op":"x"}"#, "UNKNOWN_OPERATION"),
        (Some(KEY), r#"{"after":{"customer_id":"C-1"},"op":7}"#, "UNKNOWN_OPERATION"),
        (Some(KEY), r#"{"before":null,"after":null,"op":"c"}"#, "MALFORMED_VALUE"),
        (Some(KEY), r#"{"after":"x","op":"c"}"#, "MALFORMED_VALUE"),
        (Some(KEY), r#"{"schema":{},"payload":5}"#, "MALFORMED_VALUE"),
        (None, r#"{"before":null,"after":null,"op":"d"}"#, "MISSING_PRIMARY_KEY"),
        (Some(r#"{"other":1}"#), r#"{"after":{"name":"x"},"op":"c"}"#, "MISSING_PRIMARY_KEY"),
        (Some("C-1"), r#"{"after":{"name":"x"},"op":"c"}"#, "MALFORMED_KEY"),
    ];
    for (key, value, expected) in cases {
        assert_eq!(code(dbz(key, value)), expected, "key {key:?} value {value}");
    }
    // A key that is not JSON does not matter when the image has the primary key.
    assert!(dbz(Some("C-1"), D1).is_ok());
}

/// Debezium's contract: the key is the primary key. A row image that disagrees is refused
/// rather than written under either key; a `message.key.columns` key without the primary-key
/// fields leaves them to the image.
#[test]
fn the_key_is_the_primary_key() {
    let err = dbz(Some(r#"{"customer_id":"C-2"}"#), D1).unwrap_err();
    assert_eq!(
        err.to_string(),
        r#"KEY_MISMATCH: field "customer_id" is "C-2" in the key but "C-1" in the value"#
    );
    let delete = r#"{"before":{"customer_id":"C-1"},"after":null,"op":"d"}"#;
    assert_eq!(code(dbz(Some(r#"{"customer_id":"C-2"}"#), delete)), "KEY_MISMATCH");
    let c = change(dbz(Some(r#"{"region":"EU"}"#), D1));
    assert_eq!(c.key, obj(json!({"customer_id": "C-1"})));
    // Key and image agree once cast: an integer key column and a string image value.
    let id = PrimaryKey(vec![("id".to_string(), Cast::ToString)]);
    let c = change(
        Debezium::default()
            .adapt(record(Some(r#"{"id":7}"#), Some(r#"{"after":{"id":"7"},"op":"c"}"#)), &id),
    );
    assert_eq!(c.key, obj(json!({"id": 7})));
    // A primary-key update as the relational connectors emit it: a delete under the old key,
    // its tombstone, then a create under the new key (Debezium's RelationalChangeRecordEmitter).
    let old = r#"{"customer_id":"C-1"}"#;
    let new = r#"{"customer_id":"C-9"}"#;
    let d = change(dbz(
        Some(old),
        r#"{"before":{"customer_id":"C-1","name":"Ada"},"after":null,"op":"d"}"#,
    ));
    assert_eq!((d.op, d.key), (Op::Delete, obj(json!({"customer_id": "C-1"}))));
    assert_eq!(
        Debezium::default().adapt(record(Some(old), None), &pk()),
        Ok(Adapted::Skip(Skip::Tombstone))
    );
    let c = change(dbz(
        Some(new),
        r#"{"before":null,"after":{"customer_id":"C-9","name":"Ada"},"op":"c"}"#,
    ));
    assert_eq!((c.op, c.key), (Op::Insert, obj(json!({"customer_id": "C-9"}))));
}

/// Logical types decoded from the record's own schema (`schemas.enable=true`). Field schemas
/// as Debezium's documentation (Debezium Server, Redis sink example: SQL Server `emp`) and
/// PostgreSQL connector output (Debezium 2.2 `numeric` columns; Debezium 1.9 `ts`, `d`, `t`)
/// show them; values decoded by hand: `dzWUAA==` is 2000000000 (scale 4), `B1vNFQ==` is
/// 123456789 (scale 3), `AN3h` is 56801 (scale 2).
#[test]
fn logical_types_are_decoded_from_the_schema() {
    let schema = json!({"type": "struct", "name": "dbserver1.public.customers.Envelope", "fields": [
        {"type": "struct", "optional": true, "field": "before", "fields": []},
        {"type": "struct", "optional": true, "name": "dbserver1.public.customers.Value", "field": "after", "fields": [
            {"type": "string", "optional": false, "field": "customer_id"},
            {"type": "int64", "optional": true, "name": "io.debezium.time.Timestamp", "version": 1, "field": "hiredate"},
            {"type": "bytes", "optional": true, "name": "org.apache.kafka.connect.data.Decimal", "version": 1,
             "parameters": {"scale": "4", "connect.decimal.precision": "19"}, "field": "sal"},
            {"type": "struct", "optional": true, "name": "io.debezium.data.VariableScaleDecimal", "version": 1,
             "doc": "Variable scaled decimal", "field": "numeric_test",
             "fields": [{"type": "int32", "optional": false, "field": "scale"}, {"type": "bytes", "optional": false, "field": "value"}]},
            {"type": "bytes", "optional": true, "name": "org.apache.kafka.connect.data.Decimal", "version": 1,
             "parameters": {"scale": "2", "connect.decimal.precision": "5"}, "field": "numeric_5_2"},
            {"type": "bytes", "optional": true, "name": "org.apache.kafka.connect.data.Decimal", "version": 1,
             "parameters": {"scale": "0"}, "field": "number_10"},
            {"type": "int64", "optional": true, "name": "io.debezium.time.MicroTimestamp", "version": 1, "field": "ts"},
            {"type": "int32", "optional": true, "name": "io.debezium.time.Date", "version": 1, "field": "d"},
            {"type": "int32", "optional": true, "name": "org.apache.kafka.connect.data.Date", "version": 1, "field": "cd"},
            {"type": "int64", "optional": true, "name": "io.debezium.time.MicroTime", "version": 1, "field": "t"},
            {"type": "int32", "optional": true, "name": "io.debezium.time.Time", "version": 1, "field": "t_ms"},
            {"type": "int64", "optional": true, "name": "io.debezium.time.NanoTime", "version": 1, "field": "t_ns"},
            {"type": "int64", "optional": true, "name": "io.debezium.time.NanoTimestamp", "version": 1, "field": "ts_ns"},
            {"type": "int64", "optional": true, "name": "org.apache.kafka.connect.data.Timestamp", "version": 1, "field": "cts"},
            {"type": "string", "optional": true, "name": "io.debezium.time.ZonedTimestamp", "version": 1, "field": "zts"},
            {"type": "string", "optional": true, "name": "io.debezium.time.ZonedTime", "version": 1, "field": "zt"},
            {"type": "string", "optional": true, "name": "io.debezium.data.Json", "version": 1, "field": "doc"},
            {"type": "string", "optional": true, "name": "io.debezium.data.Uuid", "version": 1, "field": "uid"},
            {"type": "bytes", "optional": true, "name": "io.debezium.data.Bits", "version": 1, "parameters": {"length": "16"}, "field": "flags"},
            {"type": "int32", "optional": true, "name": "io.debezium.time.Date", "version": 1, "field": "null_date"},
            {"type": "array", "optional": true, "field": "dates", "items": {"type": "int32", "name": "io.debezium.time.Date"}},
        ]},
        {"type": "string", "optional": false, "field": "op"},
    ]});
    let payload = json!({"before": null, "op": "c", "after": {
        "customer_id": "C-1", "hiredate": 1562630400000_i64, "sal": "dzWUAA==",
        "numeric_test": {"scale": 3, "value": "B1vNFQ=="}, "numeric_5_2": "AN3h", "number_10": "MDk=",
        "ts": 1665791731989360_i64, "d": 19279, "cd": 19279, "t": 86131989360_i64, "t_ms": 37230123,
        "t_ns": 37230123456789_i64, "ts_ns": 1665791731989360123_i64, "cts": 1665791731989_i64,
        "zts": "2018-06-20T13:37:03.123456789Z", "zt": "13:37:03Z", "doc": "{\"a\":[1,2]}",
        "uid": "b68a35a7-17ad-35b3-af2a-ae46edb4545a", "flags": "AgE=", "null_date": null, "dates": [0, 19279],
    }});
    let value = json!({"schema": schema, "payload": payload}).to_string();
    let after = change(dbz(Some(KEY), &value)).after.unwrap();
    let expected = json!({
        "customer_id": "C-1", "hiredate": "2019-07-09T00:00:00.000", "sal": "200000.0000",
        "numeric_test": "123456.789", "numeric_5_2": "568.01", "number_10": 12345,
        "ts": "2022-10-14T23:55:31.989360", "d": "2022-10-14", "cd": "2022-10-14", "t": "23:55:31.989360",
        "t_ms": "10:20:30.123", "t_ns": "10:20:30.123456789", "ts_ns": "2022-10-14T23:55:31.989360123",
        "cts": "2022-10-14T23:55:31.989", "zts": "2018-06-20T13:37:03.123456789Z", "zt": "13:37:03Z",
        "doc": {"a": [1, 2]}, "uid": "b68a35a7-17ad-35b3-af2a-ae46edb4545a", "flags": 258,
        "null_date": null, "dates": ["1970-01-01", "2022-10-14"],
    });
    assert_eq!(Value::Object(after), expected);
    // Decoded values cast as a projection wants them: the date is a date, never 19279 ms.
    assert_eq!(
        Cast::ToDate.apply(&json!("2022-10-14")),
        Ok(mongodb::bson::Bson::DateTime(mongodb::bson::DateTime::from_millis(1_665_705_600_000)))
    );
    assert_eq!(
        Cast::ToDecimal128.apply(&json!("200000.0000")).map(|b| b.to_string()),
        Ok("200000.0000".to_string())
    );
}

#[test]
fn a_value_that_breaks_its_schema_is_malformed_with_its_path() {
    let value = |v: Value| {
        json!({"schema": {"type": "struct", "fields": [{"type": "struct", "field": "after", "fields": [
            {"type": "int32", "name": "io.debezium.time.Date", "field": "signup_at"}]}]},
            "payload": {"op": "c", "after": {"customer_id": "C-1", "signup_at": v}}})
        .to_string()
    };
    let err = dbz(Some(KEY), &value(json!("2023-01-15"))).unwrap_err();
    assert_eq!(
        err.to_string(),
        r#"MALFORMED_VALUE: after.signup_at: io.debezium.time.Date "2023-01-15" is not an integer"#
    );
    assert_eq!(code(dbz(Some(KEY), &value(json!(200_000_000)))), "MALFORMED_VALUE");
}

/// A key written with its schema (JsonConverter `key.converter.schemas.enable=true`), as in the
/// connectors' "verifying the deployment" documentation.
#[test]
fn a_key_with_its_schema_is_unwrapped_and_decoded() {
    let pk = PrimaryKey(vec![("product_id".to_string(), Cast::ToInteger)]);
    let key = r#"{"schema":{"type":"struct","fields":[{"type":"int32","optional":false,"field":"product_id"}],"optional":false,"name":"inventory-connector-mysql.inventory.products_on_hand.Key"},"payload":{"product_id":101}}"#;
    let adapter = Debezium::default();
    let c = change(adapter.adapt(
        record(
            Some(key),
            Some(r#"{"before":{"product_id":101,"quantity":3},"after":null,"op":"d"}"#),
        ),
        &pk,
    ));
    assert_eq!((c.op, c.key), (Op::Delete, obj(json!({"product_id": 101}))));
    // A date key column is decoded too: the unwrapped format's tombstone deletes by it.
    let pk = PrimaryKey(vec![("day".to_string(), Cast::ToString)]);
    let key = r#"{"schema":{"type":"struct","fields":[{"type":"int32","name":"io.debezium.time.Date","field":"day"}]},"payload":{"day":19279}}"#;
    let c = change(Debezium::new(unwrapped(), vec![]).adapt(record(Some(key), None), &pk));
    assert_eq!((c.op, c.key), (Op::Delete, obj(json!({"day": "2022-10-14"}))));
}

/// `__debezium_unavailable_value`: PostgreSQL's unchanged TOAST columns and Oracle's unchanged
/// LOBs (connector docs, `unavailable.value.placeholder`): text as the placeholder, bytea /
/// BLOB as base64 of its bytes, text[] as a one-element array, int[] as its bytes.
#[test]
fn unavailable_value_placeholders_leave_the_field_unwritten() {
    let update = r#"{"before":null,"after":{"customer_id":"C-1","name":"Ada","bio":"__debezium_unavailable_value","photo":"X19kZWJleml1bV91bmF2YWlsYWJsZV92YWx1ZQ==","tags":["__debezium_unavailable_value"],"codes":[95,95,100,101,98,101,122,105,117,109,95,117,110,97,118,97,105,108,97,98,108,101,95,118,97,108,117,101]},"op":"u"}"#;
    let c = change(dbz(Some(KEY), update));
    assert_eq!(c.after, Some(obj(json!({"customer_id": "C-1", "name": "Ada"}))));
    // A configured placeholder, and the hex form the connectors accept.
    for placeholder in ["UNCHANGED", "hex:554e4348414e474544"] {
        let options = DebeziumOptions {
            unavailable_value_placeholder: placeholder.to_string(),
            ..DebeziumOptions::default()
        };
        let c = change(with(
            options,
            Some(KEY),
            Some(
                r#"{"after":{"customer_id":"C-1","bio":"UNCHANGED","name":"__debezium_unavailable_value"},"op":"u"}"#,
            ),
        ));
        assert_eq!(
            c.after,
            Some(obj(json!({"customer_id": "C-1", "name": "__debezium_unavailable_value"}))),
            "{placeholder}"
        );
    }
    // In a schema'd record the placeholder is removed before decoding (it is not JSON text).
    let value = json!({"schema": {"type": "struct", "fields": [{"type": "struct", "field": "after", "fields": [
        {"type": "string", "name": "io.debezium.data.Json", "field": "doc"}]}]},
        "payload": {"op": "u", "after": {"customer_id": "C-1", "doc": "__debezium_unavailable_value"}}});
    assert_eq!(
        change(dbz(Some(KEY), &value.to_string())).after,
        Some(obj(json!({"customer_id": "C-1"})))
    );
}

/// `ExtractNewRecordState` rows (Debezium "New Record State Extraction" documentation):
/// `add.fields=op,source.ts_ms,lsn` gives `__op`, `__source_ts_ms`, `__lsn`; rewrite mode
/// marks a delete with the string `__deleted: "true"` on the before row; the default mode
/// turns a delete into a tombstone (with schemas: a null payload).
#[test]
fn unwrapped_rows() {
    let row = r#"{"customer_id":"C-1","name":"Ada","__op":"c","__source_ts_ms":1700000000000,"__lsn":46523128,"__deleted":"false"}"#;
    let c = change(with(unwrapped(), Some(KEY), Some(row)));
    assert_eq!((c.op, c.position), (Op::Insert, None));
    assert_eq!(
        c.after,
        Some(obj(json!({"customer_id": "C-1", "name": "Ada"}))),
        "added fields dropped"
    );
    let deleted = r#"{"customer_id":"C-1","name":"Ada","__op":"d","__deleted":"true"}"#;
    let c = change(with(unwrapped(), Some(KEY), Some(deleted)));
    assert_eq!((c.op, c.after.clone()), (Op::Delete, None));
    assert_eq!(c.before, Some(obj(json!({"customer_id": "C-1", "name": "Ada"}))));
    // __deleted alone (no __op field) and as a boolean.
    for value in
        [r#"{"customer_id":"C-1","__deleted":"true"}"#, r#"{"customer_id":"C-1","__deleted":true}"#]
    {
        assert_eq!(change(with(unwrapped(), None, Some(value))).op, Op::Delete, "{value}");
    }
    let update = change(with(unwrapped(), Some(KEY), Some(r#"{"customer_id":"C-1","__op":"u"}"#)));
    assert_eq!(update.op, Op::Update);
    let plain = change(with(unwrapped(), Some(KEY), Some(r#"{"customer_id":"C-1","name":"Bo"}"#)));
    assert_eq!(plain.op, Op::Upsert, "no __op: the row is written whatever it was");
    for tombstone in [None, Some(r#"{"schema":{"type":"struct","fields":[]},"payload":null}"#)] {
        let c = change(with(unwrapped(), Some(KEY), tombstone));
        assert_eq!(
            (c.op, c.key),
            (Op::Delete, obj(json!({"customer_id": "C-1"}))),
            "{tombstone:?}"
        );
    }
    assert_eq!(code(with(unwrapped(), None, None)), "MISSING_PRIMARY_KEY");
    assert_eq!(
        code(with(unwrapped(), Some(KEY), Some(r#"{"customer_id":"C-1","__op":"x"}"#))),
        "UNKNOWN_OPERATION"
    );
    // A mapped added field is kept; another prefix.
    let kept = Debezium::new(unwrapped(), vec!["__source_ts_ms".to_string()])
        .adapt(record(Some(KEY), Some(row)), &pk());
    assert_eq!(change(kept).after.unwrap().get("__source_ts_ms"), Some(&json!(1700000000000_i64)));
    let options = DebeziumOptions { added_fields_prefix: "dbz_".to_string(), ..unwrapped() };
    let c = change(with(
        options,
        Some(KEY),
        Some(r#"{"customer_id":"C-1","dbz_op":"d","dbz_deleted":"true","__op":"kept"}"#),
    ));
    assert_eq!((c.op, c.before.unwrap().get("__op").cloned()), (Op::Delete, Some(json!("kept"))));
}

#[test]
fn counters_from_the_source_block_or_the_added_fields() {
    let counter = |counter| DebeziumOptions { counter, ..DebeziumOptions::default() };
    let envelope = r#"{"after":{"customer_id":"C-1"},"op":"u","source":{"ts_ms":1700000000123,"lsn":46523128,"scn":"2198765"},"ts_ms":1700000000999}"#;
    assert_eq!(
        change(with(counter(DebeziumCounter::SourceTimestamp), Some(KEY), Some(envelope))).position,
        Some(1_700_000_000_123)
    );
    assert_eq!(
        change(with(counter(DebeziumCounter::Lsn), Some(KEY), Some(envelope))).position,
        Some(46_523_128)
    );
    assert_eq!(
        change(with(counter(DebeziumCounter::Scn), Some(KEY), Some(envelope))).position,
        Some(2_198_765)
    );
    // Legacy MySQL (Debezium 0.7.4, debezium-examples kinesis README): source.ts_sec, seconds.
    let legacy = r#"{"before":null,"after":{"customer_id":"C-1"},"source":{"version":"0.7.4","name":"kinesis","server_id":223344,"ts_sec":1465581,"gtid":null,"file":"mysql-bin.000003","pos":154,"row":0,"snapshot":false,"thread":null,"db":"inventory","table":"customers"},"op":"c","ts_ms":1520513267424}"#;
    assert_eq!(
        change(with(counter(DebeziumCounter::SourceTimestamp), Some(KEY), Some(legacy))).position,
        Some(1_465_581_000)
    );
    let err = with(counter(DebeziumCounter::Lsn), Some(KEY), Some(legacy)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "MALFORMED_VALUE: source.lsn is missing; adapter.debezium.counter needs it in every record"
    );
    let row = r#"{"customer_id":"C-1","__source_ts_ms":1700000000123,"__lsn":"46523128"}"#;
    let u = |c| DebeziumOptions { counter: c, ..unwrapped() };
    assert_eq!(
        change(with(u(DebeziumCounter::SourceTimestamp), Some(KEY), Some(row))).position,
        Some(1_700_000_000_123)
    );
    assert_eq!(
        change(with(u(DebeziumCounter::Lsn), Some(KEY), Some(row))).position,
        Some(46_523_128)
    );
    let err = with(u(DebeziumCounter::Scn), Some(KEY), Some(row)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "MALFORMED_VALUE: __scn is missing; adapter.debezium.counter needs it in every record"
    );
}

/// Records Debezium writes besides row changes (connector docs: "Transaction metadata",
/// "Schema change topic"; the heartbeat's `{"ts_ms": ..}` value), skipped with their reason
/// when they reach a projection's topic.
#[test]
fn control_records_are_skipped_with_their_reason() {
    let cases = [
        (
            r#"{"status":"BEGIN","id":"571:53195829","ts_ms":1486500577125,"event_count":null,"data_collections":null}"#,
            Skip::TransactionMarker,
        ),
        (
            r#"{"status":"END","id":"571:53195832","ts_ms":1486500577691,"event_count":2,"data_collections":[{"data_collection":"s1.a","event_count":1},{"data_collection":"s2.a","event_count":1}]}"#,
            Skip::TransactionMarker,
        ),
        (
            r#"{"source":{"version":"2.4.0.Final","connector":"mysql","name":"mysql","ts_ms":0,"snapshot":"false","db":"inventory"},"databaseName":"inventory","schemaName":null,"ddl":"ALTER TABLE customers ADD middle_name varchar(255) AFTER first_name","tableChanges":[{"type":"ALTER","id":"\"inventory\".\"customers\"","table":{"defaultCharsetName":"utf8mb4","primaryKeyColumnNames":["id"],"columns":[]}}]}"#,
            Skip::SchemaChange,
        ),
        (r#"{"ts_ms":1588252618953}"#, Skip::Heartbeat),
    ];
    for (value, skip) in cases {
        assert_eq!(
            dbz(Some(r#"{"databaseName":"inventory"}"#), value),
            Ok(Adapted::Skip(skip)),
            "{value}"
        );
        assert_eq!(
            with(unwrapped(), None, Some(value)),
            Ok(Adapted::Skip(skip)),
            "unwrapped {value}"
        );
        let wrapped = format!(r#"{{"schema":{{"type":"struct"}},"payload":{value}}}"#);
        assert_eq!(dbz(None, &wrapped), Ok(Adapted::Skip(skip)), "with schema {value}");
    }
    // A row that merely has a status column is a row.
    let row = r#"{"customer_id":"C-1","status":"BEGIN","id":"x"}"#;
    assert!(matches!(with(unwrapped(), Some(KEY), Some(row)), Ok(Adapted::Change(_))));
}
