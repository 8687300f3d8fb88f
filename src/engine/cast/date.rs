//! ISO-8601 dates as the reference casts read and print them (docs/writes.md#cast-functions): JavaScript's date
//! range (±8.64e15 ms), date-only and zone-less times read as UTC, impossible dates refused.

/// The largest distance from the epoch a JavaScript Date can hold, in ms.
pub const MAX_EPOCH_MS: i64 = 8_640_000_000_000_000;

pub(super) const MS_PER_DAY: i64 = 86_400_000;

/// Days since 1970-01-01 of a proleptic Gregorian date (no validation).
pub(super) fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (i64::from(month) + 9) % 12;
    let doy = (153 * mp + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day count since 1970-01-01: (year, month, day).
pub(super) fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(month <= 2), month, day)
}

fn days_in_month(year: i64, month: u32) -> u32 {
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    match month {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// `2023-09-19T16:35:57.284Z` (or `+275760-09-13T00:00:00.000Z` outside years 0..=9999).
pub fn format_iso(epoch_ms: i64) -> String {
    let mut out = Vec::with_capacity(24);
    write_iso(epoch_ms, &mut out);
    out.into_iter().map(char::from).collect()
}

/// Appends [`format_iso`]'s text (ASCII) to `out`, without allocating.
pub fn write_iso(epoch_ms: i64, out: &mut Vec<u8>) {
    let (days, ms) = (epoch_ms.div_euclid(MS_PER_DAY), epoch_ms.rem_euclid(MS_PER_DAY));
    let (year, month, day) = civil_from_days(days);
    match year {
        0..=9999 => padded(year.unsigned_abs(), 4, out),
        y => {
            out.push(if y < 0 { b'-' } else { b'+' });
            padded(y.unsigned_abs(), 6, out);
        }
    }
    let (h, m, s, milli) = (ms / 3_600_000, ms / 60_000 % 60, ms / 1000 % 60, ms % 1000);
    let fields = [
        (b'-', u64::from(month), 2),
        (b'-', u64::from(day), 2),
        (b'T', h.unsigned_abs(), 2),
        (b':', m.unsigned_abs(), 2),
        (b':', s.unsigned_abs(), 2),
        (b'.', milli.unsigned_abs(), 3),
    ];
    for (separator, value, width) in fields {
        out.push(separator);
        padded(value, width, out);
    }
    out.push(b'Z');
}

/// `n` in decimal, zero-padded to at least `width` digits.
fn padded(n: u64, width: usize, out: &mut Vec<u8>) {
    let mut digits = [b'0'; 20];
    let (mut n, mut start) = (n, digits.len());
    while n > 0 {
        start -= 1;
        digits[start] = b'0' + (n % 10) as u8;
        n /= 10;
    }
    let start = start.min(digits.len() - width);
    out.extend_from_slice(&digits[start..]);
}

/// Reads `YYYY`, `YYYY-MM`, `YYYY-MM-DD`, optionally followed by `T` (or a space) and
/// `HH:MM[:SS[.fraction]]` and a zone `Z`, `±HH:MM` or `±HHMM`; no zone means UTC. Returns
/// epoch ms, or `None` for anything else, impossible dates included.
pub fn parse_iso(text: &str) -> Option<i64> {
    let mut p = Parser(text.as_bytes());
    let year = i64::from(p.digits(4)?);
    let (mut month, mut day) = (1, 1);
    if p.eat(b'-') {
        month = p.digits(2)?;
        if p.eat(b'-') {
            day = p.digits(2)?;
        }
    }
    if !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) {
        return None;
    }
    let mut ms = days_from_civil(year, month, day) * MS_PER_DAY;
    if p.eat(b'T') || p.eat(b' ') {
        let (h, m) = (p.digits(2)?, p.eat_then(b':', 2)?);
        let s = if p.eat(b':') { p.digits(2)? } else { 0 };
        let mut milli = 0;
        if p.eat(b'.') {
            let frac = p.take_digits();
            if frac.is_empty() {
                return None;
            }
            milli = frac.iter().chain(b"00").take(3).fold(0, |a, d| a * 10 + u32::from(d - b'0'));
        }
        if h > 23 || m > 59 || s > 59 {
            return None;
        }
        ms += i64::from(((h * 60 + m) * 60 + s) * 1000 + milli);
        ms -= p.zone_offset_ms()?;
    }
    (p.0.is_empty() && ms.abs() <= MAX_EPOCH_MS).then_some(ms)
}

/// A cursor over the bytes still to read.
struct Parser<'a>(&'a [u8]);

impl Parser<'_> {
    fn eat(&mut self, b: u8) -> bool {
        let hit = self.0.first() == Some(&b);
        if hit {
            self.0 = &self.0[1..];
        }
        hit
    }

    fn digits(&mut self, n: usize) -> Option<u32> {
        let (head, rest) = (self.0.get(..n)?, &self.0[n..]);
        if !head.iter().all(u8::is_ascii_digit) {
            return None;
        }
        self.0 = rest;
        Some(head.iter().fold(0, |a, d| a * 10 + u32::from(d - b'0')))
    }

    fn eat_then(&mut self, b: u8, n: usize) -> Option<u32> {
        if self.eat(b) { self.digits(n) } else { None }
    }

    fn take_digits(&mut self) -> &[u8] {
        let n = self.0.iter().take_while(|b| b.is_ascii_digit()).count();
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        head
    }

    /// `Z`, `±HH:MM`, `±HHMM`, or nothing (UTC); the offset east of UTC in ms.
    fn zone_offset_ms(&mut self) -> Option<i64> {
        if self.0.is_empty() || self.eat(b'Z') {
            return Some(0);
        }
        let sign = if self.eat(b'+') {
            1
        } else if self.eat(b'-') {
            -1
        } else {
            return None;
        };
        let h = self.digits(2)?;
        self.eat(b':');
        let m = self.digits(2)?;
        if h > 23 || m > 59 {
            return None;
        }
        Some(sign * i64::from(h * 60 + m) * 60_000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_700_000_000_000;

    #[test]
    fn parses_iso_forms() {
        let cases: &[(&str, Option<i64>)] = &[
            ("2023-11-14T22:13:20.000Z", Some(T0)),
            ("2023-11-14T22:13:20Z", Some(T0)),
            ("2023-11-14T22:13:20", Some(T0)),
            ("2023-11-14 22:13:20", Some(T0)),
            ("2023-11-15T00:13:20+02:00", Some(T0)),
            ("2023-11-14T20:13:20-0200", Some(T0)),
            ("2023-11-14T22:13", Some(T0 - 20_000)),
            ("2023-11-14T22:13:20.5Z", Some(T0 + 500)),
            ("2023-11-14T22:13:20.123456Z", Some(T0 + 123)),
            ("2023-01-15", Some(1_673_740_800_000)),
            ("2023-01", Some(1_672_531_200_000)),
            ("2023", Some(1_672_531_200_000)),
            ("1970-01-01", Some(0)),
            ("1969-12-31T23:59:59.999Z", Some(-1)),
            ("2024-02-29", Some(1_709_164_800_000)),
            ("2024-02-30", None),
            ("2023-02-29", None),
            ("1900-02-29", None),
            ("2023-13-01", None),
            ("2023-00-10", None),
            ("2023-11-14T24:00:00Z", None),
            ("2023-11-14T22:60:00Z", None),
            ("2023-11-14T22:13:20.Z", None),
            ("2023-11-14T22:13:20+25:00", None),
            ("2023-11-14T22:13:20 junk", None),
            ("1700000000000", None),
            ("23-11-14", None),
            ("", None),
            ("yesterday", None),
        ];
        for (input, expected) in cases {
            assert_eq!(parse_iso(input), *expected, "{input:?}");
        }
    }

    #[test]
    fn formats_iso_with_milliseconds() {
        assert_eq!(format_iso(T0), "2023-11-14T22:13:20.000Z");
        assert_eq!(format_iso(1_695_141_357_284), "2023-09-19T16:35:57.284Z");
        assert_eq!(format_iso(-1), "1969-12-31T23:59:59.999Z");
        assert_eq!(format_iso(MAX_EPOCH_MS), "+275760-09-13T00:00:00.000Z");
        assert_eq!(format_iso(-MAX_EPOCH_MS), "-271821-04-20T00:00:00.000Z");
    }

    #[test]
    fn civil_conversion_round_trips_over_many_years() {
        for days in (-800_000..800_000).step_by(997) {
            let (y, m, d) = civil_from_days(days);
            assert!(d >= 1 && d <= days_in_month(y, m), "{days} -> {y}-{m}-{d}");
            assert_eq!(days_from_civil(y, m, d), days, "{y}-{m}-{d}");
        }
    }
}
