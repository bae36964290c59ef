//! The worker side: the client that talks to the master over the worker's channel, and the
//! running of a process body.

use std::any::Any;
use std::collections::BTreeMap;
use std::os::fd::AsFd;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use netmcore_encap::Encap;
use netmcore_ipc::channel::Channel;
use netmcore_ipc::shm::SharedMemory;
use netmcore_ipc::stream;
use netmcore_ipc::wire::{Outcome, Request, Response};
use netmcore_resources::{ProcessId, ResId};

use crate::debug::verbose;
use crate::state::Body;
use crate::{Error, Result};

/// A worker's connection to its master. One request is in flight at a time: the lock is
/// held from sending a request to reading its response.
struct Client {
    channel: Channel,
    pid: ProcessId,
    /// The channel's spin for a request the master answers at once.
    spin: Duration,
}

/// The client of this worker process; `None` in every other process (the master never
/// locks it, so a forked child always finds it unlocked).
static CLIENT: Mutex<Option<Client>> = Mutex::new(None);

fn client() -> std::sync::MutexGuard<'static, Option<Client>> {
    CLIENT.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The preallocated shared memory this worker inherited, by id: the mappings it kept from
/// the fork (every other one was revoked). Set once in the child right after the fork; the
/// master never locks it.
static INHERITED: Mutex<BTreeMap<ResId, SharedMemory>> = Mutex::new(BTreeMap::new());

/// Records the mappings this worker inherited.
pub(crate) fn set_inherited(inherited: BTreeMap<ResId, SharedMemory>) {
    *INHERITED.lock().unwrap_or_else(PoisonError::into_inner) = inherited;
}

/// The mapping of the inherited preallocated shm `id`, if this worker inherited it.
pub(crate) fn inherited(id: ResId) -> Option<SharedMemory> {
    INHERITED
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .get(&id)
        .copied()
}

/// Makes this process the worker of process `pid`, talking to its master over `channel`.
pub(crate) fn install(channel: Channel, pid: ProcessId) {
    crate::board::set_own_tag(pid);
    let spin = channel.busy_poll();
    *client() = Some(Client { channel, pid, spin });
}

/// How many times longer a worker spins for a request the master answers after work on the
/// file system (see [`spin_for`]).
const SLOW_SPIN_FACTOR: u32 = 10;

/// How long a worker waiting for the answer to `request` spins before it sleeps, given the
/// spin for a request the master answers at once (zero, never spin, stays zero).
///
/// Creating, registering and releasing an object make the master write its ledger and open,
/// size or unlink the object before it answers: 20 to 40 µs on the reference machine, past
/// the usual spin, and a worker asleep by then costs a wake-up on another core, tens of
/// microseconds more. Measured: a `SharedAtomics` created and dropped took 190 µs with a spin
/// of 10 µs and 56 µs with 100 µs. The other requests (a `start`, a `join`, a lookup) are
/// answered at once or after a wait that no spin would cover.
fn spin_for(request: &Request, spin: Duration) -> Duration {
    match request {
        Request::CreateShm { .. }
        | Request::CreatePreallocatedShm { .. }
        | Request::Release(_)
        | Request::ManageFile(_)
        | Request::ManageShm(_)
        | Request::ManageSem(_) => spin * SLOW_SPIN_FACTOR,
        _ => spin,
    }
}

/// The id of this worker's process.
pub(crate) fn self_pid() -> Result<ProcessId> {
    client().as_ref().map(|c| c.pid).ok_or(Error::MasterGone)
}

/// Sends `request` for `call` and waits for its response.
pub(crate) fn call(call: &'static str, request: &Request) -> Result<Response> {
    converse(call, request, |channel| channel.send_msg(request))
}

/// Sends the `StartStream` `request` with the read end of `pipe`, writes `run` into the pipe
/// (the new process reads it as it comes), then waits for the response.
///
/// A pipe whose reader is gone (the master refused the request, or the new process died)
/// ends the writing; the response says which.
pub(crate) fn call_stream(
    call: &'static str,
    request: &Request,
    pipe: (stream::Reader, stream::Writer),
    run: &[u8],
) -> Result<Response> {
    let (reader, mut writer) = pipe;
    converse(call, request, move |channel| {
        channel.send_msg_with_fds(request, &[reader.as_fd()])?;
        // Only the new process may hold the read end, so that its death closes the pipe.
        drop(reader);
        match writer.write_all(run) {
            Ok(()) | Err(netmcore_ipc::Error::Closed) => {}
            // The new process reports a run cut short; the response comes all the same.
            Err(e) => tracing::warn!(error = %e, "{call}: writing the argument into its pipe"),
        }
        Ok(())
    })
}

/// One request of `call` and its response: `send` sends `request` on the channel to the
/// master (and does what goes with it), then the response is read.
fn converse(
    call: &'static str,
    request: &Request,
    send: impl FnOnce(&mut Channel) -> netmcore_ipc::Result<()>,
) -> Result<Response> {
    let mut guard = client();
    let client = guard.as_mut().ok_or(Error::MasterGone)?;
    verbose!(pid = client.pid.0, %request, "{call}: request to the master");
    client.channel.set_busy_poll(spin_for(request, client.spin));
    send(&mut client.channel).map_err(|e| Error::channel(call, e))?;
    let response: Response = client
        .channel
        .recv_msg()
        .map_err(|e| Error::channel(call, e))?;
    match response {
        // A master that tells an ordinary worker to stop is as good as gone for it.
        Response::Shutdown => Err(Error::MasterGone),
        response if response.is_unprompted() => Err(unexpected(call, &response)),
        response => Ok(response),
    }
}

/// The error for a response that does not answer `call`.
pub(crate) fn unexpected(call: &'static str, response: &Response) -> Error {
    Error::Protocol {
        call,
        source: netmcore_ipc::Error::Protocol {
            what: "response",
            reason: format!("unexpected {response:?}"),
        },
    }
}

/// Runs `body` on `arg`, catching a panic.
pub(crate) fn run_body(pid: ProcessId, body: &Body, arg: Encap) -> Outcome {
    verbose!(pid = pid.0, arg = arg.type_name(), "process body starts");
    match catch_unwind(AssertUnwindSafe(|| body(arg))) {
        Ok(result) => Outcome::Returned(result),
        Err(payload) => {
            let message = panic_message(payload.as_ref());
            tracing::error!(pid = pid.0, "{pid} panicked: {message}");
            Outcome::Failed(format!("panicked: {message}"))
        }
    }
}

/// Reports the body's outcome to the master and closes the channel.
pub(crate) fn finish(outcome: Outcome) {
    let Some(mut client) = client().take() else {
        return;
    };
    match client.channel.send_msg(&Request::Finished(outcome)) {
        Ok(()) => {}
        Err(netmcore_ipc::Error::FrameTooLarge { len, limit }) => {
            let failed = Outcome::Failed(format!(
                "its result of {len} bytes exceeds the channel's limit of {limit} bytes"
            ));
            let _ = client.channel.send_msg(&Request::Finished(failed));
        }
        // The master is gone: nobody to tell.
        Err(_) => {}
    }
}

fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic payload that is not a string".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_answered_after_file_system_work_spin_longer() {
        let spin = Duration::from_micros(10);
        let slow = [
            Request::CreateShm {
                prefix: "/x".to_owned(),
                size: 8,
            },
            Request::Release(ResId(3)),
            Request::ManageShm("/x".to_owned()),
        ];
        for request in &slow {
            assert_eq!(
                spin_for(request, spin),
                spin * SLOW_SPIN_FACTOR,
                "{request:?}"
            );
            assert_eq!(
                spin_for(request, Duration::ZERO),
                Duration::ZERO,
                "never spin"
            );
        }
        let prompt = [
            Request::SelfProcessId,
            Request::GetResource {
                id: ResId(3),
                expected: None,
            },
        ];
        for request in &prompt {
            assert_eq!(spin_for(request, spin), spin, "{request:?}");
        }
    }
}
