//! A `netmcore::shared::channel` in the mix: sender workers stream numbered messages with
//! contents derived from their numbers to receiver workers, and a victim among them may die at
//! a random moment mid-stream (often in the middle of a send or a receive, by a thread of its
//! own that kills its process after a random delay).
//!
//! The action has the shape of the others in `structures.rs`. Every end is moved by handle
//! (`into_handle`), so the creator holds none and the receivers' `Disconnected` comes from the
//! workers alone. A receiver checks each message's contents against its number and records it
//! in a bitmap (`SharedAtomics`, one bit per message) with a `fetch_or`, which finds a message
//! delivered twice. After the joins the creator checks the bitmap: every message of a
//! surviving sender arrived (but the one that a dying receiver may have had in hand, and
//! those left in the queue when no receiver survived), and a dead sender's messages that
//! arrived are exactly its first ones, with no gap: nothing half-written is delivered, and
//! nothing is lost behind a slot a dead process held.

use std::sync::atomic::Ordering;
use std::time::Duration;

use netmcore::ByteBuf;
use netmcore::ProcessId;
use netmcore::shared::{Error, Handle, Receiver, Sender, SharedAtomics, channel};
use serde::{Deserialize, Serialize};

use crate::bodies::{Fault, err, inject, types};
use crate::rng::{Rng, mix};
use crate::shared::{self, Counter};
use crate::structures::{Launched, Seen, hosted_or_local};
use crate::tally::FaultKind;

/// A message: the sender's index, its number, and contents derived from both.
pub type Msg = (u32, u32, ByteBuf);

/// Which side a victim is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Side {
    /// A sender.
    Sender,
    /// A receiver.
    Receiver,
}

/// The channel action.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct ChannelArg {
    /// Sender workers.
    pub senders: u32,
    /// Receiver workers.
    pub receivers: u32,
    /// Messages per sender.
    pub per_sender: u32,
    /// Slots of the channel.
    pub capacity: u32,
    /// The longest contents of a message.
    pub payload: u32,
    /// Mixed into the contents.
    pub seed: u64,
    /// The victim, if any.
    pub victim: Option<ChannelVictim>,
}

/// A worker that dies mid-stream.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct ChannelVictim {
    /// Its side.
    pub side: Side,
    /// Which one of its side.
    pub index: u32,
    /// After how many messages (sent or received) it starts the thread that kills it.
    pub after: u32,
    /// How long that thread waits, in microseconds, while the worker goes on.
    pub delay_us: u32,
    /// How it dies: SIGKILL, `exit` or SIGSEGV.
    pub fault: Fault,
}

impl ChannelArg {
    /// All the messages of the action.
    fn total(&self) -> u64 {
        u64::from(self.senders) * u64::from(self.per_sender)
    }

    /// Whether every receiver may be dead before the senders are done: then a sender may
    /// meet `Disconnected`, and messages may stay unreceived in the queue.
    fn receivers_may_all_die(&self) -> bool {
        self.receivers == 1 && self.victim.is_some_and(|v| v.side == Side::Receiver)
    }

    /// The victim of `side` number `index`, if it is one.
    fn victim_at(&self, side: Side, index: u32) -> Option<ChannelVictim> {
        self.victim.filter(|v| v.side == side && v.index == index)
    }
}

/// The contents of message `seq` of sender `sender`.
fn contents(arg: &ChannelArg, sender: u32, seq: u32) -> Vec<u8> {
    let h = mix(arg.seed ^ (u64::from(sender) << 32 | u64::from(seq)));
    let len = (h % (u64::from(arg.payload) + 1)) as usize;
    (0..len)
        .map(|j| (h.wrapping_add(j as u64 * 131) >> 8) as u8)
        .collect()
}

/// The bit of message `seq` of sender `sender` in the bitmap.
fn bit(arg: &ChannelArg, sender: u32, seq: u32) -> (usize, u64) {
    let n = u64::from(sender) * u64::from(arg.per_sender) + u64::from(seq);
    ((n / 64) as usize, 1 << (n % 64))
}

/// The argument of a sender.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct SenderUse {
    arg: ChannelArg,
    index: u32,
    end: Handle<Sender<Msg>>,
}

/// The argument of a receiver.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct ReceiverUse {
    arg: ChannelArg,
    index: u32,
    end: Handle<Receiver<Msg>>,
    seen: Handle<SharedAtomics>,
}

/// Draws and starts a channel action.
pub fn launch_channel(rng: &mut Rng) -> Result<Launched, String> {
    let t = types();
    let senders = rng.range(1, 3) as u32;
    let receivers = rng.range(1, 3) as u32;
    let per_sender = rng.range(1, 600) as u32;
    let victim = rng.one_in(2).then(|| {
        let side = if rng.one_in(2) {
            Side::Sender
        } else {
            Side::Receiver
        };
        let of_side = if side == Side::Sender {
            senders
        } else {
            receivers
        };
        ChannelVictim {
            side,
            index: rng.range(0, u64::from(of_side) - 1) as u32,
            after: rng.range(0, u64::from(per_sender) - 1) as u32,
            delay_us: rng.range(0, 2000) as u32,
            fault: match rng.range(0, 2) {
                0 => Fault::Sigkill,
                1 => Fault::Exit(rng.pick(&[0, 1, 42, 255])),
                _ => Fault::Segv,
            },
        }
    });
    let arg = ChannelArg {
        senders,
        receivers,
        per_sender,
        capacity: rng.range(1, 16) as u32,
        payload: rng.pick(&[0, 8, 100, 512, 3000]),
        seed: rng.next_u64(),
        victim,
    };
    let hosted = rng.one_in(3);
    let faults = if arg.victim.is_some() {
        vec![FaultKind::Holding]
    } else {
        Vec::new()
    };
    let processes = u64::from(senders + receivers) + u64::from(hosted);
    let (what, finish) = hosted_or_local(hosted, t.channel_host, "channel", arg, start_channel)?;
    Ok(Launched {
        what,
        processes,
        faults,
        finish,
    })
}

/// The body of a host: the whole channel action in a worker.
pub fn channel_host(arg: ChannelArg) -> Result<Seen, String> {
    let (_, finish) = start_channel(arg)?;
    finish()
}

/// Creates the channel and the bitmap and starts the workers with the ends moved to them; the
/// closure joins and checks them.
fn start_channel(
    arg: ChannelArg,
) -> Result<(String, impl FnOnce() -> Result<Seen, String>), String> {
    let t = types();
    let (tx, rx) =
        channel::<Msg>(arg.capacity as usize, arg.payload as usize + 32).map_err(err("channel"))?;
    shared::add(Counter::Resources, 1);
    let seen =
        SharedAtomics::new(arg.total().div_ceil(64) as usize).map_err(err("SharedAtomics::new"))?;
    shared::add(Counter::Resources, 1);
    let what = format!("channel {} ({arg:?})", tx.handle().id());
    let receivers = (0..arg.receivers)
        .map(|index| {
            t.channel_receiver.start(&ReceiverUse {
                arg,
                index,
                end: rx.clone().into_handle(),
                seen: seen.handle(),
            })
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(err("start a receiver"))?;
    let senders = (0..arg.senders)
        .map(|index| {
            t.channel_sender.start(&SenderUse {
                arg,
                index,
                end: tx.clone().into_handle(),
            })
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(err("start a sender"))?;
    drop((tx, rx));
    Ok((what, move || {
        check_channel(&arg, &seen, &senders, &receivers)
    }))
}

/// Joins the workers and checks what they and the bitmap say.
fn check_channel(
    arg: &ChannelArg,
    seen: &SharedAtomics,
    senders: &[ProcessId],
    receivers: &[ProcessId],
) -> Result<Seen, String> {
    let t = types();
    let mut sent = Vec::new();
    for (i, &pid) in senders.iter().enumerate() {
        let i = i as u32;
        let joined = t.channel_sender.join(pid);
        match (arg.victim_at(Side::Sender, i), joined) {
            (Some(_), Ok(None)) => sent.push(None),
            (None, Ok(Some(Ok(n))))
                if n == arg.per_sender || (arg.receivers_may_all_die() && n < arg.per_sender) =>
            {
                sent.push(Some(n));
            }
            (victim, other) => {
                return Err(format!(
                    "sender {i} ({pid}) gave {other:?}, expected {}",
                    if victim.is_some() {
                        "Ok(None) (it dies)".to_owned()
                    } else {
                        format!("Ok(Some(Ok({}))) (all sent)", arg.per_sender)
                    }
                ));
            }
        }
    }
    let mut received = 0;
    for (i, &pid) in receivers.iter().enumerate() {
        let i = i as u32;
        match (
            arg.victim_at(Side::Receiver, i),
            t.channel_receiver.join(pid),
        ) {
            (Some(_), Ok(None)) => {}
            (None, Ok(Some(Ok(n)))) => received += n,
            (victim, other) => {
                return Err(format!(
                    "receiver {i} ({pid}) gave {other:?}, expected {}",
                    if victim.is_some() {
                        "Ok(None) (it dies)"
                    } else {
                        "Ok(Some(Ok(_))) (it got Disconnected at the end)"
                    }
                ));
            }
        }
    }
    let words = seen.as_slice();
    let has = |s: u32, q: u32| {
        let (w, mask) = bit(arg, s, q);
        words[w].load(Ordering::Acquire) & mask != 0
    };
    let mut arrived = 0u64;
    let mut missing = Vec::new();
    for (s, sent) in sent.iter().enumerate() {
        let s = s as u32;
        let got: Vec<u32> = (0..arg.per_sender).filter(|&q| has(s, q)).collect();
        arrived += got.len() as u64;
        match sent {
            // A dead sender: its first messages, with no gap.
            None => {
                if got.iter().enumerate().any(|(k, &q)| k as u32 != q) {
                    return Err(format!(
                        "sender {s} died; of its messages arrived {got:?}, not its first ones"
                    ));
                }
            }
            Some(n) => {
                if let Some(q) = got.iter().find(|&&q| q >= *n) {
                    return Err(format!("sender {s} sent {n} messages, yet {q} arrived"));
                }
                if !arg.receivers_may_all_die() {
                    missing.extend((0..*n).filter(|&q| !has(s, q)).map(|q| (s, q)));
                }
            }
        }
    }
    let receiver_died = arg.victim.is_some_and(|v| v.side == Side::Receiver);
    // A receiver that dies may take one message with it: received, not yet recorded.
    if missing.len() > usize::from(receiver_died) {
        return Err(format!(
            "messages that never arrived (sender, number): {:?}",
            &missing[..missing.len().min(8)]
        ));
    }
    if !receiver_died && received != arrived {
        return Err(format!(
            "the receivers counted {received} messages, the bitmap {arrived}"
        ));
    }
    Ok(Seen {
        segments: 2,
        messages: arrived,
        ..Seen::default()
    })
}

/// Starts a thread that ends this process as `fault` says after `delay_us`, while the caller
/// goes on with its stream.
///
/// A SIGSEGV sent from this thread may reach another thread after `kill` returned, and a
/// second one sent at once would then be merged with the first, which the Rust runtime's
/// handler takes (restoring the default action): so it sends one every millisecond until one
/// kills.
fn die_soon(delay_us: u32, fault: Fault) {
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_micros(u64::from(delay_us)));
        if fault != Fault::Segv {
            inject(fault);
        }
        shared::add(Counter::Faults, 1);
        let me = rustix::process::getpid();
        loop {
            let _ = rustix::process::kill_process(me, rustix::process::Signal::SEGV);
            std::thread::sleep(Duration::from_millis(1));
        }
    });
}

/// Waits to be killed by the thread of [`die_soon`].
fn await_death() -> ! {
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

/// A sender: see [`SenderUse`]. It returns how many messages it sent.
pub fn channel_sender(u: SenderUse) -> Result<u32, String> {
    let tx = Sender::open(u.end).map_err(err("open the sender"))?;
    let victim = u.arg.victim_at(Side::Sender, u.index);
    for q in 0..u.arg.per_sender {
        if let Some(v) = victim
            && v.after == q
        {
            die_soon(v.delay_us, v.fault);
        }
        match tx.send(&(u.index, q, ByteBuf(contents(&u.arg, u.index, q)))) {
            Ok(()) => {}
            Err(Error::Disconnected) if u.arg.receivers_may_all_die() => return Ok(q),
            Err(e) => return Err(format!("send {q}: {e}")),
        }
    }
    if victim.is_some() {
        await_death();
    }
    Ok(u.arg.per_sender)
}

/// A receiver: see [`ReceiverUse`]. It returns how many messages it received, once the
/// channel is disconnected.
pub fn channel_receiver(u: ReceiverUse) -> Result<u64, String> {
    let rx = Receiver::open(u.end).map_err(err("open the receiver"))?;
    let seen = SharedAtomics::open(u.seen).map_err(err("open the bitmap"))?;
    let words = seen.as_slice();
    let victim = u.arg.victim_at(Side::Receiver, u.index);
    let mut count = 0u64;
    let mut dying = false;
    loop {
        if let Some(v) = victim
            && u64::from(v.after) == count
        {
            die_soon(v.delay_us, v.fault);
            dying = true;
        }
        let (s, q, bytes) = match rx.recv() {
            Ok(message) => message,
            Err(Error::Disconnected) => break,
            Err(e) => return Err(format!("recv after {count} messages: {e}")),
        };
        if s >= u.arg.senders || q >= u.arg.per_sender {
            return Err(format!("a message numbered ({s}, {q}) came"));
        }
        if bytes.0 != contents(&u.arg, s, q) {
            return Err(format!("message ({s}, {q}) came damaged"));
        }
        let (w, mask) = bit(&u.arg, s, q);
        if words[w].fetch_or(mask, Ordering::AcqRel) & mask != 0 {
            return Err(format!("message ({s}, {q}) came twice"));
        }
        count += 1;
    }
    if let Some(v) = victim {
        // The others took the messages it was to die after: it dies now.
        if !dying {
            die_soon(v.delay_us, v.fault);
        }
        await_death();
    }
    Ok(count)
}
