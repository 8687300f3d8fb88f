//! The event generator of the operator examples: produces the change events of
//! `examples/operator/<format>/` (Debezium, IBM IIDR KCOP JSON or Oracle GoldenGate JSON) to
//! the topics that example's SystemOfRecord reads, creating missing topics. After the
//! example's RealTimeUpdater has consumed them, its projections hold exactly the documents in
//! `examples/operator/<format>/expected-projections.json`.
//!
//! ```text
//! cargo run --example generate_events -- --format iidr --bootstrap localhost:9092
//! cargo run --example generate_events -- --format golden-gate --bootstrap broker:9093 \
//!     -X security.protocol=SASL_SSL -X sasl.mechanisms=SCRAM-SHA-256 \
//!     -X sasl.username=gen -X sasl.password=... -X ssl.ca.location=ca.crt
//! ```

mod events;

use std::process::ExitCode;

use clap::Parser;
use rdkafka::ClientConfig;

use events::Format;

/// Produces the change events of one operator example.
#[derive(Debug, Parser)]
struct Args {
    /// The example: debezium, iidr or golden-gate.
    #[arg(long, value_parser = parse_format)]
    format: Format,
    /// Kafka bootstrap servers (host:port,...).
    #[arg(long)]
    bootstrap: String,
    /// Prepended to every topic name (e.g. `test1.`); the SystemOfRecord must read the same.
    #[arg(long, default_value = "")]
    topic_prefix: String,
    /// Partitions of the topics this creates (existing topics are left as they are).
    #[arg(long, default_value_t = 3)]
    partitions: i32,
    /// A librdkafka property, `name=value`, for the admin client and the producer; repeat.
    #[arg(short = 'X', value_name = "NAME=VALUE", value_parser = parse_property)]
    property: Vec<(String, String)>,
}

fn parse_format(name: &str) -> Result<Format, String> {
    Format::parse(name).ok_or_else(|| {
        let names: Vec<&str> = Format::ALL.iter().map(|f| f.name()).collect();
        format!("unknown format {name:?}; one of {}", names.join(", "))
    })
}

fn parse_property(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("{text:?} is not name=value"))
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", &args.bootstrap);
    for (name, value) in &args.property {
        config.set(name, value);
    }
    let records = events::records(args.format);
    match events::produce(&config, &args.topic_prefix, args.partitions, &records).await {
        Ok(n) => {
            let topics: Vec<String> = events::topics(args.format)
                .iter()
                .map(|t| format!("{}{t}", args.topic_prefix))
                .collect();
            println!("produced {n} {} change events to {}", args.format.name(), topics.join(", "));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("generate_events: {e}");
            ExitCode::FAILURE
        }
    }
}
