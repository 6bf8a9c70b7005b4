//! Byte sizes as people and Kubernetes write them: `1048576`, `512Mi`, `1Gi`, `2G`, `1e9`,
//! `512MiB`, `1.5 GB`. Every size flag and environment value of modelmesh is parsed here, so they
//! all accept the same forms and refuse the rest with the same message.
//!
//! Written here rather than taken from `bytesize`: that crate goes through `f64` (inexact above
//! 2^53), saturates silently on overflow, does not know Kubernetes' exponent form (`1e9`) and
//! reads `512m` as megabytes where Kubernetes means milli. This is exact integer arithmetic and
//! names what it accepts when it refuses something.

use std::fmt;
use std::str::FromStr;

/// What the accepted forms are, for error messages and `--help`.
pub const ACCEPTED: &str = "plain bytes (1048576), a Kubernetes quantity (512Mi, 1Gi, 2G, 1e9) \
or a size with a unit (512MiB, 1GiB, 2GB, 1.5 GB)";

/// Why a size was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SizeError {
    #[error("empty size: expected {ACCEPTED}")]
    Empty,
    #[error("{0:?} is negative: sizes are 0 or more bytes")]
    Negative(String),
    #[error("{0:?} is not a size: expected {ACCEPTED}")]
    NotANumber(String),
    #[error("{input:?}: unknown unit {unit:?}; expected {ACCEPTED}")]
    UnknownUnit { input: String, unit: String },
    #[error(
        "{0:?}: 'm' means milli (a thousandth) in Kubernetes quantities; write Mi for mebibytes (2^20) or M for megabytes (10^6)"
    )]
    Milli(String),
    #[error("{0:?} is too large: the most is {max} bytes (16 EiB)", max = u64::MAX)]
    TooLarge(String),
    #[error("{0:?} has more than 20 decimal places")]
    TooPrecise(String),
}

/// A number of bytes parsed from any accepted form. `Display` writes it back in the shortest
/// exact Kubernetes form (`1Gi`, `1536Mi`, `1000`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ByteSize(pub u64);

impl ByteSize {
    /// The size in bytes.
    pub fn bytes(self) -> u64 {
        self.0
    }
}

impl FromStr for ByteSize {
    type Err = SizeError;
    fn from_str(s: &str) -> Result<Self, SizeError> {
        parse(s).map(ByteSize)
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&format_binary(self.0))
    }
}

/// The multiplier of a unit, or why it is refused.
fn unit(input: &str, unit: &str) -> Result<u128, SizeError> {
    const KI: u128 = 1024;
    const K: u128 = 1000;
    // Kubernetes' own suffixes are case-sensitive ('m' is milli, 'M' mega).
    let exact = match unit {
        "" | "B" => Some(1),
        "k" => Some(K),
        "M" => Some(K.pow(2)),
        "G" => Some(K.pow(3)),
        "T" => Some(K.pow(4)),
        "P" => Some(K.pow(5)),
        "E" => Some(K.pow(6)),
        "Ki" => Some(KI),
        "Mi" => Some(KI.pow(2)),
        "Gi" => Some(KI.pow(3)),
        "Ti" => Some(KI.pow(4)),
        "Pi" => Some(KI.pow(5)),
        "Ei" => Some(KI.pow(6)),
        _ => None,
    };
    if let Some(m) = exact {
        return Ok(m);
    }
    // Kubernetes' decimal exponent: 1e9, 5E3.
    if let Some(exp) = unit.strip_prefix(['e', 'E'])
        && !exp.is_empty()
        && exp.bytes().all(|b| b.is_ascii_digit())
    {
        return match exp.parse::<u32>() {
            Ok(e) if e <= 19 => Ok(10u128.pow(e)),
            _ => Err(SizeError::TooLarge(input.to_string())),
        };
    }
    // Units ending in B are the human forms, in any case: kb, MiB, GIB.
    let human = match unit.to_ascii_lowercase().as_str() {
        "kb" => Some(K),
        "mb" => Some(K.pow(2)),
        "gb" => Some(K.pow(3)),
        "tb" => Some(K.pow(4)),
        "pb" => Some(K.pow(5)),
        "eb" => Some(K.pow(6)),
        "kib" => Some(KI),
        "mib" => Some(KI.pow(2)),
        "gib" => Some(KI.pow(3)),
        "tib" => Some(KI.pow(4)),
        "pib" => Some(KI.pow(5)),
        "eib" => Some(KI.pow(6)),
        _ => None,
    };
    match (human, unit) {
        (Some(m), _) => Ok(m),
        (None, "m") => Err(SizeError::Milli(input.to_string())),
        (None, _) => Err(SizeError::UnknownUnit {
            input: input.to_string(),
            unit: unit.to_string(),
        }),
    }
}

/// Parses a size into bytes. A fraction of a byte rounds up, as Kubernetes does for memory.
pub fn parse(input: &str) -> Result<u64, SizeError> {
    let s = input.trim();
    if s.is_empty() {
        return Err(SizeError::Empty);
    }
    if s.starts_with('-') {
        return Err(SizeError::Negative(input.to_string()));
    }
    let s = s.strip_prefix('+').unwrap_or(s);
    let num_len = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, rest) = s.split_at(num_len);
    let (whole, frac) = num.split_once('.').unwrap_or((num, ""));
    if (whole.is_empty() && frac.is_empty()) || frac.contains('.') {
        return Err(SizeError::NotANumber(input.to_string()));
    }
    if frac.len() > 20 {
        return Err(SizeError::TooPrecise(input.to_string()));
    }
    let mult = unit(input, rest.trim_start())?;
    let too_large = || SizeError::TooLarge(input.to_string());
    let whole: u128 = if whole.is_empty() {
        0
    } else {
        whole.parse().map_err(|_| too_large())?
    };
    let mut bytes = whole.checked_mul(mult).ok_or_else(too_large)?;
    if !frac.is_empty() {
        let digits: u128 = frac.parse().map_err(|_| too_large())?;
        let scale = 10u128.pow(frac.len() as u32);
        let part = digits
            .checked_mul(mult)
            .ok_or_else(|| SizeError::TooPrecise(input.to_string()))?
            .div_ceil(scale);
        bytes = bytes.checked_add(part).ok_or_else(too_large)?;
    }
    u64::try_from(bytes).map_err(|_| too_large())
}

/// As [`parse`], for settings held in a `usize`.
pub fn parse_usize(input: &str) -> Result<usize, SizeError> {
    let b = parse(input)?;
    usize::try_from(b).map_err(|_| SizeError::TooLarge(input.to_string()))
}

/// As [`parse`], for settings held in an `i64` (upstream's env values are signed).
pub fn parse_i64(input: &str) -> Result<i64, SizeError> {
    let b = parse(input)?;
    i64::try_from(b).map_err(|_| SizeError::TooLarge(input.to_string()))
}

/// Bytes written with the largest binary suffix that divides them (`1536Mi`), else plain.
pub fn format_binary(b: u64) -> String {
    for (suffix, shift) in [
        ("Ei", 60),
        ("Pi", 50),
        ("Ti", 40),
        ("Gi", 30),
        ("Mi", 20),
        ("Ki", 10),
    ] {
        let unit = 1u64 << shift;
        if b >= unit && b.is_multiple_of(unit) {
            return format!("{}{suffix}", b / unit);
        }
    }
    b.to_string()
}

#[cfg(test)]
#[path = "size_tests.rs"]
mod tests;
