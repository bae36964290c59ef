//! SIGTERM and SIGINT in the master, and their default behaviour everywhere else.
//!
//! While a master runs, SIGTERM and SIGINT write to a self-pipe that its event loop polls
//! (`signal_hook::low_level::pipe`), after recording which signal it was. Everywhere else —
//! in workers, before `startup` and after it returned — they behave as by default (the
//! process terminates): a conditional action registered first, whose condition is true
//! outside a running master, runs the default action before the pipe would be written.
//!
//! The default-action actions stay registered for the life of the process (signal-hook
//! cannot restore a disposition); the pipe actions are registered per run and removed when
//! `startup` returns.

use std::os::fd::OwnedFd;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use rustix::pipe::{PipeFlags, pipe_with};
use signal_hook::SigId;
use signal_hook::consts::{SIGINT, SIGTERM};

use crate::{Error, Result};

/// True outside a running master: SIGTERM and SIGINT take their default action.
static DEFAULT_ACTION: AtomicBool = AtomicBool::new(true);
/// The last signal the master received (0: none yet).
static LAST_SIGNAL: AtomicUsize = AtomicUsize::new(0);
/// Whether the default-action actions are registered.
static DEFAULTS: OnceLock<std::result::Result<(), String>> = OnceLock::new();

/// The master's end of the signal self-pipe, and its registrations.
#[derive(Debug)]
pub(crate) struct Signals {
    read: OwnedFd,
    ids: Vec<SigId>,
}

impl Signals {
    /// Registers SIGTERM and SIGINT to write to a new self-pipe.
    pub(crate) fn install() -> Result<Signals> {
        let defaults = DEFAULTS.get_or_init(|| {
            for signal in [SIGTERM, SIGINT] {
                signal_hook::flag::register_conditional_default(signal, &DEFAULT_ACTION)
                    .map_err(|e| format!("signal {signal}: {e}"))?;
            }
            Ok(())
        });
        if let Err(e) = defaults {
            return Err(Error::io(
                "sigaction",
                "SIGTERM and SIGINT",
                std::io::Error::other(e.clone()),
            ));
        }
        let (read, write) = pipe_with(PipeFlags::CLOEXEC | PipeFlags::NONBLOCK)
            .map_err(|e| Error::io("pipe2", "signal pipe", e))?;
        let mut signals = Signals {
            read,
            ids: Vec::new(),
        };
        LAST_SIGNAL.store(0, Ordering::SeqCst);
        let write = std::fs::File::from(write);
        for signal in [SIGTERM, SIGINT] {
            let registered =
                signal_hook::flag::register_usize(signal, &LAST_SIGNAL, signal as usize).and_then(
                    |id| {
                        signals.ids.push(id);
                        let write = write.try_clone()?;
                        signal_hook::low_level::pipe::register(signal, write)
                    },
                );
            match registered {
                Ok(id) => signals.ids.push(id),
                Err(e) => {
                    signals.uninstall();
                    return Err(Error::io("sigaction", signal_name(signal), e));
                }
            }
        }
        DEFAULT_ACTION.store(false, Ordering::SeqCst);
        Ok(signals)
    }

    /// The read end of the self-pipe, for `poll`.
    pub(crate) fn fd(&self) -> &OwnedFd {
        &self.read
    }

    /// Empties the pipe and returns the signal that came, if one did.
    pub(crate) fn take(&self) -> Option<i32> {
        let mut buf = [0u8; 64];
        while let Ok(n) = rustix::io::read(&self.read, &mut buf) {
            if n == 0 {
                break;
            }
        }
        match LAST_SIGNAL.swap(0, Ordering::SeqCst) {
            0 => None,
            s => i32::try_from(s).ok(),
        }
    }

    /// Removes the registrations (closing the pipe's write end) and gives SIGTERM and SIGINT
    /// their default action again.
    pub(crate) fn uninstall(&mut self) {
        DEFAULT_ACTION.store(true, Ordering::SeqCst);
        for id in self.ids.drain(..) {
            signal_hook::low_level::unregister(id);
        }
    }
}

/// In a freshly forked worker: SIGTERM and SIGINT terminate it again, and its copy of the
/// master's pipe is closed.
pub(crate) fn reset_in_child(signals: Option<Signals>) {
    DEFAULT_ACTION.store(true, Ordering::SeqCst);
    if let Some(mut signals) = signals {
        signals.uninstall();
    }
}

/// The name of a signal for messages, e.g. `"SIGKILL"`.
pub(crate) fn signal_name(signal: i32) -> &'static str {
    signal_hook::low_level::signal_name(signal).unwrap_or("an unknown signal")
}
