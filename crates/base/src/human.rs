//! Figures for people: counts with their digits grouped.
//!
//! Owns: how a number reads in a message or on a terminal, so that every command and diagnostic
//! writes the same figure the same way. Does not decide what is shown (the callers do) nor
//! colour or layout.

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
}
