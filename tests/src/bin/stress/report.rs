//! What the master process reports to the supervisor: a text file of `key value` lines,
//! written after `startup` returned and read once the master process has ended.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context as _;

use crate::tally::{ACTION_NAMES, FAULT_KINDS, OBJECT_KINDS, Tally};

/// The master's report.
#[derive(Debug, Default, Clone)]
pub struct Report {
    /// The tally of the root process (`None` when `run` gave no result).
    pub tally: Option<Tally>,
    /// What `run` returned when it failed.
    pub run_error: Option<String>,
    /// How long `run` took, in seconds.
    pub run_seconds: f64,
    /// Process bodies entered, from the progress region.
    pub bodies: u64,
    /// Objects created, from the progress region (the master's own preallocated shm
    /// included).
    pub objects: u64,
    /// Descriptors of the master process before `startup`.
    pub fds_before: u64,
    /// Descriptors after `startup` returned.
    pub fds_after: u64,
    /// Descriptors open after and not before (`fd -> target`), or closed.
    pub fd_changes: Vec<String>,
    /// Children of the master process left after `startup` returned.
    pub children_left: Vec<String>,
    /// `R` records of the ledger.
    pub ledger_registered: u64,
    /// `U` records of the ledger.
    pub ledger_destroyed: u64,
    /// Objects the ledger still lists as live.
    pub ledger_live: Vec<String>,
    /// A problem reading the ledger.
    pub ledger_error: Option<String>,
}

impl Report {
    /// The report as `key value` lines.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let mut line = |key: &str, value: &dyn std::fmt::Display| {
            let value = value.to_string().replace('\n', " | ");
            let _ = writeln!(out, "{key} {value}");
        };
        if let Some(t) = &self.tally {
            line("tally", &"");
            line("processes", &t.processes);
            line("checked", &t.checked);
            for i in 0..FAULT_KINDS {
                line(&format!("injected.{i}"), &t.injected[i]);
                line(&format!("survived.{i}"), &t.survived[i]);
            }
            for i in 0..OBJECT_KINDS {
                line(&format!("created.{i}"), &t.created[i]);
            }
            for i in 0..ACTION_NAMES.len() {
                line(&format!("action.{i}"), &t.actions[i]);
            }
            line("sem_ops", &t.sem_ops);
            line("takeovers", &t.takeovers);
            line("lock_ops", &t.lock_ops);
            line("claims", &t.claims);
            line("overlaps", &t.overlaps);
            line("dead_claims", &t.dead_claims);
            line("rounds", &t.rounds);
            line("broken", &t.broken);
            line("messages", &t.messages);
            line("piped", &t.piped);
            line("pipe_breaks", &t.pipe_breaks);
            line("waves", &t.waves);
            line("failure_count", &t.failure_count);
            for f in &t.failures {
                line("failure", f);
            }
        }
        if let Some(e) = &self.run_error {
            line("run_error", e);
        }
        line("run_seconds", &self.run_seconds);
        line("bodies", &self.bodies);
        line("objects", &self.objects);
        line("fds_before", &self.fds_before);
        line("fds_after", &self.fds_after);
        for c in &self.fd_changes {
            line("fd_change", c);
        }
        for c in &self.children_left {
            line("child_left", c);
        }
        line("ledger_registered", &self.ledger_registered);
        line("ledger_destroyed", &self.ledger_destroyed);
        for l in &self.ledger_live {
            line("ledger_live", l);
        }
        if let Some(e) = &self.ledger_error {
            line("ledger_error", e);
        }
        out
    }

    /// Parses [`Report::to_text`].
    pub fn parse(text: &str) -> anyhow::Result<Report> {
        let mut r = Report::default();
        let mut has_tally = false;
        let mut tally = Tally::default();
        for (n, raw) in text.lines().enumerate() {
            let (key, value) = raw.split_once(' ').unwrap_or((raw, ""));
            let num = || -> anyhow::Result<u64> {
                value
                    .parse()
                    .with_context(|| format!("line {}: {raw:?} holds no number", n + 1))
            };
            let indexed =
                |prefix: &str| -> Option<usize> { key.strip_prefix(prefix)?.parse().ok() };
            let t = &mut tally;
            match key {
                "tally" => has_tally = true,
                "processes" => t.processes = num()?,
                "checked" => t.checked = num()?,
                "sem_ops" => t.sem_ops = num()?,
                "takeovers" => t.takeovers = num()?,
                "lock_ops" => t.lock_ops = num()?,
                "claims" => t.claims = num()?,
                "overlaps" => t.overlaps = num()?,
                "dead_claims" => t.dead_claims = num()?,
                "rounds" => t.rounds = num()?,
                "broken" => t.broken = num()?,
                "messages" => t.messages = num()?,
                "piped" => t.piped = num()?,
                "pipe_breaks" => t.pipe_breaks = num()?,
                "waves" => t.waves = num()?,
                "failure_count" => t.failure_count = num()?,
                "failure" => t.failures.push(value.to_owned()),
                "run_error" => r.run_error = Some(value.to_owned()),
                "run_seconds" => {
                    r.run_seconds = value
                        .parse()
                        .with_context(|| format!("line {}: {raw:?}", n + 1))?;
                }
                "bodies" => r.bodies = num()?,
                "objects" => r.objects = num()?,
                "fds_before" => r.fds_before = num()?,
                "fds_after" => r.fds_after = num()?,
                "fd_change" => r.fd_changes.push(value.to_owned()),
                "child_left" => r.children_left.push(value.to_owned()),
                "ledger_registered" => r.ledger_registered = num()?,
                "ledger_destroyed" => r.ledger_destroyed = num()?,
                "ledger_live" => r.ledger_live.push(value.to_owned()),
                "ledger_error" => r.ledger_error = Some(value.to_owned()),
                _ => {
                    let v = num()?;
                    if let Some(i) = indexed("injected.").filter(|&i| i < FAULT_KINDS) {
                        t.injected[i] = v;
                    } else if let Some(i) = indexed("survived.").filter(|&i| i < FAULT_KINDS) {
                        t.survived[i] = v;
                    } else if let Some(i) = indexed("created.").filter(|&i| i < OBJECT_KINDS) {
                        t.created[i] = v;
                    } else if let Some(i) = indexed("action.").filter(|&i| i < ACTION_NAMES.len()) {
                        t.actions[i] = v;
                    } else {
                        anyhow::bail!("line {}: unknown key in {raw:?}", n + 1);
                    }
                }
            }
        }
        r.tally = has_tally.then_some(tally);
        Ok(r)
    }

    /// Writes the report to `path`.
    pub fn write(&self, path: &Path) -> anyhow::Result<()> {
        std::fs::write(path, self.to_text()).with_context(|| format!("write {}", path.display()))
    }

    /// Reads the report at `path`.
    pub fn read(path: &Path) -> anyhow::Result<Report> {
        let text = std::fs::read_to_string(path).with_context(|| {
            format!(
                "read {} (the master process wrote no report)",
                path.display()
            )
        })?;
        Report::parse(&text).with_context(|| format!("parse {}", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_survives_its_text_form() {
        let mut tally = Tally {
            processes: 12,
            checked: 7,
            sem_ops: 40,
            takeovers: 6,
            lock_ops: 900,
            claims: 31,
            overlaps: 8,
            dead_claims: 2,
            rounds: 50,
            broken: 3,
            messages: 77,
            piped: 1 << 20,
            pipe_breaks: 4,
            waves: 3,
            failure_count: 1,
            failures: vec!["compute P3 gave\nnothing".to_owned()],
            ..Tally::default()
        };
        tally.injected[2] = 5;
        tally.survived[2] = 4;
        tally.created[3] = 9;
        tally.actions[8] = 2;
        let report = Report {
            tally: Some(tally),
            run_seconds: 1.5,
            fds_before: 4,
            fds_after: 5,
            fd_changes: vec!["opened 7 -> /tmp/x".to_owned()],
            ledger_live: vec!["shm /netmcore-stress-1-shm-0".to_owned()],
            ..Report::default()
        };
        let back = Report::parse(&report.to_text()).expect("parses");
        let t = back.tally.expect("a tally");
        assert_eq!((t.processes, t.checked, t.sem_ops, t.waves), (12, 7, 40, 3));
        assert_eq!((t.takeovers, t.lock_ops, t.messages), (6, 900, 77));
        assert_eq!(
            (t.claims, t.overlaps, t.dead_claims, t.rounds, t.broken),
            (31, 8, 2, 50, 3)
        );
        assert_eq!((t.piped, t.pipe_breaks), (1 << 20, 4));
        assert_eq!(
            (t.injected[2], t.survived[2], t.created[3], t.actions[8]),
            (5, 4, 9, 2)
        );
        assert_eq!(t.failures, ["compute P3 gave | nothing"]);
        assert_eq!(
            (back.fds_before, back.fds_after, back.run_seconds),
            (4, 5, 1.5)
        );
        assert_eq!(back.fd_changes, report.fd_changes);
        assert_eq!(back.ledger_live, report.ledger_live);
        assert!(Report::parse("bogus 1").is_err());
    }
}
