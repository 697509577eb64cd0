//! The report `petrify doctor` prints: one verdict per check, the IAM actions, and the exit
//! status the verdicts call for. Pure: no I/O.

use crate::error::Exit;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Ok,
    Degraded,
    /// Why it cannot run: a permission (77) or the configuration (78).
    Broken(Exit),
}

impl Verdict {
    fn rank(self) -> u8 {
        match self {
            Verdict::Ok => 0,
            Verdict::Degraded => 1,
            Verdict::Broken(_) => 2,
        }
    }

    fn word(self) -> &'static str {
        match self {
            Verdict::Ok => "ok",
            Verdict::Degraded => "degraded",
            Verdict::Broken(_) => "broken",
        }
    }
}

/// One line of the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub name: &'static str,
    pub verdict: Verdict,
    pub detail: String,
}

/// The IAM actions each command needs on the prefix, for the report's end.
pub const IAM: &[(&str, &str)] = &[
    (
        "persist",
        "s3:ListBucket, s3:GetObject, s3:PutObject, s3:DeleteObject (compaction, --retain), \
         s3:AbortMultipartUpload",
    ),
    (
        "recover, list, verify, status",
        "s3:ListBucket, s3:GetObject",
    ),
    (
        "prune",
        "s3:ListBucket, s3:GetObject, s3:PutObject (the writer lease), s3:DeleteObject",
    ),
    ("doctor", "those of persist"),
];

/// The exit status the checks call for: the worst verdict's.
pub fn status(checks: &[Check]) -> Option<Exit> {
    match checks.iter().map(|c| c.verdict).max_by_key(|v| v.rank())? {
        Verdict::Ok => None,
        Verdict::Degraded => Some(Exit::Unavailable),
        Verdict::Broken(e) => Some(e),
    }
}

pub fn text(checks: &[Check]) -> String {
    let mut s = String::new();
    for c in checks {
        s.push_str(&format!(
            "{:<9} {:<18} {}\n",
            c.verdict.word(),
            c.name,
            c.detail
        ));
    }
    s.push_str("\nIAM actions on the prefix (arn:aws:s3:::BUCKET/PREFIX/*, and ListBucket on the bucket):\n");
    for (who, what) in IAM {
        s.push_str(&format!("  {who}: {what}\n"));
    }
    s
}

pub fn json(checks: &[Check]) -> String {
    let esc = |s: &str| {
        s.chars()
            .flat_map(|c| match c {
                '"' => "\\\"".chars().collect::<Vec<_>>(),
                '\\' => "\\\\".chars().collect(),
                c if (c as u32) < 0x20 => format!("\\u{:04x}", c as u32).chars().collect(),
                c => vec![c],
            })
            .collect::<String>()
    };
    let items: Vec<String> = checks
        .iter()
        .map(|c| {
            format!(
                "{{\"check\":\"{}\",\"verdict\":\"{}\",\"detail\":\"{}\"}}",
                c.name,
                c.verdict.word(),
                esc(&c.detail)
            )
        })
        .collect();
    format!(
        "{{\"checks\":[{}],\"ok\":{}}}\n",
        items.join(","),
        status(checks).is_none()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(verdict: Verdict) -> Check {
        Check {
            name: "x",
            verdict,
            detail: "a \"quoted\" detail".into(),
        }
    }

    #[test]
    fn the_worst_verdict_sets_the_status() {
        assert_eq!(status(&[c(Verdict::Ok)]), None);
        assert_eq!(
            status(&[c(Verdict::Ok), c(Verdict::Degraded)]),
            Some(Exit::Unavailable)
        );
        assert_eq!(
            status(&[c(Verdict::Degraded), c(Verdict::Broken(Exit::NoPerm))]),
            Some(Exit::NoPerm)
        );
        let j = json(&[c(Verdict::Degraded)]);
        assert!(
            j.contains(r#""verdict":"degraded","detail":"a \"quoted\" detail""#),
            "{j}"
        );
        assert!(j.ends_with("\"ok\":false}\n"), "{j}");
    }
}
