//! Debezium's logical types (docs/formats.md, "Debezium logical types"): the pure decoders
//! that turn Debezium's encodings (days since the epoch, times since midnight in ms / µs / ns,
//! local timestamps since the epoch, base64 big-endian two's complement decimals, little-endian
//! bit strings) into plain values. The Debezium adapter uses them when a record carries its
//! schema; the `castDebezium*` casts use them when it does not.
//!
//! The encodings are those of Debezium's connector documentation ("Temporal types", "Decimal
//! types", "Bit types" of the PostgreSQL, MySQL and Oracle connector pages) and of Kafka
//! Connect's `org.apache.kafka.connect.data.{Date, Time, Timestamp, Decimal}`.

use base64::Engine as _;

use super::date::{MS_PER_DAY, civil_from_days};

/// The resolution of a Debezium time or timestamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TimeUnit {
    /// Milliseconds (`Time`, `Timestamp`, Kafka Connect's `Time` and `Timestamp`).
    Milli,
    /// Microseconds (`MicroTime`, `MicroTimestamp`).
    Micro,
    /// Nanoseconds (`NanoTime`, `NanoTimestamp`).
    Nano,
}

impl TimeUnit {
    /// Units in one second.
    fn per_second(self) -> i64 {
        match self {
            TimeUnit::Milli => 1_000,
            TimeUnit::Micro => 1_000_000,
            TimeUnit::Nano => 1_000_000_000,
        }
    }

    /// Digits of the fraction of a second printed for this unit.
    fn digits(self) -> usize {
        match self {
            TimeUnit::Milli => 3,
            TimeUnit::Micro => 6,
            TimeUnit::Nano => 9,
        }
    }

    /// Whole milliseconds (rounded toward the past) of an amount in this unit.
    pub fn to_millis(self, amount: i64) -> i64 {
        amount.div_euclid(self.per_second() / 1_000)
    }
}

/// The largest day count a JavaScript (and BSON-safe) date holds: ±100,000,000 days.
const MAX_DAYS: i64 = 100_000_000;

/// `YYYY-MM-DD` of a day count since 1970-01-01 (`io.debezium.time.Date`, Kafka Connect
/// `Date`), or `None` outside ±100,000,000 days.
pub fn iso_date(days: i64) -> Option<String> {
    if days.abs() > MAX_DAYS {
        return None;
    }
    let (y, m, d) = civil_from_days(days);
    Some(format!("{}-{m:02}-{d:02}", year(y)))
}

/// `HH:MM:SS.fff` (3, 6 or 9 fraction digits by unit) of a time since midnight; Debezium
/// writes PostgreSQL's `24:00:00` as exactly one day, which is kept.
pub fn iso_time(since_midnight: i64, unit: TimeUnit) -> Option<String> {
    let per_second = unit.per_second();
    if !(0..=86_400 * per_second).contains(&since_midnight) {
        return None;
    }
    let (seconds, fraction) = (since_midnight / per_second, since_midnight % per_second);
    Some(format!(
        "{:02}:{:02}:{:02}.{fraction:0width$}",
        seconds / 3600,
        seconds / 60 % 60,
        seconds % 60,
        width = unit.digits()
    ))
}

/// `YYYY-MM-DDTHH:MM:SS.fff` without a zone (3, 6 or 9 fraction digits by unit) of a local
/// date-time since the epoch (`Timestamp`, `MicroTimestamp`, `NanoTimestamp`).
pub fn iso_local_date_time(since_epoch: i64, unit: TimeUnit) -> Option<String> {
    let per_second = unit.per_second();
    let seconds = since_epoch.div_euclid(per_second);
    let fraction = since_epoch.rem_euclid(per_second);
    let (days, of_day) = (seconds.div_euclid(86_400), seconds.rem_euclid(86_400));
    let date = iso_date(days)?;
    Some(format!(
        "{date}T{:02}:{:02}:{:02}.{fraction:0width$}",
        of_day / 3600,
        of_day / 60 % 60,
        of_day % 60,
        width = unit.digits()
    ))
}

/// Epoch ms of a day count, within the date range.
pub fn days_to_millis(days: i64) -> Option<i64> {
    (days.abs() <= MAX_DAYS).then(|| days * MS_PER_DAY)
}

fn year(y: i64) -> String {
    match y {
        0..=9999 => format!("{y:04}"),
        y if y < 0 => format!("-{:06}", y.unsigned_abs()),
        y => format!("+{y:06}"),
    }
}

/// The bytes of standard base64 text (with or without padding), as Kafka's JsonConverter
/// writes `bytes`.
pub fn base64_bytes(text: &str) -> Option<Vec<u8>> {
    BASE64.decode(text).ok()
}

/// Standard base64, padding optional when decoding.
const BASE64: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    base64::engine::GeneralPurposeConfig::new()
        .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
);

/// The decimal text of an unscaled big-endian two's complement integer and its scale
/// (Kafka Connect `Decimal`, Debezium `VariableScaleDecimal`): `-123.45` for (-12345, 2),
/// `12300` for (123, -2). `None` when the integer has more than 16 bytes (beyond the 34 digits
/// a Decimal128 holds) or no bytes at all.
pub fn decimal_text(unscaled: &[u8], scale: i32) -> Option<String> {
    if unscaled.is_empty() || unscaled.len() > 16 {
        return None;
    }
    let negative = unscaled[0] & 0x80 != 0;
    let mut buffer = [if negative { 0xff } else { 0 }; 16];
    buffer[16 - unscaled.len()..].copy_from_slice(unscaled);
    let value = i128::from_be_bytes(buffer);
    let digits = value.unsigned_abs().to_string();
    let sign = if negative { "-" } else { "" };
    // Decimal128 exponents span -6176..=6111; a scale beyond them cannot be stored.
    if !(-6111..=6176).contains(&scale) {
        return None;
    }
    let text = match usize::try_from(scale) {
        Ok(0) => format!("{sign}{digits}"),
        Ok(scale) if digits.len() > scale => {
            let (whole, fraction) = digits.split_at(digits.len() - scale);
            format!("{sign}{whole}.{fraction}")
        }
        Ok(scale) => format!("{sign}0.{digits:0>scale$}"),
        Err(_) if value == 0 => "0".to_string(),
        Err(_) => format!("{sign}{digits}{}", "0".repeat(scale.unsigned_abs() as usize)),
    };
    Some(text)
}

/// The unsigned value of a Debezium `Bits` value: little-endian bytes (MySQL and PostgreSQL
/// `BIT(n)`), up to 8 of them.
pub fn bits_value(bytes: &[u8]) -> Option<u64> {
    if bytes.len() > 8 {
        return None;
    }
    let mut buffer = [0u8; 8];
    buffer[..bytes.len()].copy_from_slice(bytes);
    Some(u64::from_le_bytes(buffer))
}

/// True for `HH:MM:SS[.fraction][zone]` (a decoded Debezium time, a `ZonedTime`): hours up to
/// 24, a zone `Z`, `±HH:MM` or `±HHMM`, required when `zoned`.
pub fn is_time_text(text: &str, zoned: bool) -> bool {
    let b = text.as_bytes();
    let two = |at: usize, max: u8| {
        b.get(at..at + 2).is_some_and(|d| {
            d.iter().all(u8::is_ascii_digit) && (d[0] - b'0') * 10 + (d[1] - b'0') <= max
        })
    };
    let clock = two(0, 24)
        && b.get(2) == Some(&b':')
        && two(3, 59)
        && b.get(5) == Some(&b':')
        && two(6, 59);
    if !clock {
        return false;
    }
    let mut rest = &b[8..];
    if let Some(fraction) = rest.strip_prefix(b".") {
        let n = fraction.iter().take_while(|c| c.is_ascii_digit()).count();
        if n == 0 {
            return false;
        }
        rest = &fraction[n..];
    }
    match rest {
        [] => !zoned,
        [b'Z'] => true,
        [b'+' | b'-', zone @ ..] => {
            let digits: Vec<u8> = zone.iter().copied().filter(|c| *c != b':').collect();
            digits.len() == 4 && digits.iter().all(u8::is_ascii_digit)
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_days_since_the_epoch() {
        // Debezium PostgreSQL connector documentation, "Temporal types": DATE is
        // io.debezium.time.Date, "the number of days since the epoch".
        assert_eq!(iso_date(19_372).as_deref(), Some("2023-01-15"));
        assert_eq!(iso_date(0).as_deref(), Some("1970-01-01"));
        assert_eq!(iso_date(-1).as_deref(), Some("1969-12-31"));
        assert_eq!(iso_date(2_932_896).as_deref(), Some("9999-12-31"));
        assert_eq!(iso_date(-719_528).as_deref(), Some("0000-01-01"));
        assert_eq!(iso_date(MAX_DAYS + 1), None);
    }

    #[test]
    fn times_are_since_midnight_with_their_units_digits() {
        assert_eq!(iso_time(37_230_123, TimeUnit::Milli).as_deref(), Some("10:20:30.123"));
        assert_eq!(iso_time(37_230_123_456, TimeUnit::Micro).as_deref(), Some("10:20:30.123456"));
        assert_eq!(
            iso_time(37_230_123_456_789, TimeUnit::Nano).as_deref(),
            Some("10:20:30.123456789")
        );
        assert_eq!(iso_time(86_400_000_000, TimeUnit::Micro).as_deref(), Some("24:00:00.000000"));
        assert_eq!(iso_time(-1, TimeUnit::Milli), None);
        assert_eq!(iso_time(86_400_001, TimeUnit::Milli), None);
    }

    #[test]
    fn timestamps_are_local_date_times_since_the_epoch() {
        let t0 = 1_700_000_000_123_i64;
        assert_eq!(
            iso_local_date_time(t0, TimeUnit::Milli).as_deref(),
            Some("2023-11-14T22:13:20.123")
        );
        assert_eq!(
            iso_local_date_time(t0 * 1000 + 456, TimeUnit::Micro).as_deref(),
            Some("2023-11-14T22:13:20.123456")
        );
        assert_eq!(
            iso_local_date_time(t0 * 1_000_000 + 456_789, TimeUnit::Nano).as_deref(),
            Some("2023-11-14T22:13:20.123456789")
        );
        assert_eq!(
            iso_local_date_time(-1, TimeUnit::Micro).as_deref(),
            Some("1969-12-31T23:59:59.999999")
        );
        assert_eq!(TimeUnit::Micro.to_millis(-1), -1);
        assert_eq!(TimeUnit::Nano.to_millis(1_700_000_000_123_456_789), 1_700_000_000_123);
    }

    #[test]
    fn decimals_are_unscaled_twos_complement_with_a_scale() {
        // Kafka Connect Decimal: "an arbitrary-precision signed decimal number ... represented
        // as an unscaled integer (BigInteger.toByteArray, big-endian two's complement)".
        // 12345 = 0x3039; -12345 = 0xCFC7.
        assert_eq!(decimal_text(&[0x30, 0x39], 2).as_deref(), Some("123.45"));
        assert_eq!(decimal_text(&[0xcf, 0xc7], 2).as_deref(), Some("-123.45"));
        assert_eq!(decimal_text(&[0x30, 0x39], 0).as_deref(), Some("12345"));
        assert_eq!(decimal_text(&[0x30, 0x39], 7).as_deref(), Some("0.0012345"));
        assert_eq!(decimal_text(&[0x7b], -2).as_deref(), Some("12300"));
        assert_eq!(decimal_text(&[0x00], 3).as_deref(), Some("0.000"));
        assert_eq!(decimal_text(&[0xff], 0).as_deref(), Some("-1"));
        // 34 nines: the largest Decimal128 coefficient, 15 bytes.
        let nines: i128 = "9".repeat(34).parse().unwrap();
        let bytes = nines.to_be_bytes();
        assert_eq!(decimal_text(&bytes[1..], 0).as_deref(), Some("9".repeat(34).as_str()));
        assert_eq!(decimal_text(&[1; 17], 0), None);
        assert_eq!(decimal_text(&[], 0), None);
    }

    #[test]
    fn base64_is_standard_with_or_without_padding() {
        // "MDk=" is what the JsonConverter writes for the bytes 0x30 0x39 (12345).
        assert_eq!(base64_bytes("MDk="), Some(vec![0x30, 0x39]));
        assert_eq!(base64_bytes("MDk"), Some(vec![0x30, 0x39]));
        assert_eq!(base64_bytes("not base64!"), None);
    }

    #[test]
    fn bits_are_little_endian() {
        // Debezium MySQL connector, "Bit types": BIT(M>1) is io.debezium.data.Bits, "the byte[]
        // contains the bits in little-endian form".
        assert_eq!(bits_value(&[0x05, 0x01]), Some(261));
        assert_eq!(bits_value(&[]), Some(0));
        assert_eq!(bits_value(&[0; 9]), None);
    }

    #[test]
    fn time_texts() {
        for ok in ["10:20:30", "10:20:30.5", "24:00:00.000000"] {
            assert!(is_time_text(ok, false), "{ok}");
        }
        for ok in ["10:20:30Z", "10:20:30.123456+02:00", "10:20:30-0130"] {
            assert!(is_time_text(ok, true), "{ok}");
        }
        for bad in ["10:20", "25:00:00", "10:61:00", "10:20:30.", "10:20:30+2", "x"] {
            assert!(!is_time_text(bad, false) && !is_time_text(bad, true), "{bad}");
        }
        assert!(!is_time_text("10:20:30", true));
    }
}
