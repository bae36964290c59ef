//! The worker side: the client that talks to the master over the worker's channel, and the
//! running of a process body.

use std::any::Any;
use std::collections::BTreeMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Mutex, PoisonError};

use netmcore_encap::Encap;
use netmcore_ipc::channel::Channel;
use netmcore_ipc::shm::SharedMemory;
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
    *client() = Some(Client { channel, pid });
}

/// The id of this worker's process.
pub(crate) fn self_pid() -> Result<ProcessId> {
    client().as_ref().map(|c| c.pid).ok_or(Error::MasterGone)
}

/// Sends `request` for `call` and waits for its response.
pub(crate) fn call(call: &'static str, request: &Request) -> Result<Response> {
    let mut guard = client();
    let client = guard.as_mut().ok_or(Error::MasterGone)?;
    verbose!(pid = client.pid.0, %request, "{call}: request to the master");
    client
        .channel
        .send_msg(request)
        .map_err(|e| Error::channel(call, e))?;
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
