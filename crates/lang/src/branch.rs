//! Branch names: the `branch:` template of a worktree and git's rules for a branch name.
//!
//! Owns: the placeholders a template may use, filling them in, and turning any text into a name
//! `git check-ref-format --branch` accepts. Checked at load time (`load`) and used when a worktree
//! is made (`worktree`). Does not run git.

/// The placeholders a `branch:` template may use.
const PLACEHOLDERS: &[&str] = &["role", "task", "workflow"];

/// Checks a `branch:` template: known placeholders only, and a valid branch name around them.
pub(crate) fn check_template(template: &str) -> Result<(), String> {
    let rendered = render(template, "x", "x", "x")?;
    let clean = sanitize(&rendered);
    if clean != rendered {
        return Err(format!(
            "is not a valid git branch name (it would become `{clean}`)"
        ));
    }
    Ok(())
}

/// `template` with its placeholders filled in (not yet made a valid branch name: see [`sanitize`]).
pub fn render(template: &str, role: &str, task: &str, workflow: &str) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let Some(close) = after.find('}') else {
            return Err("has a `{` without its `}`".into());
        };
        let name = &after[..close];
        out.push_str(match name {
            "role" => role,
            "task" => task,
            "workflow" => workflow,
            other => {
                return Err(format!(
                    "uses `{{{other}}}`, which is not one of {}",
                    PLACEHOLDERS
                        .iter()
                        .map(|p| format!("{{{p}}}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
        });
        rest = &after[close + 1..];
    }
    if rest.contains('}') {
        return Err("has a `}` without its `{`".into());
    }
    out.push_str(rest);
    Ok(out)
}

/// `name` made a valid branch name by git's rules (`git check-ref-format --branch`): every
/// character git refuses becomes `-`, and no component starts with `.` or ends with `.lock`
/// or `.`.
pub fn sanitize(name: &str) -> String {
    let components: Vec<String> = name
        .split('/')
        .filter(|c| !c.is_empty())
        .map(|component| {
            let mut c: String = component
                .chars()
                .map(|ch| {
                    if ch.is_ascii_control() || " ~^:?*[\\".contains(ch) || ch == '\u{7f}' {
                        '-'
                    } else {
                        ch
                    }
                })
                .collect();
            while c.contains("..") {
                c = c.replace("..", ".");
            }
            c = c.replace("@{", "-{");
            if c.starts_with('.') {
                c.replace_range(..1, "-");
            }
            if let Some(stem) = c.strip_suffix(".lock") {
                c = format!("{stem}-lock");
            }
            if c.ends_with('.') {
                c.pop();
                c.push('-');
            }
            c
        })
        .collect();
    let joined = components.join("/");
    if joined.is_empty() || joined == "@" || joined.starts_with('-') {
        format!("task{joined}")
    } else {
        joined
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sanitize_makes_valid_branch_names() {
        assert_eq!(sanitize("orchestrate/dev/t1"), "orchestrate/dev/t1");
        assert_eq!(sanitize("orchestrate/dev/a..b"), "orchestrate/dev/a.b");
        assert_eq!(sanitize("orchestrate/dev/x.lock"), "orchestrate/dev/x-lock");
        assert_eq!(sanitize("orchestrate/dev/x."), "orchestrate/dev/x-");
        assert_eq!(sanitize("a b:c~d^e?f*g[h\\i"), "a-b-c-d-e-f-g-h-i");
        assert_eq!(sanitize("x//.hidden"), "x/-hidden");
        assert_eq!(sanitize("a@{b"), "a-{b");
        assert_eq!(sanitize("@"), "task@");
    }

    #[test]
    fn branch_templates_are_checked() {
        assert!(check_template("orchestrate/{role}/{task}").is_ok());
        assert!(check_template("wt/{workflow}-{task}").is_ok());
        assert!(check_template("x/{id}").unwrap_err().contains("`{id}`"));
        assert!(check_template("x/{task").unwrap_err().contains("`{`"));
        assert!(
            check_template("bad name/{task}")
                .unwrap_err()
                .contains("not a valid git branch name")
        );
    }
}
