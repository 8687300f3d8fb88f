//! The change events of the operator examples (`examples/operator/<format>/`), each in its
//! System of Record's own wire format, and how they are produced to Kafka. Shared by the
//! generator (`cargo run --example generate_events`) and the integration test that checks the
//! projections they lead to against each example's `expected-projections.json`
//! (`tests/integration/operator_examples.rs`). Deterministic: the same records every run.

use std::collections::BTreeSet;
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::KafkaError;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;
use serde_json::{Value, json};

/// The CDC formats of the examples, named as their directories under `examples/operator/`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Debezium (PostgreSQL connector, JSON converter without schemas).
    Debezium,
    /// IBM InfoSphere Data Replication for DB2, KCOP `KcopJsonFormatIntegrated` (docs/formats.md#ibm-iidr-basic-alias-db2).
    Iidr,
    /// Oracle GoldenGate for Big Data, Kafka handler with the JSON formatter (docs/formats.md#oracle-goldengate-goldengate).
    GoldenGate,
}

impl Format {
    /// Every format.
    pub const ALL: [Format; 3] = [Format::Debezium, Format::Iidr, Format::GoldenGate];

    /// The example directory's name, which is also the generator's `--format` value.
    pub fn name(self) -> &'static str {
        match self {
            Format::Debezium => "debezium",
            Format::Iidr => "iidr",
            Format::GoldenGate => "golden-gate",
        }
    }

    /// The format named `name` ([`Format::name`]).
    pub fn parse(name: &str) -> Option<Format> {
        Format::ALL.into_iter().find(|f| f.name() == name)
    }
}

/// One Kafka record: the topic as the example's SystemOfRecord names it, key and value (`None`
/// is a null key or value, e.g. a delete in IIDR or a Debezium tombstone).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The topic, without the generator's `--topic-prefix`.
    pub topic: &'static str,
    /// The key bytes (UTF-8).
    pub key: Option<String>,
    /// The value bytes (UTF-8 JSON).
    pub value: Option<String>,
}

fn record(topic: &'static str, key: Option<String>, value: Option<Value>) -> Record {
    Record { topic, key, value: value.map(|v| v.to_string()) }
}

/// The records of `format`'s example, in the order they are produced.
pub fn records(format: Format) -> Vec<Record> {
    match format {
        Format::Debezium => debezium(),
        Format::Iidr => iidr(),
        Format::GoldenGate => golden_gate(),
    }
}

/// The topics `format`'s records go to, in the order they are first used.
pub fn topics(format: Format) -> Vec<&'static str> {
    let mut seen = BTreeSet::new();
    records(format).into_iter().map(|r| r.topic).filter(|t| seen.insert(*t)).collect()
}

// ---------------------------------------------------------------------------------------------
// Debezium: PostgreSQL tables public.customers and public.orders of the crm database.

const DBZ_CUSTOMERS: &str = "acme.dev.crm.customers.ingestion";
const DBZ_ORDERS: &str = "acme.dev.crm.orders.ingestion";

/// A Debezium envelope; `n` orders the source timestamps and LSNs.
fn envelope(table: &str, op: &str, before: Value, after: Value, n: u64) -> Value {
    let ts = 1_717_200_000_000 + n * 1_000;
    json!({
        "before": before,
        "after": after,
        "source": {
            "version": "2.7.3.Final", "connector": "postgresql", "name": "crm",
            "ts_ms": ts, "snapshot": if op == "r" { "true" } else { "false" },
            "db": "crm", "schema": "public", "table": table, "lsn": 24_023_128 + n * 512
        },
        "op": op,
        "ts_ms": ts + 7
    })
}

fn debezium() -> Vec<Record> {
    let customer = |id: &str, name: &str, email: Value| json!({ "customer_id": id, "name": name, "email": email });
    // decimal.handling.mode=string: NUMERIC(10,2) arrives as a string, cast to a number.
    let order = |id: &str, customer: &str, total: &str| json!({ "order_id": id, "customer_id": customer, "total": total });
    let ada = customer("C-1", "Ada Lovelace", json!("ada@example.com"));
    let grace = customer("C-2", "Grace Hopper", json!("grace@example.com"));
    let o100 = order("O-100", "C-1", "120.50");
    let o101 = order("O-101", "C-3", "15.00");
    let c = |id: &str, value: Value| {
        record(DBZ_CUSTOMERS, Some(json!({ "customer_id": id }).to_string()), Some(value))
    };
    let o = |id: &str, value: Value| {
        record(DBZ_ORDERS, Some(json!({ "order_id": id }).to_string()), Some(value))
    };
    vec![
        // The initial snapshot: op "r" (read), inserted like "c".
        c("C-1", envelope("customers", "r", Value::Null, ada.clone(), 1)),
        c("C-2", envelope("customers", "r", Value::Null, grace.clone(), 2)),
        // Streaming: inserts, an update with its before image, a delete and its tombstone.
        c(
            "C-3",
            envelope("customers", "c", Value::Null, customer("C-3", "Alan Turing", Value::Null), 3),
        ),
        o("O-100", envelope("orders", "c", Value::Null, o100.clone(), 4)),
        o("O-101", envelope("orders", "c", Value::Null, o101.clone(), 5)),
        c(
            "C-1",
            envelope(
                "customers",
                "u",
                ada,
                customer("C-1", "Ada Lovelace", json!("ada.lovelace@example.com")),
                6,
            ),
        ),
        o("O-100", envelope("orders", "u", o100, order("O-100", "C-1", "99.90"), 7)),
        c("C-2", envelope("customers", "d", grace, Value::Null, 8)),
        // The tombstone Debezium writes after a delete (for log compaction): skipped.
        record(DBZ_CUSTOMERS, Some(json!({ "customer_id": "C-2" }).to_string()), None),
        o("O-101", envelope("orders", "d", o101, Value::Null, 9)),
        c(
            "C-4",
            envelope(
                "customers",
                "c",
                Value::Null,
                customer("C-4", "Edsger Dijkstra", json!("ewd@example.com")),
                10,
            ),
        ),
    ]
}

// ---------------------------------------------------------------------------------------------
// IIDR: DB2 tables CORE.CUSTOMERS and CORE.ACCOUNTS of a core-banking system.

const IIDR_CUSTOMERS: &str = "acme.dev.bank.core.customers";
const IIDR_ACCOUNTS: &str = "acme.dev.bank.core.accounts";

fn iidr() -> Vec<Record> {
    // The whole row after the change; LAST_UPD_USER is a column no projection keeps.
    let customer = |no: &str, name: &str, birth: &str, segment: &str| {
        json!({ "CUSTOMER_NO": no, "FULL_NAME": name, "BIRTH_DATE": birth, "SEGMENT": segment,
                "LAST_UPD_USER": "BATCH01" })
    };
    // DECIMAL(15,2) arrives as a string: castToFloat.
    let account = |iban: &str, no: &str, balance: &str, opened: &str| {
        json!({ "ACCOUNT_NO": iban, "CUSTOMER_NO": no, "BALANCE": balance, "CURRENCY": "EUR",
                "OPENED_ON": opened, "LAST_UPD_USER": "CICS" })
    };
    let key = |column: &str, value: &str| Some(json!({ column: value }).to_string());
    let c = |no: &str, row: Option<Value>| record(IIDR_CUSTOMERS, key("CUSTOMER_NO", no), row);
    let a = |iban: &str, row: Option<Value>| record(IIDR_ACCOUNTS, key("ACCOUNT_NO", iban), row);
    const IBAN_1: &str = "IT60X0542811101000000123456";
    const IBAN_2: &str = "IT02A0301503200000003517230";
    vec![
        c("0001001", Some(customer("0001001", "MARIO ROSSI", "1971-04-12", "RETAIL"))),
        c("0001002", Some(customer("0001002", "GIULIA BIANCHI", "1985-09-30", "PRIVATE"))),
        // A key may be empty: the primary key is then read from the row.
        record(
            IIDR_CUSTOMERS,
            Some(String::new()),
            Some(customer("0001003", "LUCA VERDI", "1990-01-05", "RETAIL")),
        ),
        a(IBAN_1, Some(account(IBAN_1, "0001001", "1500.00", "2019-06-01"))),
        a(IBAN_2, Some(account(IBAN_2, "0001002", "320.75", "2021-02-15"))),
        // No operation in the format: an update is the whole new row, like an insert.
        c("0001001", Some(customer("0001001", "MARIO ROSSI", "1971-04-12", "PRIVATE"))),
        a(IBAN_1, Some(account(IBAN_1, "0001001", "1380.00", "2019-06-01"))),
        // A delete is the key with a null value.
        a(IBAN_2, None),
        c("0001002", None),
    ]
}

// ---------------------------------------------------------------------------------------------
// GoldenGate: Oracle tables ERP.CUSTOMERS and ERP.ORDERS, one trail, so `pos` grows across
// both topics.

const OGG_CUSTOMERS: &str = "acme.dev.erp.ogg.customers";
const OGG_ORDERS: &str = "acme.dev.erp.ogg.orders";

/// A GoldenGate JSON record; `n` is the trail position (also the operation's time).
fn ogg(table: &str, op: &str, before: Option<Value>, after: Option<Value>, n: u64) -> Value {
    let mut value = json!({
        "table": table,
        "op_type": op,
        "op_ts": format!("2024-06-01 09:{:02}:{:02}.000000", n / 60, n % 60),
        "current_ts": format!("2024-06-01T09:{:02}:{:02}.412000", n / 60, n % 60),
        "pos": format!("{:020}", 20_000_000_000 + n * 1_000),
    });
    if let Some(before) = before {
        value["before"] = before;
    }
    if let Some(after) = after {
        value["after"] = after;
    }
    value
}

fn golden_gate() -> Vec<Record> {
    let customer = |id: &str, name: &str, email: &str, country: &str| json!({ "CUSTOMER_ID": id, "NAME": name, "EMAIL": email, "COUNTRY": country });
    let order = |id: u64, customer: &str, status: &str, amount: f64, date: &str| {
        json!({ "ORDER_ID": id, "CUSTOMER_ID": customer, "STATUS": status, "AMOUNT": amount,
                "ORDER_DATE": date })
    };
    let ada = customer("C-1", "Ada Lovelace", "ada@example.com", "UK");
    let grace = customer("C-2", "Grace Hopper", "grace@example.com", "US");
    let turing = customer("C-3", "Alan Turing", "alan@example.com", "UK");
    let o5002 = order(5002, "C-2", "NEW", 99.9, "2024-06-01");
    // The key is the primary key's value; the adapter reads the key from the images.
    let c = |id: &str, value: Value| record(OGG_CUSTOMERS, Some(id.to_string()), Some(value));
    let o = |id: u64, value: Value| record(OGG_ORDERS, Some(id.to_string()), Some(value));
    let insert_ada = c("C-1", ogg("ERP.CUSTOMERS", "I", None, Some(ada), 1));
    vec![
        insert_ada.clone(),
        c("C-2", ogg("ERP.CUSTOMERS", "I", None, Some(grace.clone()), 2)),
        o(
            5001,
            ogg("ERP.ORDERS", "I", None, Some(order(5001, "C-1", "NEW", 250.5, "2024-05-31")), 3),
        ),
        o(5002, ogg("ERP.ORDERS", "I", None, Some(o5002.clone()), 4)),
        // Compressed update: only the key and the changed columns, before and after.
        c(
            "C-1",
            ogg(
                "ERP.CUSTOMERS",
                "U",
                Some(json!({ "CUSTOMER_ID": "C-1", "EMAIL": "ada@example.com" })),
                Some(json!({ "CUSTOMER_ID": "C-1", "EMAIL": "ada.lovelace@example.com" })),
                5,
            ),
        ),
        o(
            5001,
            ogg(
                "ERP.ORDERS",
                "U",
                Some(json!({ "ORDER_ID": 5001, "STATUS": "NEW" })),
                Some(json!({ "ORDER_ID": 5001, "STATUS": "SHIPPED" })),
                6,
            ),
        ),
        // A primary-key update: C-2 becomes C-20 (the old document is deleted).
        c(
            "C-20",
            ogg(
                "ERP.CUSTOMERS",
                "U",
                Some(grace),
                Some(customer("C-20", "Grace Hopper", "grace@example.com", "US")),
                7,
            ),
        ),
        c("C-3", ogg("ERP.CUSTOMERS", "I", None, Some(turing.clone()), 8)),
        c("C-3", ogg("ERP.CUSTOMERS", "D", Some(turing), None, 9)),
        o(5002, ogg("ERP.ORDERS", "D", Some(o5002), None, 10)),
        // A replicat restarted from an older checkpoint sends C-1's insert again: its pos is
        // older than the document's, so nothing changes.
        insert_ada,
    ]
}

// ---------------------------------------------------------------------------------------------
// Producing

/// Why the records could not be produced.
#[derive(Debug, thiserror::Error)]
pub enum ProduceError {
    /// A Kafka client could not be created, or a record was not acknowledged.
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    /// A missing topic could not be created.
    #[error("creating topic {topic}: {code}")]
    CreateTopic {
        /// The topic.
        topic: String,
        /// The broker's answer.
        code: RDKafkaErrorCode,
    },
}

/// Creates the missing topics of `records` (with `partitions` partitions; existing topics are
/// left as they are), then produces the records one at a time, in order, each acknowledged by
/// every in-sync replica before the next is sent, to `prefix` + their topic. `config` holds
/// `bootstrap.servers` and any security settings. Returns how many were produced.
pub async fn produce(
    config: &ClientConfig,
    prefix: &str,
    partitions: i32,
    records: &[Record],
) -> Result<usize, ProduceError> {
    let mut topics: Vec<String> = records.iter().map(|r| format!("{prefix}{}", r.topic)).collect();
    topics.sort();
    topics.dedup();
    let admin: AdminClient<DefaultClientContext> = config.create()?;
    let new: Vec<NewTopic<'_>> =
        topics.iter().map(|t| NewTopic::new(t, partitions, TopicReplication::Fixed(1))).collect();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    for result in admin.create_topics(&new, &options).await? {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => return Err(ProduceError::CreateTopic { topic, code }),
        }
    }
    let producer: FutureProducer =
        config.clone().set("acks", "all").set("enable.idempotence", "true").create()?;
    for r in records {
        let topic = format!("{prefix}{}", r.topic);
        let mut out: FutureRecord<'_, str, str> = FutureRecord::to(&topic);
        if let Some(key) = &r.key {
            out = out.key(key.as_str());
        }
        if let Some(value) = &r.value {
            out = out.payload(value.as_str());
        }
        producer.send(out, Duration::from_secs(30)).await.map_err(|(e, _)| e)?;
    }
    Ok(records.len())
}
