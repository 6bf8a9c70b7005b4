//! Injected delays for tests and chaos drills: a runtime that loads or answers slowly on
//! purpose, so the mesh's timeouts, limits and retries can be exercised against the real
//! server instead of a stand-in.

use std::time::Duration;

/// A delay, fixed or drawn uniformly from a range on every call.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Delay {
    /// Shortest delay.
    pub min: Duration,
    /// Longest delay (equal to `min` for a fixed delay).
    pub max: Duration,
}

impl Delay {
    /// Parses `MS` or `MIN-MAX` (milliseconds); the error says what was expected.
    pub fn parse(text: &str) -> Result<Delay, String> {
        let ms = |s: &str| {
            s.trim()
                .parse::<u64>()
                .map(Duration::from_millis)
                .map_err(|_| {
                    format!("'{text}' is not a delay: use milliseconds, e.g. 500 or 100-2000")
                })
        };
        let (min, max) = match text.split_once('-') {
            Some((a, b)) => (ms(a)?, ms(b)?),
            None => {
                let d = ms(text)?;
                (d, d)
            }
        };
        if max < min {
            return Err(format!("'{text}': the range's end is below its start"));
        }
        Ok(Delay { min, max })
    }

    /// Whether this delays at all.
    pub fn is_zero(&self) -> bool {
        self.max.is_zero()
    }

    /// One delay drawn from the range.
    pub fn draw(&self) -> Duration {
        if self.max == self.min {
            return self.min;
        }
        let span = u64::try_from((self.max - self.min).as_micros()).unwrap_or(u64::MAX);
        self.min + Duration::from_micros(fastrand::u64(0..=span))
    }

    /// Sleeps for one drawn delay (nothing when zero).
    pub async fn wait(&self) {
        if !self.is_zero() {
            tokio::time::sleep(self.draw()).await;
        }
    }
}

/// Every injected fault of one server.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Faults {
    /// Added before every model load.
    pub load_delay: Delay,
    /// Added before every inference.
    pub infer_delay: Delay,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_fixed_delays_and_ranges() {
        assert_eq!(Delay::parse("0").map(|d| d.is_zero()), Ok(true));
        let d = Delay::parse("250").expect("fixed");
        assert_eq!(
            (d.min, d.max),
            (Duration::from_millis(250), Duration::from_millis(250))
        );
        let r = Delay::parse("100-2000").expect("range");
        for _ in 0..100 {
            let x = r.draw();
            assert!(x >= Duration::from_millis(100) && x <= Duration::from_millis(2000));
        }
        assert!(
            Delay::parse("2000-100")
                .unwrap_err()
                .contains("below its start")
        );
        assert!(Delay::parse("soon").unwrap_err().contains("not a delay"));
    }
}
