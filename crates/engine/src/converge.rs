//! Loops that do not converge: a step's findings that stop shrinking, or come back unchanged.
//!
//! Owns: counting a step's findings, their fingerprint, and the rule that calls a loop stalled.
//! The runner evaluates `converge.findings` on each visit and feeds the value here; this module
//! decides nothing else about control flow.

use serde_json::Value;

/// The visits of one step with `converge:` in one activation of its step list.
#[derive(Debug, Default, Clone)]
pub(crate) struct Track {
    /// Findings counted at each visit, in order.
    pub(crate) counts: Vec<u64>,
    /// Fingerprints of the findings at each visit.
    pub(crate) fingerprints: Vec<String>,
}

/// Why a loop was stopped.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Stall {
    /// `rounds` visits in a row found no fewer findings than the fewest before them; `counts` are
    /// the last `rounds + 1` counts (the best one and the visits after it).
    NotShrinking { counts: Vec<u64> },
    /// The findings of visit `round` (1-based) are those of the earlier visit `first`.
    Repeated {
        first: usize,
        round: usize,
        count: u64,
    },
}

/// How many findings a value holds: an array's length, or a non-negative whole number.
pub(crate) fn count(value: &Value) -> Result<u64, String> {
    match value {
        Value::Array(items) => Ok(items.len() as u64),
        Value::Number(n) => n
            .as_u64()
            .or_else(|| {
                n.as_f64()
                    .filter(|f| *f >= 0.0 && f.fract() == 0.0)
                    .map(|f| f as u64)
            })
            .ok_or_else(|| format!("the findings are the number {n}, not a count")),
        Value::Null => Ok(0),
        other => Err(format!(
            "the findings must be an array or a number, found {}",
            match other {
                Value::Bool(_) => "a boolean",
                Value::String(_) => "a string",
                _ => "an object",
            }
        )),
    }
}

/// A hash of the findings' canonical JSON (object keys sorted), so that the same findings in
/// another key order have the same fingerprint.
pub(crate) fn fingerprint(value: &Value) -> String {
    let canonical = serde_json::to_string(&canonical(value)).unwrap_or_default();
    orchestrate_lang::load::fingerprint(&canonical)
}

fn canonical(value: &Value) -> Value {
    match value {
        Value::Object(map) => {
            let sorted: std::collections::BTreeMap<&String, Value> =
                map.iter().map(|(k, v)| (k, canonical(v))).collect();
            serde_json::to_value(sorted).unwrap_or(Value::Null)
        }
        Value::Array(items) => Value::Array(items.iter().map(canonical).collect()),
        other => other.clone(),
    }
}

impl Track {
    /// Records one visit's findings and says whether the loop has stalled. No findings (count
    /// 0) is convergence and never stalls.
    pub(crate) fn visit(&mut self, findings: &Value, rounds: u32) -> Result<Option<Stall>, String> {
        let count = count(findings)?;
        let print = fingerprint(findings);
        self.counts.push(count);
        self.fingerprints.push(print.clone());
        if count == 0 {
            return Ok(None);
        }
        let round = self.counts.len();
        if let Some(first) = self.fingerprints[..round - 1]
            .iter()
            .position(|p| *p == print)
        {
            return Ok(Some(Stall::Repeated {
                first: first + 1,
                round,
                count,
            }));
        }
        // Visits since the first that found the fewest so far: a visit is progress only when it
        // finds fewer than every visit before it.
        let fewest = self.counts.iter().min().copied().unwrap_or(count);
        let best = self.counts.iter().position(|c| *c == fewest).unwrap_or(0);
        let without_progress = round - 1 - best;
        if without_progress >= rounds as usize {
            let from = round - 1 - rounds as usize;
            return Ok(Some(Stall::NotShrinking {
                counts: self.counts[from..].to_vec(),
            }));
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn findings(n: usize, tag: &str) -> Value {
        json!((0..n).map(|i| format!("{tag}{i}")).collect::<Vec<_>>())
    }

    #[test]
    fn shrinking_findings_never_stall() {
        let mut track = Track::default();
        for n in [5, 4, 2, 1, 0] {
            assert_eq!(track.visit(&findings(n, "x"), 1).unwrap(), None, "{n}");
        }
    }

    #[test]
    fn no_fewer_for_k_rounds_stalls_with_the_counts() {
        let mut track = Track::default();
        assert_eq!(track.visit(&findings(4, "a"), 2).unwrap(), None);
        assert_eq!(track.visit(&findings(4, "b"), 2).unwrap(), None);
        assert_eq!(
            track.visit(&findings(5, "c"), 2).unwrap(),
            Some(Stall::NotShrinking {
                counts: vec![4, 4, 5]
            })
        );
    }

    #[test]
    fn progress_resets_the_count_and_oscillation_does_not_count_as_progress() {
        let mut track = Track::default();
        assert_eq!(track.visit(&findings(6, "a"), 2).unwrap(), None);
        assert_eq!(track.visit(&findings(7, "b"), 2).unwrap(), None);
        // 5 is fewer than the best (6): progress.
        assert_eq!(track.visit(&findings(5, "c"), 2).unwrap(), None);
        assert_eq!(track.visit(&findings(6, "d"), 2).unwrap(), None);
        assert_eq!(
            track.visit(&findings(5, "e"), 2).unwrap(),
            Some(Stall::NotShrinking {
                counts: vec![5, 6, 5]
            })
        );
    }

    #[test]
    fn the_same_findings_again_stall_at_once() {
        let mut track = Track::default();
        assert_eq!(
            track.visit(&json!([{"a": 1, "b": 2}, "z"]), 5).unwrap(),
            None
        );
        assert_eq!(track.visit(&json!(["y"]), 5).unwrap(), None);
        // Same findings as visit 1, keys in another order.
        assert_eq!(
            track.visit(&json!([{"b": 2, "a": 1}, "z"]), 5).unwrap(),
            Some(Stall::Repeated {
                first: 1,
                round: 3,
                count: 2
            })
        );
    }

    #[test]
    fn counts_arrays_and_numbers_only() {
        assert_eq!(count(&json!([1, 2])).unwrap(), 2);
        assert_eq!(count(&json!(3)).unwrap(), 3);
        assert_eq!(count(&json!(3.0)).unwrap(), 3);
        assert_eq!(count(&Value::Null).unwrap(), 0);
        assert!(count(&json!(-1)).is_err());
        assert!(count(&json!("many")).unwrap_err().contains("a string"));
    }
}
