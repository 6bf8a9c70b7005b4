use super::*;
use proptest::prelude::*;

#[test]
fn accepts_every_form() {
    let cases: &[(&str, u64)] = &[
        // plain bytes
        ("0", 0),
        ("1048576", 1 << 20),
        ("+42", 42),
        (" 42 ", 42),
        ("42B", 42),
        ("18446744073709551615", u64::MAX),
        // Kubernetes binary and decimal suffixes
        ("512Ki", 512 << 10),
        ("512Mi", 512 << 20),
        ("1Gi", 1 << 30),
        ("2Ti", 2 << 40),
        ("1Pi", 1 << 50),
        ("1Ei", 1 << 60),
        ("3k", 3_000),
        ("2M", 2_000_000),
        ("2G", 2_000_000_000),
        ("1T", 1_000_000_000_000),
        ("1P", 1_000_000_000_000_000),
        ("1E", 1_000_000_000_000_000_000),
        // Kubernetes decimal exponent
        ("1e9", 1_000_000_000),
        ("5E3", 5_000),
        ("1e0", 1),
        // human units, any case, with or without a space
        ("512MiB", 512 << 20),
        ("1GiB", 1 << 30),
        ("1gib", 1 << 30),
        ("1 GiB", 1 << 30),
        ("2GB", 2_000_000_000),
        ("2 gb", 2_000_000_000),
        ("4kB", 4_000),
        ("4KB", 4_000),
        ("4KiB", 4096),
        ("1TB", 1_000_000_000_000),
        ("1PiB", 1 << 50),
        ("1EB", 1_000_000_000_000_000_000),
        // fractions, exact, rounded up to a whole byte
        ("1.5Gi", 3 << 29),
        ("1.5 GB", 1_500_000_000),
        ("0.5Ki", 512),
        (".5Ki", 512),
        ("1.3Gi", 1_395_864_372),
        ("0.1", 1),
        ("1.", 1),
        ("15.99EiB", 18_435_214_858_663_483_147),
    ];
    for (s, want) in cases {
        assert_eq!(parse(s), Ok(*want), "{s}");
        assert_eq!(s.parse::<ByteSize>().map(ByteSize::bytes), Ok(*want), "{s}");
    }
}

#[test]
fn refuses_everything_else_with_a_message() {
    let cases: &[(&str, SizeError, &str)] = &[
        ("", SizeError::Empty, "empty size"),
        ("   ", SizeError::Empty, "empty size"),
        ("-1", SizeError::Negative("-1".into()), "negative"),
        ("-512Mi", SizeError::Negative("-512Mi".into()), "negative"),
        ("lots", SizeError::NotANumber("lots".into()), "not a size"),
        ("Gi", SizeError::NotANumber("Gi".into()), "not a size"),
        (".", SizeError::NotANumber(".".into()), "not a size"),
        ("1.2.3", SizeError::NotANumber("1.2.3".into()), "not a size"),
        ("512m", SizeError::Milli("512m".into()), "milli"),
        (
            "1x",
            SizeError::UnknownUnit {
                input: "1x".into(),
                unit: "x".into(),
            },
            "unknown unit \"x\"",
        ),
        (
            "1gi",
            SizeError::UnknownUnit {
                input: "1gi".into(),
                unit: "gi".into(),
            },
            "unknown unit",
        ),
        (
            "1K",
            SizeError::UnknownUnit {
                input: "1K".into(),
                unit: "K".into(),
            },
            "unknown unit",
        ),
        (
            "1b",
            SizeError::UnknownUnit {
                input: "1b".into(),
                unit: "b".into(),
            },
            "unknown unit",
        ),
        (
            "1e",
            SizeError::UnknownUnit {
                input: "1e".into(),
                unit: "e".into(),
            },
            "unknown unit",
        ),
        (
            "0x10",
            SizeError::UnknownUnit {
                input: "0x10".into(),
                unit: "x10".into(),
            },
            "unknown unit",
        ),
        (
            "1 G i",
            SizeError::UnknownUnit {
                input: "1 G i".into(),
                unit: "G i".into(),
            },
            "unknown unit",
        ),
        (
            "18446744073709551616",
            SizeError::TooLarge("18446744073709551616".into()),
            "too large",
        ),
        ("16Ei", SizeError::TooLarge("16Ei".into()), "too large"),
        ("1e20", SizeError::TooLarge("1e20".into()), "too large"),
        (
            "1e99999999999",
            SizeError::TooLarge("1e99999999999".into()),
            "too large",
        ),
        (
            "99999999999999999999999999999999999999999",
            SizeError::TooLarge("99999999999999999999999999999999999999999".into()),
            "too large",
        ),
        (
            "1.000000000000000000001",
            SizeError::TooPrecise("1.000000000000000000001".into()),
            "decimal places",
        ),
    ];
    for (s, want, text) in cases {
        let got = parse(s);
        assert_eq!(got.as_ref(), Err(want), "{s}");
        let msg = got.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(msg.contains(text), "{s}: {msg}");
    }
    // Messages that refuse a form say which forms are accepted.
    for s in ["lots", "1x", ""] {
        let msg = parse(s).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(msg.contains("512Mi") && msg.contains("1GiB"), "{s}: {msg}");
    }
}

#[test]
fn narrower_targets_refuse_what_does_not_fit() {
    assert_eq!(parse_i64("1Gi"), Ok(1 << 30));
    assert_eq!(parse_i64("8Ei"), Err(SizeError::TooLarge("8Ei".into())));
    assert_eq!(parse_usize("16Mi"), Ok(16 << 20));
}

#[test]
fn formats_in_the_shortest_exact_form() {
    assert_eq!(ByteSize(1 << 30).to_string(), "1Gi");
    assert_eq!(ByteSize(3 << 29).to_string(), "1536Mi");
    assert_eq!(ByteSize(1000).to_string(), "1000");
    assert_eq!(ByteSize(0).to_string(), "0");
}

proptest! {
    #[test]
    fn display_round_trips(b in any::<u64>()) {
        let s = ByteSize(b).to_string();
        prop_assert_eq!(parse(&s), Ok(b));
    }

    #[test]
    fn never_panics(s in "\\PC{0,40}") {
        let _ = parse(&s);
    }

    #[test]
    fn binary_units_are_exact(n in 0u64..1 << 20, shift in prop::sample::select(vec![10u32, 20, 30, 40])) {
        let suffix = match shift { 10 => "Ki", 20 => "Mi", 30 => "Gi", _ => "Ti" };
        prop_assert_eq!(parse(&format!("{n}{suffix}")), Ok(n << shift));
        prop_assert_eq!(parse(&format!("{n}{suffix}B")), Ok(n << shift));
    }
}
