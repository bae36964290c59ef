//! `netmcore::shared::channel` across processes: many senders and receivers in workers
//! exchange an exact multiset of messages; a receiver gets `Disconnected` when the senders
//! drop, when the sender's process is killed while the receiver waits, and when a moved
//! sender is never opened and its giver ends; a sender blocked on a full channel gets
//! `Disconnected` when the receivers' process is killed; `TooLarge`, `WrongType` at open, and
//! `Busy` for a second open of a moved end; a sender killed in the middle of a message (in
//! its `Serialize`, or while it streams big messages) does not wedge the channel; bytes
//! scribbled over a live channel give errors, never a panic.
//!
//! Run one with `cargo test -p netmcore-tests --test shared_channel -- NAME`.

mod support;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use anyhow::{Context as _, bail, ensure};
use netmcore::ByteBuf;
use netmcore::shared::{Error, Handle, Receiver, Sender, channel};
use netmcore_ipc::shm::ShmObject;
use rustix::process::{Pid, Signal, kill_process};
use serde::{Deserialize, Serialize, Serializer};
use support::{Scenario, cases, coordinator, ensure_err, run_coordinator, verdict};

fn main() -> ExitCode {
    support::run_cases(cases![
        senders_and_receivers_in_workers_exchange_an_exact_multiset,
        a_receiver_waiting_on_a_killed_sender_is_disconnected,
        a_moved_sender_whose_giver_ended_unopened_disconnects,
        a_sender_blocked_on_killed_receivers_is_disconnected,
        too_large_wrong_type_and_busy_across_processes,
        a_sender_killed_in_the_middle_of_a_message_does_not_wedge_the_channel,
        a_sender_killed_while_it_streams_big_messages_does_not_wedge_the_channel,
        scribbled_channels_give_errors_never_panics,
    ])
}

/// Reads the Unix pid a worker wrote to `path`.
fn pid_in(path: &std::path::Path) -> anyhow::Result<Pid> {
    Pid::from_raw(support::read_pid(path)?).context("a positive pid")
}

/// Kills the process whose pid is in `path` after `delay`, from a thread: the caller blocks
/// meanwhile.
fn kill_later(
    path: &std::path::Path,
    delay: Duration,
) -> anyhow::Result<std::thread::JoinHandle<rustix::io::Result<()>>> {
    let victim = pid_in(path)?;
    Ok(std::thread::spawn(move || {
        std::thread::sleep(delay);
        kill_process(victim, Signal::KILL)
    }))
}

/// Messages of the multiset scenario: (sender, sequence number).
type Tagged = (u32, u32);

/// Three sender workers send 4000 messages each through a channel of 8 slots to two
/// receiver workers; every end moved by handle, the coordinator keeps none. The receivers
/// stop at `Disconnected`, and together got every message exactly once, each sender's in
/// order.
fn senders_and_receivers_in_workers_exchange_an_exact_multiset(s: &Scenario) -> anyhow::Result<()> {
    const SENDERS: u32 = 3;
    const EACH: u32 = 4000;
    let sender = coordinator(|(handle, me): (Handle<Sender<Tagged>>, u32)| {
        let tx = Sender::open(handle)?;
        for i in 0..EACH {
            tx.send(&(me, i))?;
        }
        Ok(())
    })?;
    let receiver = netmcore::process::def_process(|handle: Handle<Receiver<Tagged>>| {
        let rx = Receiver::open(handle).map_err(|e| e.to_string())?;
        let got: Vec<Tagged> = rx.iter().collect();
        match rx.try_recv() {
            Err(Error::Disconnected) => Ok(got),
            other => Err(format!("after the end, try_recv gave {other:?}")),
        }
    })?;
    let first = coordinator(move |()| {
        let (tx, rx) = channel::<Tagged>(8, 16)?;
        let receivers = [
            receiver.start(&rx.clone().into_handle())?,
            receiver.start(&rx.into_handle())?,
        ];
        let mut senders = Vec::new();
        for me in 0..SENDERS {
            senders.push(sender.start(&(tx.clone().into_handle(), me))?);
        }
        drop(tx);
        for pid in senders {
            verdict(sender.join(pid)?)?;
        }
        let mut seen: BTreeMap<Tagged, u32> = BTreeMap::new();
        for pid in receivers {
            let got = receiver
                .join(pid)?
                .context("a receiver ended without a result")?
                .map_err(anyhow::Error::msg)?;
            // Each sender's messages reach one receiver in the order they were sent.
            let mut last: BTreeMap<u32, u32> = BTreeMap::new();
            for &(from, i) in &got {
                if let Some(&before) = last.get(&from) {
                    ensure!(i > before, "from {from}: {i} after {before}");
                }
                last.insert(from, i);
                *seen.entry((from, i)).or_default() += 1;
            }
        }
        ensure!(
            seen.len() == (SENDERS * EACH) as usize,
            "{} distinct messages",
            seen.len()
        );
        ensure!(seen.values().all(|&n| n == 1), "a message came twice");
        Ok(())
    })?;
    run_coordinator(s, &first, &())
}

/// A sender worker sends three messages and sleeps; it is killed while the coordinator waits
/// in `recv`: the coordinator gets the three, then `Disconnected`.
fn a_receiver_waiting_on_a_killed_sender_is_disconnected(s: &Scenario) -> anyhow::Result<()> {
    let sender = coordinator(|(handle, pid_file): (Handle<Sender<String>>, PathBuf)| {
        let tx = Sender::open(handle)?;
        for word in ["one", "two", "three"] {
            tx.send(&word.to_owned())?;
        }
        support::write_own_pid(&pid_file)?;
        support::sleep_forever()
    })?;
    let first = coordinator(move |pid_file: PathBuf| {
        let (tx, rx) = channel::<String>(4, 32)?;
        let shared = tx.handle();
        let pid = sender.start(&(tx.into_handle(), pid_file.clone()))?;
        for word in ["one", "two", "three"] {
            ensure!(rx.recv()? == word, "not {word}");
        }
        support::wait_for_file(&pid_file)?;
        let killer = kill_later(&pid_file, Duration::from_millis(50))?;
        ensure_err!(rx.recv(), Error::Disconnected);
        killer
            .join()
            .map_err(|_| anyhow::anyhow!("the killer panicked"))??;
        ensure!(sender.join(pid)?.is_none(), "the killed sender returned");
        ensure_err!(rx.try_recv(), Error::Disconnected);
        // Sticky: a sender cannot come back.
        ensure_err!(Sender::open(shared), Error::Disconnected);
        Ok(())
    })?;
    run_coordinator(s, &first, &s.path("sender.pid"))
}

/// A worker opens the moved sender, sends, moves it again and ends before anyone opened it:
/// the receiver gets the message, then `Disconnected`, and the handle is `Disconnected`.
fn a_moved_sender_whose_giver_ended_unopened_disconnects(s: &Scenario) -> anyhow::Result<()> {
    let giver = netmcore::process::def_process(|handle: Handle<Sender<String>>| {
        let tx = Sender::open(handle).expect("the first open");
        tx.send(&"last words".to_owned())
            .expect("the receiver lives");
        tx.into_handle()
    })?;
    let first = coordinator(move |()| {
        let (tx, rx) = channel::<String>(4, 32)?;
        let pid = giver.start(&tx.into_handle())?;
        let handle = giver.join(pid)?.context("the giver returned")?;
        ensure!(rx.recv()? == "last words", "the message");
        ensure_err!(rx.recv(), Error::Disconnected);
        ensure_err!(Sender::open(handle), Error::Disconnected);
        Ok(())
    })?;
    run_coordinator(s, &first, &())
}

/// A receiver worker opens its end and sleeps; the coordinator fills the channel and blocks
/// in `send`; the receiver is killed: the send fails with `Disconnected`.
fn a_sender_blocked_on_killed_receivers_is_disconnected(s: &Scenario) -> anyhow::Result<()> {
    let receiver = coordinator(|(handle, pid_file): (Handle<Receiver<u64>>, PathBuf)| {
        let _rx = Receiver::open(handle)?;
        support::write_own_pid(&pid_file)?;
        support::sleep_forever()
    })?;
    let first = coordinator(move |pid_file: PathBuf| {
        let (tx, rx) = channel::<u64>(4, 16)?;
        let pid = receiver.start(&(rx.into_handle(), pid_file.clone()))?;
        support::wait_for_file(&pid_file)?;
        for i in 0..4 {
            tx.send(&i)?;
        }
        ensure_err!(tx.try_send(&4), Error::Full);
        let killer = kill_later(&pid_file, Duration::from_millis(50))?;
        ensure_err!(tx.send(&4), Error::Disconnected);
        killer
            .join()
            .map_err(|_| anyhow::anyhow!("the killer panicked"))??;
        ensure!(
            receiver.join(pid)?.is_none(),
            "the killed receiver returned"
        );
        ensure_err!(tx.try_send(&5), Error::Disconnected);
        Ok(())
    })?;
    run_coordinator(s, &first, &s.path("receiver.pid"))
}

/// In a worker: a message longer than `max_message` is `TooLarge` and sends nothing; a
/// handle decoded as the handle of another message type is `WrongType`; the moved receiver
/// opens once, and a second open, in another worker or in the coordinator, is `Busy`.
fn too_large_wrong_type_and_busy_across_processes(s: &Scenario) -> anyhow::Result<()> {
    let opener = coordinator(|(bytes, moved): (Vec<u8>, Handle<Receiver<String>>)| {
        let as_bytes: Handle<Sender<Vec<u8>>> = postcard::from_bytes(&bytes)?;
        ensure_err!(Sender::open(as_bytes), Error::WrongType { .. });
        let as_receiver: Handle<Receiver<String>> = postcard::from_bytes(&bytes)?;
        ensure_err!(Receiver::open(as_receiver), Error::WrongType { .. });
        let right: Handle<Sender<String>> = postcard::from_bytes(&bytes)?;
        let tx = Sender::open(right)?;
        ensure_err!(
            tx.send(&"x".repeat(40)),
            Error::TooLarge { size: 41, max: 32 }
        );
        tx.send(&"fits".to_owned())?;
        let rx = Receiver::open(moved)?;
        ensure!(rx.recv()? == "fits", "only the message that fits came");
        Ok(())
    })?;
    let late = coordinator(|moved: Handle<Receiver<String>>| {
        ensure_err!(Receiver::open(moved), Error::Busy);
        Ok(())
    })?;
    let first = coordinator(move |()| {
        let (tx, rx) = channel::<String>(4, 32)?;
        let bytes = postcard::to_allocvec(&tx.handle())?;
        let moved = rx.into_handle();
        verdict(opener.join(opener.start(&(bytes, moved))?)?)?;
        verdict(late.join(late.start(&moved)?)?)?;
        ensure_err!(Receiver::open(moved), Error::Busy);
        Ok(())
    })?;
    run_coordinator(s, &first, &())
}

/// Where a stalling message writes its process's pid (in the worker that sends it).
static STALL_PID_FILE: OnceLock<PathBuf> = OnceLock::new();

/// How many times a `Stall` was serialized in this process.
static STALLS: AtomicU32 = AtomicU32::new(0);

/// The messages of the stall scenario: `Stall` blocks its sender forever in the middle of
/// `send`, after the slot is claimed (its second serialization, the one into the slot).
#[derive(Debug, PartialEq, Deserialize)]
enum Msg {
    Data(u64),
    Stall,
}

impl Serialize for Msg {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Msg::Data(n) => serializer.serialize_newtype_variant("Msg", 0, "Data", n),
            Msg::Stall => {
                // The first serialization measures the message; the second writes it into the
                // claimed slot: stop there, holding the slot, until killed.
                if STALLS.fetch_add(1, Ordering::SeqCst) == 1 {
                    if let Some(path) = STALL_PID_FILE.get() {
                        support::write_own_pid(path).expect("the pid file");
                    }
                    support::sleep_forever();
                }
                serializer.serialize_unit_variant("Msg", 1, "Stall")
            }
        }
    }
}

/// A sender worker sends two messages, then stops forever in the middle of a third, holding
/// its slot, and is killed there. The receiver gets the two; a message sent afterwards by
/// another sender comes through, past the dead sender's slot; nothing of the half-written
/// message is ever delivered; the end is `Disconnected`.
fn a_sender_killed_in_the_middle_of_a_message_does_not_wedge_the_channel(
    s: &Scenario,
) -> anyhow::Result<()> {
    let staller = coordinator(|(handle, pid_file): (Handle<Sender<Msg>>, PathBuf)| {
        let tx = Sender::open(handle)?;
        STALL_PID_FILE
            .set(pid_file)
            .map_err(|_| anyhow::anyhow!("set twice"))?;
        tx.send(&Msg::Data(1))?;
        tx.send(&Msg::Data(2))?;
        tx.send(&Msg::Stall)?;
        bail!("the stalled send returned")
    })?;
    let first = coordinator(move |pid_file: PathBuf| {
        let (tx, rx) = channel::<Msg>(2, 16)?;
        let pid = staller.start(&(tx.clone().into_handle(), pid_file.clone()))?;
        ensure!(rx.recv()? == Msg::Data(1), "the first message");
        ensure!(rx.recv()? == Msg::Data(2), "the second message");
        support::wait_for_file(&pid_file)?;
        // The stalled sender holds the head slot: nothing to receive yet.
        ensure!(rx.try_recv()?.is_none(), "a half-written message came");
        tx.send(&Msg::Data(3))?;
        let killer = kill_later(&pid_file, Duration::from_millis(30))?;
        // Waits past the stalled slot until its sender is dead, then gets the next message.
        ensure!(
            rx.recv()? == Msg::Data(3),
            "the message after the dead slot"
        );
        killer
            .join()
            .map_err(|_| anyhow::anyhow!("the killer panicked"))??;
        ensure!(staller.join(pid)?.is_none(), "the killed sender returned");
        // The channel goes on: room for two again, then the end.
        tx.send(&Msg::Data(4))?;
        tx.send(&Msg::Data(5))?;
        ensure!(rx.recv()? == Msg::Data(4), "4");
        ensure!(rx.recv()? == Msg::Data(5), "5");
        drop(tx);
        ensure_err!(rx.recv(), Error::Disconnected);
        Ok(())
    })?;
    run_coordinator(s, &first, &s.path("staller.pid"))
}

/// The `i`th big message: 256 KiB whose bytes depend on `i`.
fn big(i: u64) -> ByteBuf {
    ByteBuf(
        (0..256 << 10)
            .map(|j: u64| (j ^ i.wrapping_mul(131)) as u8)
            .collect(),
    )
}

/// A sender worker streams 256 KiB messages as fast as it can and is killed at some point
/// (often while writing one); the coordinator receives concurrently. Every message it gets is
/// intact and they come in order; after the kill, another sender's message comes through and
/// the channel ends cleanly.
fn a_sender_killed_while_it_streams_big_messages_does_not_wedge_the_channel(
    s: &Scenario,
) -> anyhow::Result<()> {
    let streamer = coordinator(
        |(handle, pid_file): (Handle<Sender<(u64, ByteBuf)>>, PathBuf)| {
            let tx = Sender::open(handle)?;
            support::write_own_pid(&pid_file)?;
            for i in 0.. {
                tx.send(&(i, big(i)))?;
            }
            bail!("the streamer was not killed")
        },
    )?;
    let first = coordinator(move |pid_file: PathBuf| {
        let (tx, rx) = channel::<(u64, ByteBuf)>(4, (256 << 10) + 16)?;
        let pid = streamer.start(&(tx.clone().into_handle(), pid_file.clone()))?;
        support::wait_for_file(&pid_file)?;
        let killer = kill_later(&pid_file, Duration::from_millis(150))?;
        let mut next = 0;
        // Receive while the streamer streams; once it is killed and the channel stays empty,
        // stop.
        loop {
            match rx.recv_timeout(Duration::from_millis(50)) {
                Ok((i, bytes)) => {
                    ensure!(i == next, "message {i} came after {next}");
                    ensure!(bytes == big(i), "message {i} is damaged");
                    next += 1;
                }
                Err(Error::Timeout) if killer.is_finished() => break,
                Err(Error::Timeout) => {}
                Err(e) => return Err(e.into()),
            }
        }
        killer
            .join()
            .map_err(|_| anyhow::anyhow!("the killer panicked"))??;
        ensure!(
            streamer.join(pid)?.is_none(),
            "the killed streamer returned"
        );
        ensure!(next > 0, "no message came before the kill");
        // Whatever the streamer left in its slot, the channel goes on.
        for _ in 0..6 {
            tx.send(&(u64::MAX, ByteBuf(b"after".to_vec())))?;
            let (i, bytes) = rx.recv()?;
            ensure!(
                i == u64::MAX && bytes.0 == b"after",
                "message {i} after the kill"
            );
        }
        drop(tx);
        ensure_err!(rx.recv(), Error::Disconnected);
        Ok(())
    })?;
    run_coordinator(s, &first, &s.path("streamer.pid"))
}

/// A small deterministic generator (xorshift).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// In a worker, 300 rounds: a channel with messages in it, a few random bytes written over
/// its segment (header, words, ends, slots) through a mapping of its own, then sends,
/// receives and opens: every call returns a value or an error, never a panic (which would
/// end the coordinator without a verdict). A new channel after each round.
fn scribbled_channels_give_errors_never_panics(s: &Scenario) -> anyhow::Result<()> {
    let first = coordinator(|()| {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let mut outcomes: BTreeMap<String, u32> = BTreeMap::new();
        for _ in 0..300 {
            let (tx, rx) = channel::<(u32, String)>(4, 48)?;
            tx.send(&(1, "one".to_owned()))?;
            tx.send(&(2, "two".to_owned()))?;
            let name = netmcore::get_shm(tx.handle().id())?;
            let shm = ShmObject::open(&name)?.map()?;
            let cells = shm.as_atomic_u8s();
            for _ in 0..1 + rng.next() % 4 {
                let at = (rng.next() % cells.len() as u64) as usize;
                for cell in cells.iter().skip(at).take(1 + (rng.next() % 8) as usize) {
                    cell.store(rng.next() as u8, Ordering::Relaxed);
                }
            }
            let mut note = |what: &str, r: Result<(), Error>| {
                let key = match r {
                    Ok(()) => format!("{what} ok"),
                    Err(e) => {
                        let debug = format!("{e:?}");
                        let variant = debug.split([' ', '(', '{']).next().unwrap_or("");
                        format!("{what} {variant}")
                    }
                };
                *outcomes.entry(key).or_default() += 1;
            };
            for i in 0..3u32 {
                note("send", tx.try_send(&(i, "x".repeat(i as usize))));
                note("recv", rx.try_recv().map(|_| ()));
                note(
                    "recv_timeout",
                    rx.recv_timeout(Duration::from_millis(1)).map(|_| ()),
                );
            }
            note("open", Sender::open(tx.handle()).map(|_| ()));
            note(
                "open moved",
                Receiver::open(rx.clone().into_handle()).map(|_| ()),
            );
        }
        eprintln!("    outcomes: {outcomes:?}");
        Ok(())
    })?;
    run_coordinator(s, &first, &())
}
