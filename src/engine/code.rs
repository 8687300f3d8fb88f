//! The codes of message errors (docs/failures.md#message-error-codes): what every failed
//! message is logged, counted and dead-lettered (`rtu-dlq-reason`) with.

use std::fmt;

/// Why one message could not be written or announced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ErrorCode {
    /// The key is not what the format needs.
    MalformedKey,
    /// The value is not what the format needs.
    MalformedValue,
    /// A primary-key field is absent or null.
    MissingPrimaryKey,
    /// The Kafka key and the row image name different primary keys.
    KeyMismatch,
    /// An operation the format does not know.
    UnknownOperation,
    /// A cast failed (a primary-key cast, or any under strict validation).
    CastFailed,
    /// Strict validation refused the write.
    ValidationFailed,
    /// A custom adapter broke its contract.
    CustomAdapterFailed,
    /// Upsert off: an insert of a live key.
    DuplicateInsert,
    /// Upsert off: an update of a missing key.
    MissingDocument,
    /// A unique index other than the primary key's refused the write.
    UniqueViolation,
    /// The document would exceed MongoDB's size limit.
    DocumentTooLarge,
    /// MongoDB refused the statement for another reason.
    WriteFailed,
    /// A strategy threw.
    StrategyFailed,
    /// A strategy ran past its time limit for this message alone.
    StrategyTimeout,
    /// An output could not be built for this message.
    OutputFailed,
    /// No projection reads the record's topic.
    UnknownTopic,
}

impl ErrorCode {
    /// The code as logs, metrics and dead-letter headers carry it (`MALFORMED_VALUE`).
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::MalformedKey => "MALFORMED_KEY",
            ErrorCode::MalformedValue => "MALFORMED_VALUE",
            ErrorCode::MissingPrimaryKey => "MISSING_PRIMARY_KEY",
            ErrorCode::KeyMismatch => "KEY_MISMATCH",
            ErrorCode::UnknownOperation => "UNKNOWN_OPERATION",
            ErrorCode::CastFailed => "CAST_FAILED",
            ErrorCode::ValidationFailed => "VALIDATION_FAILED",
            ErrorCode::CustomAdapterFailed => "CUSTOM_ADAPTER_FAILED",
            ErrorCode::DuplicateInsert => "DUPLICATE_INSERT",
            ErrorCode::MissingDocument => "MISSING_DOCUMENT",
            ErrorCode::UniqueViolation => "UNIQUE_VIOLATION",
            ErrorCode::DocumentTooLarge => "DOCUMENT_TOO_LARGE",
            ErrorCode::WriteFailed => "WRITE_FAILED",
            ErrorCode::StrategyFailed => "STRATEGY_FAILED",
            ErrorCode::StrategyTimeout => "STRATEGY_TIMEOUT",
            ErrorCode::OutputFailed => "OUTPUT_FAILED",
            ErrorCode::UnknownTopic => "UNKNOWN_TOPIC",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Tests and callers compare a code with its text: `code == "MALFORMED_VALUE"`.
impl PartialEq<&str> for ErrorCode {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}
