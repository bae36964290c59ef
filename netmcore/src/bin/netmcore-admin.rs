//! `netmcore-admin`: inspect and clean up a netmcore socket directory.
//!
//! ```text
//! netmcore-admin status DIR     is a master alive in DIR? its pid, processes and resources
//! netmcore-admin cleanup DIR    destroy what a dead master of DIR left (destroy_resources_in)
//! netmcore-admin --help         this help
//! ```
//!
//! `status` first checks whether a master holds the directory's lock (`DIR/netmcore.lock`).
//! If one does, it asks that master through its admin socket (`DIR/admin.sock`, served only
//! to the master's own user) and prints its Unix pid, its processes (running, or finished
//! and not yet joined, with their Unix pids) and its live resources with their users. If
//! none does, it says "no master is running" and lists what the directory's ledger
//! (`DIR/netmcore.ledger`) still records as possibly left over: shared memory objects, named
//! semaphores and files of a master that died.
//!
//! `cleanup` destroys those leftovers, as `netmcore::destroy_resources_in(DIR)` does: every
//! object the ledger lists, and stale sockets. It refuses a directory whose master is alive.
//!
//! Exit status: 0 on success, 1 when the command failed (a missing directory, an
//! unreachable master, a cleanup refused or failed), 2 for a usage error.
#![deny(unsafe_code)]

use std::ffi::OsString;
use std::fs::{File, TryLockError};
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use netmcore_master::{ADMIN_SOCKET_NAME, LOCK_FILE_NAME, admin_status};

const USAGE: &str = "\
usage: netmcore-admin status DIR    show whether a master is alive in socket directory DIR,
                                    its pid, processes and resources
       netmcore-admin cleanup DIR   destroy what a dead master of DIR left behind
       netmcore-admin --help        show this help";

/// What the command line asks for.
#[derive(Debug, PartialEq, Eq)]
enum Command {
    Status(PathBuf),
    Cleanup(PathBuf),
    Help,
}

/// Parses the arguments after the program name.
fn parse_args(args: impl IntoIterator<Item = OsString>) -> Result<Command, String> {
    let args: Vec<OsString> = args.into_iter().collect();
    let Some(first) = args.first() else {
        return Err("a command is required".to_owned());
    };
    let command = first.to_string_lossy();
    if matches!(command.as_ref(), "-h" | "--help" | "help") {
        return Ok(Command::Help);
    }
    let make: fn(PathBuf) -> Command = match command.as_ref() {
        "status" => Command::Status,
        "cleanup" => Command::Cleanup,
        other => return Err(format!("unknown command {other:?}")),
    };
    match &args[1..] {
        [dir] if dir.to_string_lossy().starts_with('-') && dir != "-" => Err(format!(
            "{command}: unknown option {:?}",
            dir.to_string_lossy()
        )),
        [dir] => Ok(make(PathBuf::from(dir))),
        [] => Err(format!("{command}: the socket directory DIR is required")),
        _ => Err(format!("{command}: expected one socket directory DIR")),
    }
}

fn main() -> ExitCode {
    let command = match parse_args(std::env::args_os().skip(1)) {
        Ok(command) => command,
        Err(message) => {
            eprintln!("netmcore-admin: {message}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let outcome = match &command {
        Command::Help => {
            println!("{USAGE}");
            Ok(())
        }
        Command::Status(dir) => status(dir),
        Command::Cleanup(dir) => cleanup(dir),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("netmcore-admin: {message}");
            ExitCode::FAILURE
        }
    }
}

/// Whether a live master holds `dir`'s lock; an error names the call and the path.
fn master_alive(dir: &Path) -> Result<bool, String> {
    let meta = std::fs::metadata(dir).map_err(|e| format!("stat {}: {e}", dir.display()))?;
    if !meta.is_dir() {
        return Err(format!("{} is not a directory", dir.display()));
    }
    let lock = dir.join(LOCK_FILE_NAME);
    match std::fs::symlink_metadata(&lock) {
        // No master ever locked this directory.
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(format!("lstat {}: {e}", lock.display())),
        Ok(meta) if !meta.is_file() => {
            return Err(format!("{} is not a regular file", lock.display()));
        }
        Ok(_) => {}
    }
    let file = File::open(&lock).map_err(|e| format!("open {}: {e}", lock.display()))?;
    // The lock is held only for the moment of the test (it goes with `file`).
    match file.try_lock() {
        Ok(()) => Ok(false),
        Err(TryLockError::WouldBlock) => Ok(true),
        Err(TryLockError::Error(e)) => Err(format!("flock {}: {e}", lock.display())),
    }
}

/// `status DIR`.
fn status(dir: &Path) -> Result<(), String> {
    let alive = master_alive(dir)?;
    println!("socket directory: {}", dir.display());
    if alive {
        let status = admin_status(dir).map_err(|e| {
            format!(
                "a master holds {} but does not answer on its admin socket: {e}",
                dir.display()
            )
        })?;
        print!("{status}");
        return Ok(());
    }
    println!("no master is running");
    let leftovers = netmcore_resources::ledger::replay_dir(dir)
        .map_err(|e| format!("cannot read the ledger of {}: {e}", dir.display()))?;
    let stale_socket = dir.join(ADMIN_SOCKET_NAME).exists();
    if leftovers.is_empty() {
        println!("left over (per the ledger): nothing");
    } else {
        println!("left over (per the ledger): {}", leftovers.len());
        for object in &leftovers {
            println!("  {object}");
        }
    }
    if stale_socket {
        println!(
            "stale admin socket: {}",
            dir.join(ADMIN_SOCKET_NAME).display()
        );
    }
    if !leftovers.is_empty() || stale_socket {
        println!(
            "run `netmcore-admin cleanup {}` to destroy them",
            dir.display()
        );
    }
    Ok(())
}

/// `cleanup DIR`.
fn cleanup(dir: &Path) -> Result<(), String> {
    if master_alive(dir)? {
        return Err(format!(
            "cleanup {}: a live master holds this socket directory; it destroys its own \
             objects when it ends (stop it with SIGTERM first)",
            dir.display()
        ));
    }
    let report = netmcore::destroy_resources_in(dir)
        .map_err(|e| format!("cleanup {}: {e}", dir.display()))?;
    println!("socket directory: {}", dir.display());
    println!("{report}");
    if report.is_clean() {
        Ok(())
    } else {
        Err(format!(
            "cleanup {}: {} objects could not be destroyed and stay listed in the ledger",
            dir.display(),
            report.failed.len()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Command, String> {
        parse_args(args.iter().map(OsString::from))
    }

    #[test]
    fn commands_take_one_directory() {
        assert_eq!(parse(&["status", "/d"]), Ok(Command::Status("/d".into())));
        assert_eq!(parse(&["cleanup", "d"]), Ok(Command::Cleanup("d".into())));
        assert_eq!(parse(&["--help"]), Ok(Command::Help));
        assert_eq!(parse(&["-h", "ignored"]), Ok(Command::Help));
    }

    #[test]
    fn usage_errors_say_what_is_wrong() {
        let cases: [(&[&str], &str); 6] = [
            (&[], "a command is required"),
            (&["stats", "/d"], "unknown command \"stats\""),
            (&["status"], "DIR is required"),
            (&["status", "a", "b"], "one socket directory"),
            (&["cleanup", "--force"], "unknown option \"--force\""),
            (&["cleanup", "a", "b"], "one socket directory"),
        ];
        for (args, expected) in cases {
            let message = parse(args).expect_err("a usage error");
            assert!(message.contains(expected), "{args:?}: {message}");
        }
    }
}
