//! What the checks of the scenario runners and the stress program read from `/proc` and
//! `/dev/shm`.

use std::collections::BTreeMap;
use std::path::Path;

/// One process of the process table, from `/proc/<pid>/stat`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proc {
    /// The Unix pid.
    pub pid: i32,
    /// The command name (at most 15 bytes).
    pub comm: String,
    /// The state letter: `R`, `S`, `D`, `Z` (zombie), ...
    pub state: char,
    /// The parent's pid.
    pub ppid: i32,
    /// The process group.
    pub pgrp: i32,
}

impl Proc {
    /// Reads `/proc/<pid>/stat`; `None` when the process no longer exists.
    pub fn read(pid: i32) -> Option<Proc> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // `pid (comm) state ppid pgrp ...`; comm may hold spaces and parentheses.
        let open = stat.find('(')?;
        let close = stat.rfind(')')?;
        let mut rest = stat[close + 1..].split_whitespace();
        let state = rest.next()?.chars().next()?;
        let ppid = rest.next()?.parse().ok()?;
        let pgrp = rest.next()?.parse().ok()?;
        Some(Proc {
            pid,
            comm: stat[open + 1..close].to_owned(),
            state,
            ppid,
            pgrp,
        })
    }

    /// Whether this is a zombie (ended, not reaped yet).
    pub fn is_zombie(&self) -> bool {
        matches!(self.state, 'Z' | 'X')
    }

    /// A one-line description with the kernel function it waits in, for hang reports.
    pub fn describe(&self) -> String {
        let wchan =
            std::fs::read_to_string(format!("/proc/{}/wchan", self.pid)).unwrap_or_default();
        format!(
            "pid {} ppid {} pgrp {} state {} comm {} wchan {}",
            self.pid, self.ppid, self.pgrp, self.state, self.comm, wchan
        )
    }
}

/// Every process of the system.
pub fn processes() -> Vec<Proc> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .filter_map(Proc::read)
        .collect()
}

/// The child processes of `pid`, zombies included.
pub fn children_of(pid: i32) -> Vec<Proc> {
    processes().into_iter().filter(|p| p.ppid == pid).collect()
}

/// The processes of group `pgrp`.
pub fn group(pgrp: i32) -> Vec<Proc> {
    processes().into_iter().filter(|p| p.pgrp == pgrp).collect()
}

/// The open descriptors of this process: number → what it points to.
pub fn open_fds() -> BTreeMap<u32, String> {
    let listed: Vec<(u32, String)> = match std::fs::read_dir("/proc/self/fd") {
        Ok(entries) => entries
            .flatten()
            .filter_map(|e| {
                let fd = e.file_name().to_str()?.parse().ok()?;
                let target = std::fs::read_link(e.path()).ok()?;
                Some((fd, target.display().to_string()))
            })
            .collect(),
        Err(_) => Vec::new(),
    };
    // The directory stream that listed them is closed now: leave its descriptor out.
    listed
        .into_iter()
        .filter(|(fd, _)| Path::new(&format!("/proc/self/fd/{fd}")).exists())
        .collect()
}

/// The names in `/dev/shm` of objects whose name starts with `/` + `prefix_body` (shm objects
/// as they are, semaphores as `sem.NAME`).
pub fn shm_entries(prefix_body: &str) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir("/dev/shm") else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.trim_start_matches("sem.").starts_with(prefix_body))
        .collect();
    names.sort();
    names
}
