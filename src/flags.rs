//! Typed values of command-line flags: the clap value parsers that turn what a user typed into
//! a value that cannot be invalid, so no command checks a flag again (or panics on one).
//!
//! Owns: durations (`--timeout`, `--grace`, `--older-than`) and times (`--since`). Does not own the flags themselves
//! (`cli` declares them) nor enumerations: those derive `clap::ValueEnum` on the type the
//! command consumes (`model::Phase`, `observe::GraphFormat`, `queue::TaskState`).

use std::time::Duration;

/// A duration as flags take it: seconds (`10`, `2.5`, `1e3`), or a number with a unit `s`,
/// `m`, `h` or `d` (`90s`, `30m`, `12h`, `7d`). Refuses what is no finite, non-negative duration
/// (`inf`, `nan`, `-1`) and what does not fit one (`1e300`); clap names the flag in its error.
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, scale) = match text.char_indices().next_back() {
        Some((i, 's')) => (&text[..i], 1.0),
        Some((i, 'm')) => (&text[..i], 60.0),
        Some((i, 'h')) => (&text[..i], 3_600.0),
        Some((i, 'd')) => (&text[..i], 86_400.0),
        _ => (text, 1.0),
    };
    let value: f64 = number
        .parse()
        .ok()
        .filter(|v: &f64| v.is_finite())
        .ok_or_else(|| {
            format!("`{text}` is not a duration; write seconds (10, 2.5) or 30m, 12h, 7d")
        })?;
    if value < 0.0 {
        return Err(format!("`{text}` is negative; a duration is 0 or more"));
    }
    Duration::try_from_secs_f64(value * scale)
        .map_err(|_| format!("`{text}` is too long for a duration; at most ~584 billion years"))
}

/// A point in time as `--since` takes it: RFC 3339 (`2026-11-24T10:00:00Z`), or a date
/// (`2026-11-24`, its midnight UTC).
pub(crate) fn parse_time(text: &str) -> Result<chrono::DateTime<chrono::Utc>, String> {
    chrono::DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&chrono::Utc))
        .ok()
        .or_else(|| {
            chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d")
                .ok()
                .and_then(|d| d.and_hms_opt(0, 0, 0))
                .map(|t| t.and_utc())
        })
        .ok_or_else(|| format!("`{text}` is not a date: use YYYY-MM-DD or an RFC 3339 time"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_seconds_and_units() {
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(604_800)));
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("2.5"), Ok(Duration::from_millis(2_500)));
        assert_eq!(parse_duration("1e3"), Ok(Duration::from_secs(1_000)));
        assert_eq!(parse_duration("30m"), Ok(Duration::from_secs(1_800)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
    }

    #[test]
    fn times_parse_dates_and_rfc_3339() {
        let midnight = parse_time("2026-11-24").unwrap();
        assert_eq!(midnight.to_rfc3339(), "2026-11-24T00:00:00+00:00");
        let t = parse_time("2026-11-24T10:00:00+02:00").unwrap();
        assert_eq!(t.to_rfc3339(), "2026-11-24T08:00:00+00:00");
        assert!(parse_time("yesterday").is_err());
        assert!(parse_time("2026-13-01").is_err());
    }

    #[test]
    fn durations_refuse_what_is_no_duration() {
        for bad in [
            "3w", "inf", "-inf", "nan", "NaN", "-1", "-0.5", "1e300", "", "m", "ten",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad} was accepted");
        }
    }
}
