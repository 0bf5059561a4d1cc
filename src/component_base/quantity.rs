//! A small parser for Kubernetes resource quantities ("100m", "1.5", "128Mi",
//! "1G", "2e3") as used in `resources.requests` and `node.status.allocatable`.
//!
//! A quantity is `<signed decimal number><suffix>` where the suffix is one of the
//! binary SI suffixes (Ki Mi Gi Ti Pi Ei), the decimal SI suffixes
//! (n u m "" k M G T P E) or a decimal exponent (`e3`, `E-2`). The value is kept
//! exactly (mantissa × 10^exp10 × 2^exp2) and converted to integer units with the
//! same rounding as apimachinery's `Quantity.Value()` / `MilliValue()`: rounded up
//! (towards +infinity) and saturated at the `i64` range.

use std::fmt;

/// A parsed quantity: `mantissa × 10^exp10 × 2^exp2`, exactly.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Quantity {
    mantissa: i128,
    exp10: i32,
    exp2: u32,
}

/// Why a quantity string could not be parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QuantityError(pub String);

impl fmt::Display for QuantityError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid quantity {:?}", self.0)
    }
}

impl std::error::Error for QuantityError {}

/// Largest number of significant digits kept; more would overflow i128 math.
const MAX_DIGITS: usize = 30;

impl Quantity {
    /// Parses a quantity string. Surrounding whitespace is not allowed, as in Kubernetes.
    pub fn parse(s: &str) -> Result<Quantity, QuantityError> {
        let err = || QuantityError(s.to_string());
        let bytes = s.as_bytes();
        let mut i = 0;
        let mut negative = false;
        if let Some(&c) = bytes.first()
            && (c == b'+' || c == b'-')
        {
            negative = c == b'-';
            i = 1;
        }
        let mut mantissa: i128 = 0;
        let mut digits = 0usize;
        let mut frac_digits: i32 = 0;
        let mut dropped_int_digits: i32 = 0;
        let mut seen_dot = false;
        let mut any_digit = false;
        while i < bytes.len() {
            let c = bytes[i];
            if c.is_ascii_digit() {
                any_digit = true;
                if digits < MAX_DIGITS {
                    if mantissa != 0 || c != b'0' {
                        digits += 1;
                    }
                    mantissa = mantissa * 10 + i128::from(c - b'0');
                    if seen_dot {
                        frac_digits += 1;
                    }
                } else if !seen_dot {
                    // Too many significant digits: drop precision, keep magnitude.
                    dropped_int_digits += 1;
                }
            } else if c == b'.' && !seen_dot {
                seen_dot = true;
            } else {
                break;
            }
            i += 1;
        }
        if !any_digit {
            return Err(err());
        }
        let suffix = &s[i..];
        let (exp10, exp2) = match suffix {
            "" => (0, 0),
            "n" => (-9, 0),
            "u" => (-6, 0),
            "m" => (-3, 0),
            "k" => (3, 0),
            "M" => (6, 0),
            "G" => (9, 0),
            "T" => (12, 0),
            "P" => (15, 0),
            "E" => (18, 0),
            "Ki" => (0, 10),
            "Mi" => (0, 20),
            "Gi" => (0, 30),
            "Ti" => (0, 40),
            "Pi" => (0, 50),
            "Ei" => (0, 60),
            _ => {
                let rest = suffix
                    .strip_prefix('e')
                    .or_else(|| suffix.strip_prefix('E'))
                    .ok_or_else(err)?;
                let body = rest.strip_prefix(['+', '-']).unwrap_or(rest);
                if body.is_empty() || !body.bytes().all(|b| b.is_ascii_digit()) || body.len() > 6 {
                    return Err(err());
                }
                let e: i32 = rest.parse().map_err(|_| err())?;
                (e, 0)
            }
        };
        Ok(Quantity {
            mantissa: if negative { -mantissa } else { mantissa },
            exp10: exp10 - frac_digits + dropped_int_digits,
            exp2,
        })
    }

    /// The value in units of `10^-scale` (scale 0: whole units, 3: milli-units),
    /// rounded up and saturated to the i64 range.
    pub fn scaled(&self, scale: i32) -> i64 {
        if self.mantissa == 0 {
            return 0;
        }
        // value × 10^scale = mantissa × 2^exp2 × 10^(exp10 + scale)
        let mut num = self.mantissa;
        for _ in 0..self.exp2 {
            match num.checked_mul(2) {
                Some(v) => num = v,
                None => return saturate(num),
            }
        }
        let e = self.exp10.saturating_add(scale);
        if e >= 0 {
            for _ in 0..e {
                match num.checked_mul(10) {
                    Some(v) => num = v,
                    None => return saturate(num),
                }
                if num.abs() > i128::from(i64::MAX) {
                    return saturate(num);
                }
            }
            clamp(num)
        } else {
            clamp(div_ceil_pow10(num, -(e as i64)))
        }
    }

    /// Whole units, rounded up (`Quantity.Value()`), e.g. bytes for memory.
    pub fn value(&self) -> i64 {
        self.scaled(0)
    }

    /// Milli-units, rounded up (`Quantity.MilliValue()`), e.g. millicores for cpu.
    pub fn milli_value(&self) -> i64 {
        self.scaled(3)
    }
}

fn saturate(num: i128) -> i64 {
    if num < 0 { i64::MIN } else { i64::MAX }
}

fn clamp(num: i128) -> i64 {
    i64::try_from(num).unwrap_or_else(|_| saturate(num))
}

/// Parses `s` and returns milli-units, or `None` when malformed.
pub fn parse_milli(s: &str) -> Option<i64> {
    Quantity::parse(s).ok().map(|q| q.milli_value())
}

/// Parses `s` and returns whole units (rounded up), or `None` when malformed.
pub fn parse_value(s: &str) -> Option<i64> {
    Quantity::parse(s).ok().map(|q| q.value())
}

/// How a quantity is written, as apimachinery's `resource.Format`: the suffix family a
/// quantity keeps when it is printed back (its canonical form).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// `128Mi`, `1Gi`: powers of 1024.
    BinarySI,
    /// `500m`, `1`, `2k`, `1G`: powers of 1000.
    DecimalSI,
    /// `1e3`: a decimal exponent.
    DecimalExponent,
}

impl Format {
    /// The format of a quantity string, from its suffix (`Ki`…`Ei`: binary; `e3`: exponent;
    /// anything else: decimal SI).
    pub fn of(s: &str) -> Format {
        let body = s.trim_start_matches(['+', '-']);
        let suffix = body.trim_start_matches(|c: char| c.is_ascii_digit() || c == '.');
        if suffix.ends_with('i') {
            Format::BinarySI
        } else if suffix.len() > 1 && (suffix.starts_with('e') || suffix.starts_with('E')) {
            Format::DecimalExponent
        } else {
            Format::DecimalSI
        }
    }
}

/// `num / 10^shift` rounded towards +infinity. Beyond 10^38 every i128 `num` is below one unit:
/// 1 when positive, 0 otherwise.
fn div_ceil_pow10(num: i128, shift: i64) -> i128 {
    if shift > 38 {
        return if num > 0 { 1 } else { 0 };
    }
    let div: i128 = 10i128.pow(shift as u32);
    let q = num.div_euclid(div);
    if num.rem_euclid(div) != 0 { q + 1 } else { q }
}

impl Quantity {
    /// The value in nano-units, rounded up (the finest precision Kubernetes keeps), saturated
    /// at the i128 range.
    pub fn nanos(&self) -> i128 {
        let mut num = self.mantissa;
        for _ in 0..self.exp2 {
            num = num.saturating_mul(2);
        }
        let e = self.exp10.saturating_add(9);
        if e >= 0 {
            for _ in 0..e.min(60) {
                num = num.saturating_mul(10);
            }
            num
        } else {
            div_ceil_pow10(num, -(e as i64))
        }
    }
}

/// Prints a value given in nano-units in its canonical form for `format`, as apimachinery's
/// `Quantity.String()`: decimal values take the largest SI suffix that keeps the number whole
/// (`1500m`, `1`, `2k`); binary values take the largest power-of-1024 suffix that does
/// (`128Mi`, `1536Mi`), and print as decimal when below 1024 or fractional.
pub fn format_nanos(nanos: i128, format: Format) -> String {
    const NANO: i128 = 1_000_000_000;
    if nanos == 0 {
        return "0".to_string();
    }
    if format == Format::BinarySI && nanos.abs() >= 1024 * NANO && nanos % NANO == 0 {
        let mut units = nanos / NANO;
        let mut i = 0;
        while i < 6 && units % 1024 == 0 {
            units /= 1024;
            i += 1;
        }
        let suffix = ["", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"][i];
        return format!("{units}{suffix}");
    }
    // The largest exponent e (a multiple of 3, -9..=18) with nanos divisible by 10^(e+9).
    let mut e = 18i32;
    while e > -9 && nanos % 10i128.pow((e + 9) as u32) != 0 {
        e -= 3;
    }
    let mantissa = nanos / 10i128.pow((e + 9) as u32);
    let suffix = match (format, e) {
        (_, 0) => String::new(),
        (Format::DecimalExponent, e) => format!("e{e}"),
        (_, -9) => "n".into(),
        (_, -6) => "u".into(),
        (_, -3) => "m".into(),
        (_, 3) => "k".into(),
        (_, 6) => "M".into(),
        (_, 9) => "G".into(),
        (_, 12) => "T".into(),
        (_, 15) => "P".into(),
        _ => "E".into(),
    };
    format!("{mantissa}{suffix}")
}

/// A quantity string in its canonical form (`1000m` → `1`, `1024Ki` → `1Mi`), or `None` when
/// malformed.
pub fn canonical(s: &str) -> Option<String> {
    let q = Quantity::parse(s).ok()?;
    Some(format_nanos(q.nanos(), Format::of(s)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_forms() {
        assert_eq!(parse_milli("100m"), Some(100));
        assert_eq!(parse_milli("1"), Some(1000));
        assert_eq!(parse_milli("1.5"), Some(1500));
        assert_eq!(parse_milli("0.1"), Some(100));
        assert_eq!(parse_milli(".5"), Some(500));
        assert_eq!(parse_milli("2e3"), Some(2_000_000));
        assert_eq!(parse_milli("2E-3"), Some(2));
        assert_eq!(parse_milli("1u"), Some(1), "rounded up");
        assert_eq!(parse_milli("0"), Some(0));
        assert_eq!(parse_milli("+2"), Some(2000));
    }

    #[test]
    fn memory_forms() {
        assert_eq!(parse_value("128Mi"), Some(128 * 1024 * 1024));
        assert_eq!(parse_value("1G"), Some(1_000_000_000));
        assert_eq!(parse_value("1Gi"), Some(1 << 30));
        assert_eq!(parse_value("1.5Gi"), Some(3 << 29));
        assert_eq!(parse_value("1k"), Some(1000));
        assert_eq!(parse_value("1Ki"), Some(1024));
        assert_eq!(parse_value("1E"), Some(1_000_000_000_000_000_000));
        assert_eq!(parse_value("100m"), Some(1), "fractions round up");
        assert_eq!(parse_value("-100m"), Some(0), "rounds towards +inf");
        assert_eq!(parse_value("-1.5"), Some(-1));
    }

    #[test]
    fn malformed() {
        for s in [
            "",
            "abc",
            "1x",
            "Mi",
            "1 Mi",
            "1.2.3",
            "1e",
            "e3",
            "1Mb",
            "--1",
            "1e1000000",
        ] {
            assert!(Quantity::parse(s).is_err(), "{s:?} should be rejected");
        }
    }

    #[test]
    fn saturates() {
        assert_eq!(parse_value("8Ei"), Some(i64::MAX));
        assert_eq!(parse_milli("100E"), Some(i64::MAX));
        assert_eq!(parse_value("1e400"), Some(i64::MAX));
        assert_eq!(parse_value("1e-400"), Some(1));
        assert_eq!(
            parse_value("123456789012345678901234567890123456789"),
            Some(i64::MAX)
        );
    }

    #[test]
    fn canonical_forms() {
        for (given, want) in [
            ("500m", "500m"),
            ("1000m", "1"),
            ("1500m", "1500m"),
            ("0.5", "500m"),
            ("1", "1"),
            ("1000", "1k"),
            ("1200", "1200"),
            ("128Mi", "128Mi"),
            ("1024Ki", "1Mi"),
            ("1536Mi", "1536Mi"),
            ("1.5Gi", "1536Mi"),
            ("512", "512"),
            ("1G", "1G"),
            ("1e3", "1e3"),
            ("0", "0"),
            ("100n", "100n"),
            ("16Gi", "16Gi"),
        ] {
            assert_eq!(canonical(given).as_deref(), Some(want), "{given}");
        }
        assert_eq!(Format::of("1Gi"), Format::BinarySI);
        assert_eq!(Format::of("1E"), Format::DecimalSI);
        assert_eq!(Format::of("2e3"), Format::DecimalExponent);
        assert_eq!(canonical("x"), None);
    }
}
