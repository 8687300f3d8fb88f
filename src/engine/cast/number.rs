//! JavaScript number semantics the reference casts rely on: `Number(string)` parsing and
//! `Number.prototype.toString()` formatting (docs/writes.md#cast-functions), without a JavaScript engine.

/// The value of `Number(text)`: trimmed; empty means 0; decimal with optional sign, fraction
/// and exponent; `0x`/`0o`/`0b` integers without sign; `Infinity` with optional sign. `None` is
/// JavaScript's NaN.
pub fn parse_js_number(text: &str) -> Option<f64> {
    let t = text.trim_matches(|c: char| c.is_whitespace() || c == '\u{feff}');
    if t.is_empty() {
        return Some(0.0);
    }
    for (prefix, radix) in [("0x", 16), ("0X", 16), ("0o", 8), ("0O", 8), ("0b", 2), ("0B", 2)] {
        if let Some(digits) = t.strip_prefix(prefix) {
            return parse_radix(digits, radix);
        }
    }
    let (sign, unsigned) = match t.as_bytes()[0] {
        b'-' => (-1.0, &t[1..]),
        b'+' => (1.0, &t[1..]),
        _ => (1.0, t),
    };
    if unsigned == "Infinity" {
        return Some(sign * f64::INFINITY);
    }
    is_decimal_literal(unsigned).then(|| unsigned.parse::<f64>().ok()).flatten().map(|v| sign * v)
}

/// `digits.digits e±digits` with at least one mantissa digit (what JS accepts, minus signs).
fn is_decimal_literal(s: &str) -> bool {
    let (mantissa, exponent) = match s.find(['e', 'E']) {
        Some(i) => (&s[..i], Some(&s[i + 1..])),
        None => (s, None),
    };
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let digits = |p: &str| p.bytes().all(|b| b.is_ascii_digit());
    let mantissa_ok = digits(int) && digits(frac) && !(int.is_empty() && frac.is_empty());
    let exponent_ok = exponent.is_none_or(|e| {
        let e = e.strip_prefix(['+', '-']).unwrap_or(e);
        !e.is_empty() && digits(e)
    });
    mantissa_ok && exponent_ok
}

fn parse_radix(digits: &str, radix: u32) -> Option<f64> {
    if digits.is_empty() {
        return None;
    }
    digits
        .chars()
        .try_fold(0.0_f64, |acc, c| Some(acc * f64::from(radix) + f64::from(c.to_digit(radix)?)))
}

/// `Number.prototype.toString()` of a finite number: the shortest digits that round-trip,
/// fixed notation for decimal exponents -6..=20 (ECMAScript Number::toString), else
/// `d.ddde±x`; `-0` is `"0"`.
pub fn format_js_number(v: f64) -> String {
    if v == 0.0 {
        return "0".to_string();
    }
    // `{:e}` gives the shortest round-trip digits: "-1.2345e-7".
    let sci = format!("{v:e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let (sign, mantissa) = mantissa.strip_prefix('-').map_or(("", mantissa), |m| ("-", m));
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let n = digits.len() as i32;
    let body = if (-6..21).contains(&exp) {
        if exp < 0 {
            format!("0.{}{digits}", "0".repeat((-exp - 1) as usize))
        } else if exp + 1 >= n {
            format!("{digits}{}", "0".repeat((exp + 1 - n) as usize))
        } else {
            let point = (exp + 1) as usize;
            format!("{}.{}", &digits[..point], &digits[point..])
        }
    } else {
        let (first, rest) = digits.split_at(1);
        let frac = if rest.is_empty() { String::new() } else { format!(".{rest}") };
        format!("{first}{frac}e{}{}", if exp < 0 { '-' } else { '+' }, exp.abs())
    };
    format!("{sign}{body}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_like_javascript_number() {
        let cases: &[(&str, Option<f64>)] = &[
            ("42", Some(42.0)),
            ("  42.9 ", Some(42.9)),
            ("-42.9", Some(-42.9)),
            ("+7", Some(7.0)),
            ("1e3", Some(1000.0)),
            ("1E-2", Some(0.01)),
            (".5", Some(0.5)),
            ("5.", Some(5.0)),
            ("0x1A", Some(26.0)),
            ("0o17", Some(15.0)),
            ("0b101", Some(5.0)),
            ("", Some(0.0)),
            ("   ", Some(0.0)),
            ("\t\n", Some(0.0)),
            ("Infinity", Some(f64::INFINITY)),
            ("-Infinity", Some(f64::NEG_INFINITY)),
            ("1e400", Some(f64::INFINITY)),
            ("abc", None),
            ("12abc", None),
            ("1,5", None),
            ("-0x1A", None),
            ("0x", None),
            ("0xZZ", None),
            ("inf", None),
            ("NaN", None),
            ("infinity", None),
            (".", None),
            ("e5", None),
            ("1e", None),
            ("1e+", None),
            ("--1", None),
            ("1_000", None),
        ];
        for (input, expected) in cases {
            assert_eq!(parse_js_number(input), *expected, "Number({input:?})");
        }
    }

    #[test]
    fn formats_like_javascript_to_string() {
        let cases: &[(f64, &str)] = &[
            (12.0, "12"),
            (12.5, "12.5"),
            (-0.0, "0"),
            (0.1, "0.1"),
            (-3.25, "-3.25"),
            (1e21, "1e+21"),
            (1.5e21, "1.5e+21"),
            (123456789012345680000.0, "123456789012345680000"),
            (1e-7, "1e-7"),
            (1.23e-7, "1.23e-7"),
            (0.000001, "0.000001"),
            (0.1 + 0.2, "0.30000000000000004"),
            (100.0, "100"),
            (f64::MAX, "1.7976931348623157e+308"),
            (5e-324, "5e-324"),
        ];
        for (input, expected) in cases {
            assert_eq!(format_js_number(*input), *expected, "String({input:e})");
        }
    }
}
