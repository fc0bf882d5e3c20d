//! Text helpers of the human renderings: seconds as durations, costs, token counts, times, shares, the
//! plain text table and the path taken on one line.
//!
//! Does not know any view: `report_text`, `status` and `logs` call these.

use super::fold::parse_ts;
use std::fmt::Write as _;
use std::time::Duration;

/// The path is printed in full in JSON; a human sees at most this many steps of it.
const PATH_SHOWN: usize = 80;

/// Seconds as the records hold them, as a duration for [`orchestrate_base::human::duration`]: a negative or NaN
/// count (clocks that stepped back) is none, one too large for a `Duration` the longest.
pub(crate) fn seconds(seconds: f64) -> Duration {
    Duration::try_from_secs_f64(seconds).unwrap_or(if seconds > 0.0 {
        Duration::MAX
    } else {
        Duration::ZERO
    })
}

pub(crate) fn fmt_cost(usd: f64) -> String {
    if usd == 0.0 {
        "-".into()
    } else if usd < 1.0 {
        format!("${usd:.4}")
    } else {
        format!("${usd:.2}")
    }
}

pub(crate) fn fmt_tokens(n: u64) -> String {
    if n == 0 {
        "-".into()
    } else if n < 1000 {
        n.to_string()
    } else if n < 1_000_000 {
        format!("{:.1}k", n as f64 / 1e3)
    } else {
        format!("{:.2}M", n as f64 / 1e6)
    }
}

/// An RFC 3339 record time as `2026-11-24 02:07:35Z` (the records keep microseconds).
pub(crate) fn fmt_time(ts: &str) -> String {
    match parse_ts(ts) {
        Some(t) => t.format("%Y-%m-%d %H:%M:%SZ").to_string(),
        None => ts.to_string(),
    }
}

pub(super) fn fmt_share(share: f64) -> String {
    if share == 0.0 {
        "-".into()
    } else {
        format!("{:.1}%", share * 100.0)
    }
}

/// The one table renderer of the tree (`orchestrate_base::human::table`).
pub(super) use orchestrate_base::human::table;

pub(super) fn render_path(path: &[String]) -> String {
    if path.is_empty() {
        return "(no step finished)".into();
    }
    let shown: Vec<&str> = path.iter().take(PATH_SHOWN).map(String::as_str).collect();
    let mut text = shown.join(" → ");
    if path.len() > PATH_SHOWN {
        let _ = write!(text, " … ({} more)", path.len() - PATH_SHOWN);
    }
    text
}
