//! Kubernetes resource quantities (`1Gi`, `500m`, `2`, `1e3`): just enough to add memory limits
//! and check user values. k8s-openapi keeps quantities as strings and no maintained crate does
//! this small job without pulling in a large dependency, so it is written here.

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

/// The quantity as a number and a power-of-ten or power-of-two multiplier.
fn parse(q: &str) -> Option<f64> {
    let q = q.trim();
    let split = q
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(q.len());
    let (num, suffix) = q.split_at(split);
    let n: f64 = num.parse().ok()?;
    let mult = match suffix {
        "" => 1.0,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024.0,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        s if s.starts_with(['e', 'E']) => 10f64.powi(s[1..].parse().ok()?),
        _ => return None,
    };
    let v = n * mult;
    (v.is_finite() && v >= 0.0).then_some(v)
}

/// Bytes in a memory quantity (rounded up).
pub fn bytes(q: &Quantity) -> Option<u64> {
    parse(&q.0).map(|v| v.ceil() as u64)
}

/// Millicores in a CPU quantity (rounded up).
pub fn millicores(q: &Quantity) -> Option<u64> {
    parse(&q.0).map(|v| (v * 1000.0).ceil() as u64)
}

/// Bytes written with the largest binary suffix that divides them (`1536Mi`).
pub fn format_bytes(b: u64) -> Quantity {
    for (suffix, unit) in [
        ("Ei", 1u64 << 60),
        ("Pi", 1 << 50),
        ("Ti", 1 << 40),
        ("Gi", 1 << 30),
        ("Mi", 1 << 20),
        ("Ki", 1 << 10),
    ] {
        if b >= unit && b.is_multiple_of(unit) {
            return Quantity(format!("{}{suffix}", b / unit));
        }
    }
    Quantity(b.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(s: &str) -> Quantity {
        Quantity(s.into())
    }

    #[test]
    fn parses_and_formats() {
        assert_eq!(bytes(&q("1Gi")), Some(1 << 30));
        assert_eq!(bytes(&q("448Mi")), Some(448 << 20));
        assert_eq!(bytes(&q("1G")), Some(1_000_000_000));
        assert_eq!(bytes(&q("1e3")), Some(1000));
        assert_eq!(millicores(&q("500m")), Some(500));
        assert_eq!(millicores(&q("3")), Some(3000));
        assert_eq!(millicores(&q("0.5")), Some(500));
        assert_eq!(bytes(&q("lots")), None);
        assert_eq!(bytes(&q("-1")), None);
        assert_eq!(format_bytes(3 << 29).0, "1536Mi");
        assert_eq!(format_bytes(1 << 30).0, "1Gi");
        assert_eq!(format_bytes(1000).0, "1000");
    }
}
