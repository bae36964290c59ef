//! A small program for `cargo xtask leak-check --valgrind`: it drives every layer below the
//! master — encapsulation, the registry and the ledger, shared memory, named and futex
//! semaphores, memfds and framed channels with descriptor passing — in one process, so that
//! valgrind's memcheck can look for heap blocks netmcore loses.
//!
//! It starts no master: valgrind 3.19 does not know `pidfd_open`, which the master's event loop
//! relies on. Every object it creates is unlinked before it exits.
#![deny(unsafe_code)]

use std::os::fd::AsFd;
use std::time::Duration;

use netmcore::ipc::channel::Channel;
use netmcore::ipc::futex_sem::FutexSemaphore;
use netmcore::ipc::memfd::Memfd;
use netmcore::ipc::sem::NamedSemaphore;
use netmcore::ipc::shm::ShmObject;
use netmcore::ipc::wire::{Request, Response};
use netmcore::{Encap, EncapError, Inherit, ProcessId, ResId};
use netmcore_resources::ResourceDesc;
use netmcore_resources::ledger::{Ledger, LedgerObject};
use netmcore_resources::registry::{Holder, JoinOutcome, Registry};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let prefix = format!("/netmcore-memcheck-{}-", std::process::id());

    // Encapsulation, including a type mismatch.
    let value = (vec![1u64, 2, 3], String::from("three"));
    let encap = Encap::wrap(&value)?;
    assert_eq!(encap.unwrap::<(Vec<u64>, String)>()?, value);
    assert!(matches!(
        encap.unwrap::<u8>(),
        Err(EncapError::TypeMismatch { .. })
    ));
    assert!(Encap::from_bytes(&encap.as_bytes()[..10]).is_err());

    // The registry's whole life cycle.
    let mut registry: Registry<Encap> = Registry::new();
    let (fork_point, join_point) = registry.def_process();
    let shm_id = registry.register(ResourceDesc::PosixShm(format!("{prefix}r")), Holder::Master)?;
    let started = registry.start(fork_point, &Inherit::Nothing, Holder::Master)?;
    let joiner = registry.start(fork_point, &Inherit::All, Holder::Master)?;
    registry.get(shm_id, Holder::Process(started.pid))?;
    assert_eq!(
        registry.join(join_point, started.pid, joiner.pid)?,
        JoinOutcome::Deferred
    );
    let _ = registry.finished(started.pid, Some(encap.clone()));
    let _ = registry.finished(joiner.pid, None);
    let _ = registry.shutdown();

    // The ledger, in a directory of its own.
    let dir = std::env::temp_dir().join(format!("netmcore-memcheck-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    {
        let mut ledger = Ledger::open(&dir)?;
        let object = LedgerObject::shm(format!("{prefix}ledger with spaces"));
        ledger.registered(&object)?;
        assert_eq!(ledger.live()?, vec![object.clone()]);
        ledger.destroyed(&object)?;
        ledger.truncate()?;
    }
    std::fs::remove_dir_all(&dir)?;

    // Shared memory with a futex semaphore in it, and a named semaphore.
    let shm = ShmObject::create_unique(&prefix)?;
    shm.set_size(4096)?;
    {
        let mapping = shm.map()?;
        let words = mapping.as_atomic_u32s().expect("a page is aligned");
        let sem = FutexSemaphore::new(&words[0], 0)?;
        sem.post()?;
        sem.wait_timeout(Duration::from_secs(5))?;
    }
    shm.unlink()?;
    let named = NamedSemaphore::create_unique(&prefix, 1)?;
    named.wait()?;
    named.post()?;
    named.unlink()?;
    drop(named);

    // Channels: messages, a body big enough to travel as a memfd, and a passed descriptor.
    let (mut master, mut worker) = Channel::pair()?;
    worker.send_msg(&Request::Start {
        fork_point: ResId(0),
        arg: encap,
        inherit: Inherit::All,
    })?;
    assert!(matches!(
        master.recv_msg::<Request>()?,
        Request::Start { .. }
    ));
    master.send_msg(&Response::Started(ProcessId(7)))?;
    assert_eq!(
        worker.recv_msg::<Response>()?,
        Response::Started(ProcessId(7))
    );
    let big = vec![5u8; 1 << 20];
    worker.send(&big)?;
    assert_eq!(master.recv()?.body(), &big[..]);
    let memfd = Memfd::from_bytes("probe", b"passed along")?;
    master.send_with_fds(b"fd", &[memfd.as_fd()])?;
    let mut frame = worker.recv()?;
    let received = Memfd::from_fd(frame.take_fds().remove(0))?;
    assert_eq!(received.read_to_vec()?, b"passed along");
    drop(worker);
    assert!(master.recv().is_err());

    println!("memcheck probe: every layer exercised");
    Ok(())
}
