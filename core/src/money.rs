//! Money as integers: [`Usd`] amounts in pico-USD and [`PricePerMtok`] prices
//! in nano-USD per million tokens.
//!
//! No `f64` takes part in any arithmetic here. Amounts are parsed from and
//! printed as exact decimal strings (`"50.00"`, `"0.000123"`), which is also
//! their serde form, so a ledger or a config snapshot never goes through a
//! binary float.
//!
//! Why these units: the cheapest catalogue prices have six decimals of a dollar
//! per million tokens (e.g. `$0.003625/MTok`), so one token of such a model
//! costs `3.625e-9` USD. A nano-USD-per-MTok price is therefore an integer for
//! every real price, and the cost of one token (`nanos / 1000` pico-USD) is an
//! exact integer of pico-USD whenever the price has at most six decimals. An
//! `i128` of pico-USD still holds ±1.7e26 USD, so sums never overflow in
//! practice (they saturate if they ever would).

use std::{
    fmt,
    iter::Sum,
    ops::{Add, AddAssign, Sub, SubAssign},
    str::FromStr,
};

use serde::{Deserialize, Deserializer, Serialize, Serializer, de};

/// Pico-USD (1e-12 USD) in one USD.
pub const PICOS_PER_USD: i128 = 1_000_000_000_000;

/// Decimal places of a [`Usd`] amount (pico-USD).
const USD_DECIMALS: u32 = 12;
/// Decimal places of a [`PricePerMtok`] (nano-USD).
const PRICE_DECIMALS: u32 = 9;

/// An amount of money in US dollars, stored exactly as an integer number of
/// pico-USD (1e-12 USD).
///
/// - Text and serde form: an exact decimal string with at least two decimals
///   and no trailing zeros beyond them, e.g. `"50.00"`, `"1.50"`,
///   `"0.000123"`, `"-2.25"`.
/// - Arithmetic (`+`, `-`, [`Sum`]) saturates at the `i128` bounds instead of
///   panicking; use [`Usd::checked_add`] / [`Usd::checked_sub`] to detect it.
/// - [`FromStr`] accepts only non-negative amounts (config input such as a
///   budget limit); [`Usd::parse_signed`] and deserialization also accept a
///   leading `-`, so every value serializes and deserializes losslessly.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Usd(i128);

/// A price in US dollars per million tokens, stored exactly as an integer
/// number of nano-USD (1e-9 USD) per million tokens: `$0.075/MTok` is
/// `75_000_000`.
///
/// Text and serde form: a decimal string with up to 9 decimals, printed like
/// [`Usd`] (`"0.075"`, `"3.00"`). Deserialization also accepts a JSON/YAML
/// number (`3`, `0.075`): an integer is taken as is, a float through the
/// shortest decimal text that round-trips to the same `f64` (Rust's `{}`
/// formatting), which is exactly the literal written for any price with at
/// most 15 significant digits; that text is then parsed like a string. No
/// float arithmetic takes place.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct PricePerMtok(u64);

/// A string that is not a valid [`Usd`] amount.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParseUsdError {
    /// Not of the form `digits[.digits]`.
    #[error(
        "{0:?} is not a decimal USD amount: use digits with an optional '.' and up to 12 decimals, e.g. \"50.00\""
    )]
    Syntax(String),
    /// More than 12 decimals (finer than one pico-USD).
    #[error("{0:?} has more than 12 decimals: USD amounts are exact to the pico-dollar (1e-12)")]
    TooManyDecimals(String),
    /// A `-` where only non-negative amounts are accepted.
    #[error("{0:?} is negative: a non-negative USD amount is required here")]
    Negative(String),
    /// Too large to represent.
    #[error("{0:?} is too large for a USD amount")]
    Overflow(String),
}

/// A string that is not a valid [`PricePerMtok`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParsePriceError {
    /// Not of the form `digits[.digits]`.
    #[error(
        "{0:?} is not a decimal price in USD per million tokens: use digits with an optional '.' and up to 9 decimals, e.g. \"0.075\""
    )]
    Syntax(String),
    /// More than 9 decimals (finer than one nano-USD per million tokens).
    #[error(
        "{0:?} has more than 9 decimals: prices are exact to the nano-dollar per million tokens"
    )]
    TooManyDecimals(String),
    /// Prices are never negative.
    #[error("{0:?} is negative: a price must be zero or more")]
    Negative(String),
    /// Too large to represent.
    #[error("{0:?} is too large for a price per million tokens")]
    Overflow(String),
}

/// Why a decimal string did not parse, before it is given a type-specific
/// message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum DecimalError {
    Syntax,
    TooManyDecimals,
    Overflow,
}

// === impl Usd ===

impl Usd {
    /// Zero dollars.
    pub const ZERO: Usd = Usd(0);
    /// Pico-USD in one USD (same as [`PICOS_PER_USD`]).
    pub const PICOS_PER_USD: i128 = PICOS_PER_USD;
    /// The largest representable amount.
    pub const MAX: Usd = Usd(i128::MAX);
    /// The smallest (most negative) representable amount.
    pub const MIN: Usd = Usd(i128::MIN);

    /// An amount of `picos` pico-USD.
    pub const fn from_picos(picos: i128) -> Usd {
        Usd(picos)
    }

    /// True for $0.
    pub const fn is_zero(&self) -> bool {
        self.0 == 0
    }

    /// The amount in pico-USD.
    pub const fn picos(self) -> i128 {
        self.0
    }

    /// A whole number of dollars (saturating; no `i64` can actually overflow).
    pub const fn from_dollars(dollars: i64) -> Usd {
        Usd((dollars as i128).saturating_mul(PICOS_PER_USD))
    }

    /// Whether the amount is below zero.
    pub const fn is_negative(self) -> bool {
        self.0 < 0
    }

    /// `self + rhs`, or `None` on overflow.
    pub const fn checked_add(self, rhs: Usd) -> Option<Usd> {
        match self.0.checked_add(rhs.0) {
            Some(v) => Some(Usd(v)),
            None => None,
        }
    }

    /// `self - rhs`, or `None` on overflow.
    pub const fn checked_sub(self, rhs: Usd) -> Option<Usd> {
        match self.0.checked_sub(rhs.0) {
            Some(v) => Some(Usd(v)),
            None => None,
        }
    }

    /// `self + rhs`, clamped to [`Usd::MIN`]..=[`Usd::MAX`].
    pub const fn saturating_add(self, rhs: Usd) -> Usd {
        Usd(self.0.saturating_add(rhs.0))
    }

    /// `self - rhs`, clamped to [`Usd::MIN`]..=[`Usd::MAX`].
    pub const fn saturating_sub(self, rhs: Usd) -> Usd {
        Usd(self.0.saturating_sub(rhs.0))
    }

    /// Parses a decimal amount that may start with `-` (e.g. a ledger delta).
    /// Otherwise exactly like [`FromStr`].
    pub fn parse_signed(s: &str) -> Result<Usd, ParseUsdError> {
        match s.strip_prefix('-') {
            Some(rest) => {
                // `--5` or `-` alone are syntax errors, reported on the whole input.
                let picos = parse_decimal(rest, USD_DECIMALS).map_err(|e| usd_error(s, e))?;
                let picos =
                    i128::try_from(picos).map_err(|_| ParseUsdError::Overflow(s.to_owned()))?;
                Ok(Usd(-picos))
            }
            None => s.parse(),
        }
    }
}

/// Parses a non-negative decimal amount, exactly.
///
/// The accepted grammar is strict: one or more ASCII digits, optionally
/// followed by `.` and one to 12 digits (`"50"`, `"50.00"`, `"0.000001"`).
/// Rejected: the empty string, signs (`"-1"`, `"+1"`; see
/// [`Usd::parse_signed`]), a dot without digits on either side (`"1."`,
/// `".5"`), exponents (`"1e3"`), whitespace, `_` separators, more than 12
/// decimals, and values beyond the `i128` range.
impl FromStr for Usd {
    type Err = ParseUsdError;

    fn from_str(s: &str) -> Result<Usd, ParseUsdError> {
        if s.starts_with('-') {
            return Err(ParseUsdError::Negative(s.to_owned()));
        }
        let picos = parse_decimal(s, USD_DECIMALS).map_err(|e| usd_error(s, e))?;
        i128::try_from(picos)
            .map(Usd)
            .map_err(|_| ParseUsdError::Overflow(s.to_owned()))
    }
}

impl fmt::Display for Usd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_decimal(f, self.0 < 0, self.0.unsigned_abs(), USD_DECIMALS)
    }
}

impl fmt::Debug for Usd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Usd({self})")
    }
}

impl Add for Usd {
    type Output = Usd;

    /// Saturating addition.
    fn add(self, rhs: Usd) -> Usd {
        self.saturating_add(rhs)
    }
}

impl Sub for Usd {
    type Output = Usd;

    /// Saturating subtraction.
    fn sub(self, rhs: Usd) -> Usd {
        self.saturating_sub(rhs)
    }
}

impl AddAssign for Usd {
    fn add_assign(&mut self, rhs: Usd) {
        *self = self.saturating_add(rhs);
    }
}

impl SubAssign for Usd {
    fn sub_assign(&mut self, rhs: Usd) {
        *self = self.saturating_sub(rhs);
    }
}

impl Sum for Usd {
    fn sum<I: Iterator<Item = Usd>>(iter: I) -> Usd {
        iter.fold(Usd::ZERO, Usd::saturating_add)
    }
}

impl<'a> Sum<&'a Usd> for Usd {
    fn sum<I: Iterator<Item = &'a Usd>>(iter: I) -> Usd {
        iter.copied().sum()
    }
}

impl Serialize for Usd {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// Accepts a decimal string (signed, see [`Usd::parse_signed`]) or an integer
/// number of whole dollars. Floats are rejected: write `"12.34"`.
impl<'de> Deserialize<'de> for Usd {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Usd, D::Error> {
        struct Visitor;

        impl de::Visitor<'_> for Visitor {
            type Value = Usd;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a decimal USD amount as a string, e.g. \"50.00\"")
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Usd, E> {
                Usd::parse_signed(v).map_err(E::custom)
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Usd, E> {
                Ok(Usd::from_dollars(v))
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Usd, E> {
                Ok(Usd((v as i128).saturating_mul(PICOS_PER_USD)))
            }
        }

        deserializer.deserialize_any(Visitor)
    }
}

fn usd_error(input: &str, e: DecimalError) -> ParseUsdError {
    let input = input.to_owned();
    match e {
        DecimalError::Syntax => ParseUsdError::Syntax(input),
        DecimalError::TooManyDecimals => ParseUsdError::TooManyDecimals(input),
        DecimalError::Overflow => ParseUsdError::Overflow(input),
    }
}

// === impl PricePerMtok ===

impl PricePerMtok {
    /// A price of zero.
    pub const ZERO: PricePerMtok = PricePerMtok(0);

    /// A price of `nanos` nano-USD per million tokens (`75_000_000` is
    /// `$0.075/MTok`).
    pub const fn from_nanos(nanos: u64) -> PricePerMtok {
        PricePerMtok(nanos)
    }

    /// The price in nano-USD per million tokens.
    pub const fn nanos(self) -> u64 {
        self.0
    }

    /// The cost of `tokens` tokens at this price.
    ///
    /// One token costs `nanos / 1000` pico-USD, so the result is
    /// `tokens × nanos / 1000` pico-USD: exact whenever the price has at most
    /// six decimals (every real price does), otherwise rounded **up** to the
    /// next pico-USD, so costs are never under-counted. Computed in `u128`;
    /// `u64::MAX × u64::MAX / 1000` fits an `i128`, so it cannot overflow.
    pub const fn cost(self, tokens: u64) -> Usd {
        let product = (tokens as u128) * (self.0 as u128);
        let picos = product.div_ceil(1000);
        // picos <= (2^64-1)^2 / 1000 < 2^118 < i128::MAX: the cast is lossless.
        Usd(picos as i128)
    }
}

/// Parses a non-negative decimal price in USD per million tokens, exactly:
/// digits, optionally `.` and one to 9 digits (`"3"`, `"0.075"`). The same
/// strict grammar as [`Usd`]'s [`FromStr`], with 9 decimals instead of 12.
impl FromStr for PricePerMtok {
    type Err = ParsePriceError;

    fn from_str(s: &str) -> Result<PricePerMtok, ParsePriceError> {
        if s.starts_with('-') {
            return Err(ParsePriceError::Negative(s.to_owned()));
        }
        let input = || s.to_owned();
        let nanos = parse_decimal(s, PRICE_DECIMALS).map_err(|e| match e {
            DecimalError::Syntax => ParsePriceError::Syntax(input()),
            DecimalError::TooManyDecimals => ParsePriceError::TooManyDecimals(input()),
            DecimalError::Overflow => ParsePriceError::Overflow(input()),
        })?;
        u64::try_from(nanos)
            .map(PricePerMtok)
            .map_err(|_| ParsePriceError::Overflow(input()))
    }
}

impl fmt::Display for PricePerMtok {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_decimal(f, false, u128::from(self.0), PRICE_DECIMALS)
    }
}

impl fmt::Debug for PricePerMtok {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PricePerMtok({self})")
    }
}

impl Serialize for PricePerMtok {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for PricePerMtok {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<PricePerMtok, D::Error> {
        deserializer.deserialize_any(PriceVisitor)
    }
}

/// The serde visitor behind [`PricePerMtok`]'s `Deserialize`, public to the
/// crate so composite price types can reuse it.
pub(crate) struct PriceVisitor;

impl de::Visitor<'_> for PriceVisitor {
    type Value = PricePerMtok;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a price in USD per million tokens, e.g. \"0.075\"")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<PricePerMtok, E> {
        v.parse().map_err(E::custom)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<PricePerMtok, E> {
        v.checked_mul(1_000_000_000)
            .map(PricePerMtok)
            .ok_or_else(|| E::custom(ParsePriceError::Overflow(v.to_string())))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<PricePerMtok, E> {
        match u64::try_from(v) {
            Ok(v) => self.visit_u64(v),
            Err(_) => Err(E::custom(ParsePriceError::Negative(v.to_string()))),
        }
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<PricePerMtok, E> {
        // Shortest round-trip decimal text of the float (never an exponent in
        // Rust's `{}`), then the exact string parser: no float arithmetic.
        format!("{v}").parse().map_err(E::custom)
    }
}

// === decimal text ===

/// Parses `digits[.digits]` into an integer scaled by `10^decimals`.
fn parse_decimal(s: &str, decimals: u32) -> Result<u128, DecimalError> {
    let (int, frac) = match s.split_once('.') {
        Some((int, frac)) => (int, Some(frac)),
        None => (s, None),
    };
    let all_digits = |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit());
    if !all_digits(int) || frac.is_some_and(|f| !all_digits(f)) {
        return Err(DecimalError::Syntax);
    }
    let frac = frac.unwrap_or("");
    if frac.len() > decimals as usize {
        return Err(DecimalError::TooManyDecimals);
    }
    let mut value: u128 = 0;
    for b in int.bytes().chain(frac.bytes()) {
        value = value
            .checked_mul(10)
            .and_then(|v| v.checked_add(u128::from(b - b'0')))
            .ok_or(DecimalError::Overflow)?;
    }
    // `frac.len() <= decimals` was checked above.
    let missing = decimals - frac.len() as u32;
    value
        .checked_mul(10u128.pow(missing))
        .ok_or(DecimalError::Overflow)
}

/// Writes `value / 10^decimals` with at least two decimals and no trailing
/// zeros beyond them, preceded by `-` when `negative`.
///
/// Every settled request prints its cost at least twice (the ledger line
/// and the cost header), so this works in a stack buffer: no allocation and
/// no `u128` division while the value fits in a `u64` (below $18M as Usd).
fn write_decimal(
    f: &mut fmt::Formatter<'_>,
    negative: bool,
    value: u128,
    decimals: u32,
) -> fmt::Result {
    // u128::MAX has 39 digits; `decimals` is at most 12.
    const DIGITS: usize = 40;
    let decimals = decimals as usize;
    let mut digits = [b'0'; DIGITS];
    let mut at = DIGITS;
    let mut rest = value;
    while rest > u128::from(u64::MAX) {
        at -= 1;
        digits[at] = b'0' + (rest % 10) as u8;
        rest /= 10;
    }
    let mut rest = rest as u64;
    while rest > 0 {
        at -= 1;
        digits[at] = b'0' + (rest % 10) as u8;
        rest /= 10;
    }
    // At least one integer digit ("0.05"); the buffer is pre-filled with '0'.
    let point = DIGITS - decimals;
    let start = at.min(point - 1);
    let mut end = DIGITS;
    while end > point + 2 && digits[end - 1] == b'0' {
        end -= 1;
    }
    let mut out = [0u8; DIGITS + 2];
    let mut n = 0;
    if negative {
        out[0] = b'-';
        n = 1;
    }
    for part in [&digits[start..point], b".", &digits[point..end]] {
        out[n..n + part.len()].copy_from_slice(part);
        n += part.len();
    }
    f.write_str(std::str::from_utf8(&out[..n]).map_err(|_| fmt::Error)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn usd_parses_exact_decimals() {
        assert_eq!("50".parse::<Usd>(), Ok(Usd::from_picos(50 * PICOS_PER_USD)));
        assert_eq!(
            "50.00".parse::<Usd>(),
            Ok(Usd::from_picos(50 * PICOS_PER_USD))
        );
        assert_eq!("0.000001".parse::<Usd>(), Ok(Usd::from_picos(1_000_000)));
        assert_eq!("0.000000000001".parse::<Usd>(), Ok(Usd::from_picos(1)));
        assert_eq!(
            "007.5".parse::<Usd>(),
            Ok(Usd::from_picos(7_500_000_000_000))
        );
        assert_eq!(
            Usd::parse_signed("-1.5"),
            Ok(Usd::from_picos(-1_500_000_000_000))
        );
        assert_eq!(Usd::parse_signed("2"), Ok(Usd::from_dollars(2)));
    }

    #[test]
    fn usd_rejects_everything_else() {
        for bad in [
            "", "1.", ".5", "1e3", "1E3", " 1", "1 ", "+1", "1,5", "1_000", "0x10", "1.2.3", "NaN",
            "inf", "١",
        ] {
            assert!(
                matches!(bad.parse::<Usd>(), Err(ParseUsdError::Syntax(_))),
                "{bad:?} should be a syntax error"
            );
        }
        assert!(matches!(
            "-1".parse::<Usd>(),
            Err(ParseUsdError::Negative(_))
        ));
        assert!(matches!(
            Usd::parse_signed("-"),
            Err(ParseUsdError::Syntax(_))
        ));
        assert!(matches!(
            Usd::parse_signed("--1"),
            Err(ParseUsdError::Syntax(_))
        ));
        assert!(matches!(
            "0.0000000000001".parse::<Usd>(),
            Err(ParseUsdError::TooManyDecimals(_))
        ));
        assert!(matches!(
            "1000000000000000000000000000".parse::<Usd>(),
            Err(ParseUsdError::Overflow(_))
        ));
        assert!(matches!(
            "99999999999999999999999999999999999999999".parse::<Usd>(),
            Err(ParseUsdError::Overflow(_))
        ));
    }

    #[test]
    fn usd_error_messages_are_actionable() {
        let err = "1e3".parse::<Usd>().unwrap_err();
        assert_eq!(
            err.to_string(),
            r#""1e3" is not a decimal USD amount: use digits with an optional '.' and up to 12 decimals, e.g. "50.00""#
        );
        let err = "-5".parse::<Usd>().unwrap_err();
        assert_eq!(
            err.to_string(),
            r#""-5" is negative: a non-negative USD amount is required here"#
        );
    }

    #[test]
    fn usd_display() {
        assert_eq!(Usd::from_dollars(50).to_string(), "50.00");
        assert_eq!(Usd::from_picos(123_000_000).to_string(), "0.000123");
        assert_eq!(Usd::from_picos(1_500_000_000_000).to_string(), "1.50");
        assert_eq!(Usd::from_picos(1_234_000_000_000).to_string(), "1.234");
        assert_eq!(Usd::from_picos(1).to_string(), "0.000000000001");
        assert_eq!(Usd::from_picos(-1_500_000_000_000).to_string(), "-1.50");
        assert_eq!(Usd::from_picos(-1).to_string(), "-0.000000000001");
        assert_eq!(Usd::ZERO.to_string(), "0.00");
        assert_eq!(
            Usd::MIN.to_string(),
            "-170141183460469231731687303.715884105728"
        );
        assert_eq!(format!("{:?}", Usd::from_dollars(3)), "Usd(3.00)");
    }

    #[test]
    fn usd_arithmetic_saturates() {
        let a = Usd::from_dollars(2);
        let b = Usd::from_picos(500_000_000_000);
        assert_eq!(a + b, Usd::from_picos(2_500_000_000_000));
        assert_eq!(b - a, Usd::from_picos(-1_500_000_000_000));
        assert_eq!(Usd::MAX + a, Usd::MAX);
        assert_eq!(Usd::MIN - a, Usd::MIN);
        assert_eq!(Usd::MAX.checked_add(a), None);
        assert_eq!(Usd::MIN.checked_sub(a), None);
        assert_eq!(a.checked_sub(b), Some(Usd::from_picos(1_500_000_000_000)));
        let mut c = a;
        c += b;
        c -= Usd::from_dollars(1);
        assert_eq!(c, Usd::from_picos(1_500_000_000_000));
        assert_eq!([a, b, c].iter().sum::<Usd>(), Usd::from_dollars(4));
        assert_eq!(
            [a, b].into_iter().sum::<Usd>(),
            Usd::from_picos(2_500_000_000_000)
        );
        assert_eq!([Usd::MAX, Usd::MAX].into_iter().sum::<Usd>(), Usd::MAX);
    }

    #[test]
    fn usd_serde_is_a_decimal_string() {
        let v = Usd::from_picos(-12_340_000_000_000);
        assert_eq!(serde_json::to_string(&v).unwrap(), r#""-12.34""#);
        assert_eq!(serde_json::from_str::<Usd>(r#""-12.34""#).unwrap(), v);
        assert_eq!(
            serde_json::from_str::<Usd>("50").unwrap(),
            Usd::from_dollars(50)
        );
        assert!(serde_json::from_str::<Usd>("12.34").is_err());
        assert!(serde_json::from_str::<Usd>(r#""1e3""#).is_err());
    }

    #[test]
    fn price_parse_and_display() {
        assert_eq!("0.075".parse(), Ok(PricePerMtok::from_nanos(75_000_000)));
        assert_eq!("3".parse(), Ok(PricePerMtok::from_nanos(3_000_000_000)));
        assert_eq!("0.000000001".parse(), Ok(PricePerMtok::from_nanos(1)));
        assert!(matches!(
            "0.0000000001".parse::<PricePerMtok>(),
            Err(ParsePriceError::TooManyDecimals(_))
        ));
        assert!(matches!(
            "-3".parse::<PricePerMtok>(),
            Err(ParsePriceError::Negative(_))
        ));
        assert!(matches!(
            "3.".parse::<PricePerMtok>(),
            Err(ParsePriceError::Syntax(_))
        ));
        assert!(matches!(
            "18446744073.709551616".parse::<PricePerMtok>(),
            Err(ParsePriceError::Overflow(_))
        ));
        assert_eq!(
            "18446744073.709551615".parse(),
            Ok(PricePerMtok::from_nanos(u64::MAX))
        );
        assert_eq!(PricePerMtok::from_nanos(75_000_000).to_string(), "0.075");
        assert_eq!(PricePerMtok::from_nanos(3_000_000_000).to_string(), "3.00");
        assert_eq!(PricePerMtok::from_nanos(3_750_000_000).to_string(), "3.75");
        assert_eq!(PricePerMtok::from_nanos(1).to_string(), "0.000000001");
    }

    #[test]
    fn price_serde() {
        let p = PricePerMtok::from_nanos(75_000_000);
        assert_eq!(serde_json::to_string(&p).unwrap(), r#""0.075""#);
        assert_eq!(
            serde_json::from_str::<PricePerMtok>(r#""0.075""#).unwrap(),
            p
        );
        // Numbers: the float's shortest decimal text, never float arithmetic.
        assert_eq!(serde_json::from_str::<PricePerMtok>("0.075").unwrap(), p);
        assert_eq!(
            serde_json::from_str::<PricePerMtok>("3").unwrap(),
            PricePerMtok::from_nanos(3_000_000_000)
        );
        assert_eq!(
            serde_json::from_str::<PricePerMtok>("18.75").unwrap(),
            PricePerMtok::from_nanos(18_750_000_000)
        );
        assert!(serde_json::from_str::<PricePerMtok>("-1").is_err());
        assert!(serde_json::from_str::<PricePerMtok>("0.08333333333333334").is_err());
    }

    #[test]
    fn price_cost() {
        // $0.075/MTok × 1,000,000 tokens = $0.075 = 75_000_000_000 pico.
        let p = PricePerMtok::from_nanos(75_000_000);
        assert_eq!(p.cost(1_000_000), Usd::from_picos(75_000_000_000));
        // One token: 75_000_000 / 1000 = 75_000 pico.
        assert_eq!(p.cost(1), Usd::from_picos(75_000));
        assert_eq!(p.cost(0), Usd::ZERO);
        // $0.000000001/MTok (1 nano): one token is 0.001 pico -> rounded up to 1.
        let tiny = PricePerMtok::from_nanos(1);
        assert_eq!(tiny.cost(1), Usd::from_picos(1));
        assert_eq!(tiny.cost(1000), Usd::from_picos(1));
        assert_eq!(tiny.cost(1001), Usd::from_picos(2));
        // The extremes cannot overflow: (2^64-1)^2 / 1000, rounded up.
        let max = PricePerMtok::from_nanos(u64::MAX).cost(u64::MAX);
        let expected = (u128::from(u64::MAX) * u128::from(u64::MAX)).div_ceil(1000);
        assert_eq!(max.picos(), i128::try_from(expected).unwrap());
    }

    /// The plain way to print a decimal (what `write_decimal` replaced).
    fn reference_decimal(sign: &str, value: u128, decimals: u32) -> String {
        let scale = 10u128.pow(decimals);
        let frac = format!("{:0width$}", value % scale, width = decimals as usize);
        let trimmed = frac.trim_end_matches('0');
        let frac = if trimmed.len() < 2 {
            &frac[..2]
        } else {
            trimmed
        };
        format!("{sign}{}.{frac}", value / scale)
    }

    /// The text form's rules, checked on the text itself.
    fn assert_canonical(text: &str) {
        let digits = text.strip_prefix('-').unwrap_or(text);
        let (int, frac) = digits.split_once('.').expect("a decimal point");
        assert!(
            !int.is_empty() && (int == "0" || !int.starts_with('0')),
            "{text}"
        );
        assert!(frac.len() >= 2, "{text}: at least two decimals");
        assert!(
            frac.len() == 2 || !frac.ends_with('0'),
            "{text}: trailing zero"
        );
        assert!(
            int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit()),
            "{text}"
        );
    }

    #[test]
    fn decimals_at_the_edges_of_the_fast_path() {
        let edge = i128::from(u64::MAX);
        for picos in [
            edge - 1,
            edge,
            edge + 1,
            edge * 10,
            -edge,
            -edge - 1,
            i128::MAX,
        ] {
            let v = Usd::from_picos(picos);
            let text = v.to_string();
            let sign = if picos < 0 { "-" } else { "" };
            assert_eq!(
                text,
                reference_decimal(sign, picos.unsigned_abs(), USD_DECIMALS)
            );
            assert_canonical(&text);
            assert_eq!(Usd::parse_signed(&text), Ok(v));
        }
        assert_eq!(Usd::from_picos(edge).to_string(), "18446744.073709551615");
        assert_eq!(Usd::from_picos(10 * PICOS_PER_USD).to_string(), "10.00");
        assert_eq!(Usd::from_picos(100_000_000_000).to_string(), "0.10");
        assert_eq!(
            PricePerMtok::from_nanos(u64::MAX).to_string(),
            "18446744073.709551615"
        );
        assert_eq!(PricePerMtok::from_nanos(0).to_string(), "0.00");
    }

    proptest! {
        #[test]
        fn usd_display_is_the_plain_decimal(picos in any::<i128>(), small in -10_000_000_000_000_000_i128..10_000_000_000_000_000) {
            for p in [picos, small] {
                let text = Usd::from_picos(p).to_string();
                let sign = if p < 0 { "-" } else { "" };
                prop_assert_eq!(&text, &reference_decimal(sign, p.unsigned_abs(), USD_DECIMALS));
                assert_canonical(&text);
            }
        }

        #[test]
        fn price_display_is_the_plain_decimal(nanos in any::<u64>(), small in 0u64..100_000_000_000) {
            for n in [nanos, small] {
                let text = PricePerMtok::from_nanos(n).to_string();
                prop_assert_eq!(&text, &reference_decimal("", u128::from(n), PRICE_DECIMALS));
                assert_canonical(&text);
            }
        }

        #[test]
        fn usd_display_round_trips(picos in any::<i128>()) {
            let v = Usd::from_picos(picos);
            let text = v.to_string();
            prop_assert_eq!(Usd::parse_signed(&text), Ok(v));
            let json = serde_json::to_string(&v).unwrap();
            prop_assert_eq!(serde_json::from_str::<Usd>(&json).unwrap(), v);
            if picos >= 0 {
                prop_assert_eq!(text.parse::<Usd>(), Ok(v));
            }
        }

        #[test]
        fn usd_small_amounts_round_trip(picos in -10_000_000_000_000_i128..10_000_000_000_000) {
            let v = Usd::from_picos(picos);
            prop_assert_eq!(Usd::parse_signed(&v.to_string()), Ok(v));
        }

        #[test]
        fn price_display_round_trips(nanos in any::<u64>()) {
            let p = PricePerMtok::from_nanos(nanos);
            prop_assert_eq!(p.to_string().parse::<PricePerMtok>(), Ok(p));
            let json = serde_json::to_string(&p).unwrap();
            prop_assert_eq!(serde_json::from_str::<PricePerMtok>(&json).unwrap(), p);
        }

        #[test]
        fn price_cost_is_exact_for_six_decimals(micros in 0u64..1_000_000_000, tokens in any::<u32>()) {
            // A price with at most 6 decimals is a whole number of micro-USD/MTok,
            // i.e. micros × 1000 nanos; a token then costs exactly `micros` pico.
            let p = PricePerMtok::from_nanos(micros * 1000);
            prop_assert_eq!(p.cost(u64::from(tokens)).picos(), i128::from(micros) * i128::from(tokens));
        }
    }
}
