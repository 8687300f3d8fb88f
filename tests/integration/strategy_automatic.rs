//! The automatic strategy on the real mongod (docs/outputs.md#strategies, docs/vectors.md #39-41): the worked example's two
//! schema files and stored data, every row of its table, and the batching promise (one `find`
//! per relation for a whole batch of messages), counted with the driver's command events.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use mongodb::bson::{Document, doc};
use mongodb::event::EventHandler;
use mongodb::event::command::CommandEvent;
use mongodb::options::ClientOptions;
use mongodb::{Client, Database};

use rtu_operator::engine::strategy::{
    AutomaticStrategy, ProjectionInfo, Start, SvIdentifier, load,
};

use crate::support::env;
use crate::support::mongodb::unique_database;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/strategy").join(name)
}

/// The worked example's projections; collections named otherwise, to see the mapping used.
fn projections() -> Vec<ProjectionInfo> {
    let p = |name: &str, collection: &str, fields: &[&str]| ProjectionInfo {
        name: name.into(),
        collection: collection.into(),
        fields: fields.iter().map(|f| f.to_string()).collect(),
    };
    vec![
        p("pr_customers", "customers", &["customer_id", "name"]),
        p("pr_orders", "orders", &["order_id", "customer_id", "status"]),
        p("pr_order_items", "order_items", &["order_id", "line_no", "qty"]),
    ]
}

fn worked_example() -> AutomaticStrategy {
    load(&fixture("erSchema.json"), &fixture("projectionChangesSchema.json"), &projections())
        .unwrap()
}

/// A client that records the `find` commands sent to `db`.
struct Recorder {
    client: Client,
    finds: Arc<Mutex<Vec<Document>>>,
}

impl Recorder {
    async fn new(db: &str) -> Self {
        let mut options = ClientOptions::parse(env().var("RTU_TEST_MONGODB_URI")).await.unwrap();
        let finds = Arc::new(Mutex::new(Vec::new()));
        let (sink, db) = (finds.clone(), db.to_string());
        options.command_event_handler = Some(EventHandler::callback(move |e| {
            if let CommandEvent::Started(s) = e
                && s.command_name == "find"
                && s.db == db
            {
                sink.lock().unwrap().push(s.command);
            }
        }));
        Recorder { client: Client::with_options(options).unwrap(), finds }
    }

    fn take(&self) -> Vec<Document> {
        std::mem::take(&mut *self.finds.lock().unwrap())
    }
}

fn customer(id: &str, name: &str) -> Document {
    doc! { "customer_id": id, "name": name, "__STATE__": "PUBLIC" }
}

fn order(id: &str, customer: &str, state: &str) -> Document {
    doc! { "order_id": id, "customer_id": customer, "status": "open", "__STATE__": state }
}

fn item(order: &str, line: i32, qty: i32) -> Document {
    doc! { "order_id": order, "line_no": line, "qty": qty, "__STATE__": "PUBLIC" }
}

/// A database holding the worked example's stored data.
async fn seeded(client: &Client, name: &str) -> Database {
    let db = client.database(name);
    let customers = [customer("C-7", "Ada"), customer("C-9", "Bo")];
    db.collection("customers").insert_many(customers).await.unwrap();
    let orders = [
        order("O-1", "C-7", "PUBLIC"),
        order("O-4", "C-7", "PUBLIC"),
        order("O-5", "C-9", "DELETED"),
    ];
    db.collection("orders").insert_many(orders).await.unwrap();
    let items = [item("O-1", 1, 1), item("O-1", 2, 2), item("O-4", 1, 1)];
    db.collection("order_items").insert_many(items).await.unwrap();
    db
}

/// `"sv {identifier}"`, sorted.
fn shown(found: &[SvIdentifier]) -> Vec<String> {
    let mut v: Vec<String> =
        found.iter().map(|i| format!("{} {}", i.single_view, i.identifier)).collect();
    v.sort();
    v
}

/// One row of the docs/outputs.md#strategies table: the write applied to the stored data, then the strategy run
/// from the stored document after it (and before it, when given).
struct Row {
    what: &'static str,
    projection: &'static str,
    collection: &'static str,
    key: Document,
    after: Document,
    before: Option<Document>,
    want: &'static [&'static str],
}

fn rows() -> Vec<Row> {
    const C7: &str = r#"sv_customers { "customerId": "C-7" }"#;
    const C9: &str = r#"sv_customers { "customerId": "C-9" }"#;
    const O1: &str = r#"sv_orders { "orderId": "O-1" }"#;
    const O4: &str = r#"sv_orders { "orderId": "O-4" }"#;
    let mut shipped = order("O-4", "C-7", "PUBLIC");
    shipped.insert("status", "shipped");
    vec![
        Row {
            what: "item (O-1,2) qty 2 -> 3",
            projection: "pr_order_items",
            collection: "order_items",
            key: doc! { "order_id": "O-1", "line_no": 2 },
            after: item("O-1", 2, 3),
            before: None,
            want: &[C7, O1],
        },
        Row {
            what: "order O-4 status changed",
            projection: "pr_orders",
            collection: "orders",
            key: doc! { "order_id": "O-4" },
            after: shipped,
            before: None,
            want: &[C7, O4],
        },
        Row {
            what: "customer C-7 renamed",
            projection: "pr_customers",
            collection: "customers",
            key: doc! { "customer_id": "C-7" },
            after: customer("C-7", "Ada L."),
            before: None,
            want: &[C7, O1, O4],
        },
        Row {
            what: "order O-1 moved C-7 -> C-9",
            projection: "pr_orders",
            collection: "orders",
            key: doc! { "order_id": "O-1" },
            after: order("O-1", "C-9", "PUBLIC"),
            before: Some(order("O-1", "C-7", "PUBLIC")),
            want: &[C7, C9, O1],
        },
        Row {
            what: "item (O-5,1) inserted, order O-5 deleted",
            projection: "pr_order_items",
            collection: "order_items",
            key: doc! { "order_id": "O-5", "line_no": 1 },
            after: item("O-5", 1, 1),
            before: None,
            want: &[],
        },
        Row {
            what: "item (O-9,1) inserted, no order O-9",
            projection: "pr_order_items",
            collection: "order_items",
            key: doc! { "order_id": "O-9", "line_no": 1 },
            after: item("O-9", 1, 1),
            before: None,
            want: &[],
        },
        Row {
            what: "order O-1 soft-deleted",
            projection: "pr_orders",
            collection: "orders",
            key: doc! { "order_id": "O-1" },
            after: order("O-1", "C-7", "DELETED"),
            before: None,
            want: &[C7, O1],
        },
    ]
}

#[tokio::test]
async fn strategy_worked_example_table_row_by_row() {
    let strategy = worked_example();
    for row in rows() {
        let name = unique_database("strategy_row");
        let recorder = Recorder::new(&name).await;
        let db = seeded(&recorder.client, &name).await;
        let stored = db.collection::<Document>(row.collection);
        stored.replace_one(row.key, row.after.clone()).upsert(true).await.unwrap();
        let documents = [Some(row.after), row.before].into_iter().flatten().map(Arc::new).collect();
        let start = Start { projection: row.projection.into(), documents };
        let found = strategy.identifiers(&db, &[start]).await.unwrap();
        assert_eq!(found.len(), 1, "{}", row.what);
        assert_eq!(shown(&found[0]), row.want, "{}", row.what);
        db.drop().await.unwrap();
    }
}

#[tokio::test]
async fn strategy_batch_issues_one_find_per_relation_whatever_the_number_of_messages() {
    let name = unique_database("strategy_batch");
    let recorder = Recorder::new(&name).await;
    let db = seeded(&recorder.client, &name).await;
    let orders = ["O-1", "O-4", "O-5", "O-9"];
    let items: Vec<Document> = (0..50).map(|k| item(orders[k % 4], 10 + k as i32, 1)).collect();
    db.collection("order_items").insert_many(items.clone()).await.unwrap();
    let strategy = worked_example();
    recorder.take();

    let mut starts: Vec<Start> = items
        .iter()
        .map(|i| Start {
            projection: "pr_order_items".into(),
            documents: vec![Arc::new(i.clone())],
        })
        .collect();
    starts.push(Start {
        projection: "pr_customers".into(),
        documents: vec![Arc::new(customer("C-7", "A"))],
    });
    starts.push(Start {
        projection: "pr_orders".into(),
        documents: vec![Arc::new(order("O-4", "C-7", "PUBLIC"))],
    });
    let found = strategy.identifiers(&db, &starts).await.unwrap();

    let finds = recorder.take();
    let relations: Vec<(&str, &Document)> = finds
        .iter()
        .map(|f| (f.get_str("find").unwrap(), f.get_document("filter").unwrap()))
        .collect();
    // items -> orders and customers -> orders first, then orders -> customers once for all.
    let in_orders = doc! { "order_id": { "$in": ["O-1", "O-4", "O-5", "O-9"] } };
    let by_items = doc! { "$and": [{ "__STATE__": "PUBLIC" }, in_orders] };
    let in_customers = doc! { "customer_id": { "$in": ["C-7"] } };
    let by_customer = doc! { "$and": [{ "__STATE__": "PUBLIC" }, in_customers.clone()] };
    let to_customers = doc! { "$and": [{ "__STATE__": "PUBLIC" }, in_customers] };
    assert_eq!(
        relations,
        [("orders", &by_items), ("orders", &by_customer), ("customers", &to_customers)],
        "{finds:#?}"
    );

    let c7 = r#"sv_customers { "customerId": "C-7" }"#;
    let order_sv = |o: &str| format!(r#"sv_orders {{ "orderId": "{o}" }}"#);
    for (k, found) in found.iter().take(50).enumerate() {
        let want: Vec<String> = match orders[k % 4] {
            o @ ("O-1" | "O-4") => vec![c7.to_string(), order_sv(o)],
            _ => vec![],
        };
        assert_eq!(shown(found), want, "item {k} of {}", orders[k % 4]);
    }
    assert_eq!(shown(&found[50]), [c7.to_string(), order_sv("O-1"), order_sv("O-4")]);
    assert_eq!(shown(&found[51]), [c7.to_string(), order_sv("O-4")]);

    let one = strategy.identifiers(&db, &starts[..1]).await.unwrap();
    assert_eq!(shown(&one[0]), [c7.to_string(), order_sv("O-1")]);
    assert_eq!(recorder.take().len(), 2, "a single item walks two relations");
    db.drop().await.unwrap();
}

#[tokio::test]
async fn strategy_empty_schemas_yield_no_identifiers_and_read_nothing() {
    let empty = fixture("empty.json");
    let strategy = load(&empty, &empty, &projections()).unwrap();
    let name = unique_database("strategy_empty");
    let recorder = Recorder::new(&name).await;
    let db = seeded(&recorder.client, &name).await;
    let start = |p: &str, d: Document| Start { projection: p.into(), documents: vec![Arc::new(d)] };
    let starts =
        [start("pr_order_items", item("O-1", 2, 3)), start("pr_customers", customer("C-7", "A"))];
    let found = strategy.identifiers(&db, &starts).await.unwrap();
    assert_eq!(found, [vec![], vec![]]);
    assert!(recorder.take().is_empty());
    assert!(!strategy.covers("pr_order_items"));
    db.drop().await.unwrap();
}

#[tokio::test]
async fn strategy_more_than_a_thousand_sources_are_split_and_attributed_across_finds() {
    let name = unique_database("strategy_chunks");
    let recorder = Recorder::new(&name).await;
    let db = seeded(&recorder.client, &name).await;
    recorder.take();
    let orders = ["O-1", "O-9", "O-4"];
    let starts: Vec<Start> = (0..1200)
        .map(|k| Start {
            projection: "pr_order_items".into(),
            documents: vec![Arc::new(item(orders[k % 3], 100 + k as i32, 1))],
        })
        .collect();
    let found = worked_example().identifiers(&db, &starts).await.unwrap();

    let collections: Vec<String> =
        recorder.take().iter().map(|f| f.get_str("find").unwrap().to_string()).collect();
    assert_eq!(collections, ["orders", "orders", "customers"], "1000 + 200 items, then 2 orders");
    for (k, found) in found.iter().enumerate() {
        let want: Vec<String> = match orders[k % 3] {
            "O-9" => vec![],
            o => vec![
                r#"sv_customers { "customerId": "C-7" }"#.to_string(),
                format!(r#"sv_orders {{ "orderId": "{o}" }}"#),
            ],
        };
        assert_eq!(shown(found), want, "start {k}");
    }
    db.drop().await.unwrap();
}
