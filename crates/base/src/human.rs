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

/// A duration for people, to the unit that matters: `150ms`, `12s`, `5m3s`, `2h5m`, `3d2h`.
pub fn duration(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0 if d.as_millis() > 0 => format!("{}ms", d.as_millis()),
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{}s", s / 60, s % 60),
        3600..86400 => format!("{}h{}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{}h", s / 86400, s % 86400 / 3600),
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
        assert_eq!(duration(Duration::from_millis(150)), "150ms");
        assert_eq!(duration(Duration::ZERO), "0s");
        assert_eq!(duration(Duration::from_secs(59)), "59s");
        assert_eq!(duration(Duration::from_secs(303)), "5m3s");
        assert_eq!(duration(Duration::from_secs(7500)), "2h5m");
        assert_eq!(duration(Duration::from_secs(3 * 86400 + 7200)), "3d2h");
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
