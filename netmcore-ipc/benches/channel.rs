//! Frame round trips between two processes, next to the floor: a raw socketpair ping-pong with
//! plain `read`/`write` and no framing, measured in the same run.
//!
//! The echo servers are forked before criterion starts, while the process is single-threaded.

#[path = "../tests/support/sys.rs"]
#[allow(dead_code, reason = "the bench uses only part of the test support")]
mod sys;

use std::hint::black_box;
use std::os::fd::OwnedFd;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput};
use netmcore_encap::{ByteBuf, Encap};
use netmcore_ipc::channel::Channel;
use netmcore_ipc::wire::{Message, Request, Response};
use netmcore_resources::ProcessId;

const SIZES: [usize; 2] = [64, 64 << 10];

/// A child that echoes every frame it gets, answering a `SelfProcessId` request with a
/// `ProcessId` response, until the channel closes.
fn frame_echo() -> (Channel, sys::Child) {
    let (ours, theirs) = Channel::pair().expect("socketpair");
    let mut ours = Some(ours);
    let child = sys::fork_child(|| {
        // The child must not keep the parent's end open, or it would never see the end.
        drop(ours.take());
        let mut ch = theirs;
        while let Ok(frame) = ch.recv() {
            let sent = match Request::decode(frame.body()) {
                Ok(Request::SelfProcessId) => ch.send_msg(&Response::ProcessId(ProcessId(7))),
                _ => ch.send(frame.body()),
            };
            if sent.is_err() {
                break;
            }
        }
        0
    });
    (ours.expect("the parent keeps its end"), child)
}

/// A child that writes back whatever it reads, until end of stream.
fn raw_echo() -> (OwnedFd, sys::Child) {
    let (ours, theirs) = rustix::net::socketpair(
        rustix::net::AddressFamily::UNIX,
        rustix::net::SocketType::STREAM,
        rustix::net::SocketFlags::CLOEXEC,
        None,
    )
    .expect("socketpair");
    let mut ours = Some(ours);
    let child = sys::fork_child(|| {
        drop(ours.take());
        let mut buf = vec![0u8; 128 << 10];
        loop {
            match rustix::io::read(&theirs, &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if write_all(&theirs, &buf[..n]).is_err() {
                        break;
                    }
                }
            }
        }
        0
    });
    drop(theirs);
    (ours.expect("the parent keeps its end"), child)
}

fn write_all(fd: &OwnedFd, mut bytes: &[u8]) -> rustix::io::Result<()> {
    while !bytes.is_empty() {
        let n = rustix::io::write(fd, bytes)?;
        bytes = &bytes[n..];
    }
    Ok(())
}

fn read_exact(fd: &OwnedFd, mut buf: &mut [u8]) -> rustix::io::Result<()> {
    while !buf.is_empty() {
        let n = rustix::io::read(fd, &mut *buf)?;
        assert!(n > 0, "the echo server went away");
        buf = &mut buf[n..];
    }
    Ok(())
}

fn main() {
    let (mut channel, frame_child) = frame_echo();
    let (raw, raw_child) = raw_echo();

    let mut c = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(2))
        .configure_from_args();

    let mut group = c.benchmark_group("roundtrip");
    for size in SIZES {
        group.throughput(Throughput::Bytes(size as u64));
        let body = vec![0x5a_u8; size];
        let mut back = vec![0u8; size];
        group.bench_with_input(BenchmarkId::new("raw_socketpair", size), &size, |b, _| {
            b.iter(|| {
                write_all(&raw, &body).expect("write");
                read_exact(&raw, &mut back).expect("read");
                black_box(&back);
            });
        });
        group.bench_with_input(BenchmarkId::new("frame", size), &size, |b, _| {
            b.iter(|| {
                channel.send(&body).expect("send");
                black_box(channel.recv().expect("recv"));
            });
        });
    }
    group.throughput(Throughput::Elements(1));
    group.bench_function("message/request_response", |b| {
        b.iter(|| {
            channel.send_msg(&Request::SelfProcessId).expect("send");
            black_box(channel.recv_msg::<Response>().expect("recv"));
        });
    });
    // A result just under the memfd threshold: the largest message that crosses the socket.
    let result = Response::Joined(Some(
        Encap::wrap(&ByteBuf::from(vec![7u8; 60 << 10])).expect("wrap"),
    ));
    group.bench_function("message/result_60KiB", |b| {
        b.iter(|| {
            channel.send_msg(&result).expect("send");
            black_box(channel.recv_msg::<Response>().expect("recv"));
        });
    });
    // Above the threshold: the message travels in a memfd, written and mapped in place.
    let result = Response::Joined(Some(
        Encap::wrap(&ByteBuf::from(vec![7u8; 1 << 20])).expect("wrap"),
    ));
    group.bench_function("message/result_1MiB_memfd", |b| {
        b.iter(|| {
            channel.send_msg(&result).expect("send");
            black_box(channel.recv_msg::<Response>().expect("recv"));
        });
    });
    group.finish();

    // The size class of `arg_64mib_mb_s` (DESIGN §6), as a round trip: each way, the sender
    // encodes into a fresh memfd and the receiver maps it and decodes (copies) the envelope.
    let mut group = c.benchmark_group("roundtrip_large");
    group.sample_size(10);
    group.throughput(Throughput::Bytes(2 * (64 << 20)));
    let result = Response::Joined(Some(
        Encap::wrap(&ByteBuf::from(vec![7u8; 64 << 20])).expect("wrap"),
    ));
    group.bench_function("message/result_64MiB_memfd", |b| {
        b.iter(|| {
            channel.send_msg(&result).expect("send");
            black_box(channel.recv_msg::<Response>().expect("recv"));
        });
    });
    group.finish();
    c.final_summary();

    drop(channel);
    drop(raw);
    frame_child.wait();
    raw_child.wait();
}
