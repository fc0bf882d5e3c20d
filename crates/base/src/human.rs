//! Figures for people: counts with their digits grouped, durations, plain text tables.
//!
//! Owns: how a number, a duration or a table reads in a message or on a terminal, so that every
//! command and diagnostic writes the same figure the same way. Does not decide what is shown
//! (the callers do) nor colour.

use std::time::Duration;

/// A count for people: `12345678` -> `12,345,678` (parser limits, token counts).
pub fn group_digits(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A duration for people, as precise as it matters: under ten seconds to the hundredth
/// (`0.15s`, `4.1s`), under a minute to the tenth (`12.4s`), with trailing zeros dropped
/// (`5s`, `0s`); beyond a minute in whole units, the smaller one in two digits so that columns
/// line up: `5m03s`, `2h05m`, `3d02h`. Rounded to the shown precision before the unit is chosen,
/// so `59.96s` reads `1m00s`, never `60.0s`. One function for every duration a person reads:
/// step timings in `status`, `report` and `logs`, waits and restarts in the supervisor's
/// messages and `swarm status`.
pub fn duration(d: Duration) -> String {
    let nanos = d.as_nanos();
    // Rounded to the nearest multiple of `unit` nanoseconds.
    let rounded = |unit: u128| (nanos + unit / 2) / unit;
    let hundredths = rounded(10_000_000);
    if hundredths < 1_000 {
        return decimal(hundredths, 100);
    }
    let tenths = rounded(100_000_000);
    if tenths < 600 {
        return decimal(tenths, 10);
    }
    let s = rounded(1_000_000_000);
    if s < 3600 {
        return format!("{}m{:02}s", s / 60, s % 60);
    }
    let m = rounded(60_000_000_000);
    if m < 24 * 60 {
        return format!("{}h{:02}m", m / 60, m % 60);
    }
    let h = rounded(3_600_000_000_000);
    format!("{}d{:02}h", h / 24, h % 24)
}

/// `n` units of `1/per` second (`per` is 10 or 100) as seconds, without trailing zeros.
fn decimal(n: u128, per: u128) -> String {
    let (whole, mut frac, mut digits) = (n / per, n % per, if per == 100 { 2 } else { 1 });
    while frac != 0 && frac % 10 == 0 {
        frac /= 10;
        digits -= 1;
    }
    if frac == 0 {
        format!("{whole}s")
    } else {
        format!("{whole}.{frac:0digits$}s")
    }
}

/// A plain text table; `align` has one letter per column, `l` (left) or `r` (right). Columns
/// are two spaces apart, as wide as their widest cell (in characters); lines carry no trailing
/// blanks.
pub fn table<R: AsRef<[String]>>(headers: &[&str], align: &str, rows: &[R]) -> String {
    let right: Vec<bool> = align.chars().map(|c| c == 'r').collect();
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.as_ref().iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<&str>| {
        let mut text = String::new();
        for (i, cell) in cells.iter().enumerate() {
            let width = widths.get(i).copied().unwrap_or(0);
            let pad = width.saturating_sub(cell.chars().count());
            if i > 0 {
                text.push_str("  ");
            }
            if right.get(i).copied().unwrap_or(false) {
                text.push_str(&" ".repeat(pad));
                text.push_str(cell);
            } else {
                text.push_str(cell);
                text.push_str(&" ".repeat(pad));
            }
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(headers.to_vec());
    for row in rows {
        line(row.as_ref().iter().map(String::as_str).collect());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_digits_by_thousands() {
        assert_eq!(group_digits(0), "0");
        assert_eq!(group_digits(999), "999");
        assert_eq!(group_digits(1000), "1,000");
        assert_eq!(group_digits(1234567), "1,234,567");
    }

    #[test]
    fn durations_read_well() {
        let ms = Duration::from_millis;
        let secs = Duration::from_secs;
        assert_eq!(duration(Duration::ZERO), "0s");
        assert_eq!(duration(ms(4)), "0s");
        assert_eq!(duration(ms(5)), "0.01s");
        assert_eq!(duration(ms(150)), "0.15s");
        assert_eq!(duration(ms(1500)), "1.5s");
        assert_eq!(duration(ms(4100)), "4.1s");
        assert_eq!(duration(ms(9994)), "9.99s");
        assert_eq!(duration(ms(9996)), "10s");
        assert_eq!(duration(ms(12_400)), "12.4s");
        assert_eq!(duration(ms(12_040)), "12s");
        assert_eq!(duration(secs(59)), "59s");
        assert_eq!(duration(ms(59_960)), "1m00s");
        assert_eq!(duration(secs(303)), "5m03s");
        assert_eq!(duration(ms(3_599_600)), "1h00m");
        assert_eq!(duration(secs(7500)), "2h05m");
        assert_eq!(duration(secs(86_370)), "1d00h");
        assert_eq!(duration(secs(3 * 86400 + 7200)), "3d02h");
    }

    #[test]
    fn tables_align_columns_and_trim_lines() {
        let rows = vec![
            vec!["a".to_string(), "1".to_string(), "".to_string()],
            vec!["long name".to_string(), "1234".to_string(), "x".to_string()],
        ];
        assert_eq!(
            table(&["NAME", "N", "NOTE"], "lrl", &rows),
            "NAME          N  NOTE\n\
             a             1\n\
             long name  1234  x\n"
        );
    }
}
