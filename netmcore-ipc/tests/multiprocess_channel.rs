//! Multi-process tests of channels: each case runs in a forked process of its own (see
//! `support::run_cases`), creates its socketpair, then forks the peer.

mod support;

use std::io::Write;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixStream;

use netmcore_encap::{ByteBuf, Encap};
use netmcore_ipc::Error;
use netmcore_ipc::channel::{Channel, Listener, MAGIC, encode_frame};
use netmcore_ipc::memfd::Memfd;
use netmcore_ipc::wire::{PROTOCOL_VERSION, Response};
use support::sys::{Status, fork_child};
use support::{Case, run_cases};

fn main() -> std::process::ExitCode {
    run_cases(&[
        Case {
            name: "frames_cross_both_ways",
            run: frames_cross_both_ways,
        },
        Case {
            name: "memfd_crosses_with_its_content",
            run: memfd_crosses_with_its_content,
        },
        Case {
            name: "frame_of_256_mib_goes_by_memfd",
            run: frame_of_256_mib_goes_by_memfd,
        },
        Case {
            name: "peer_exiting_mid_frame_truncates",
            run: peer_exiting_mid_frame_truncates,
        },
        Case {
            name: "peer_killed_mid_frame_truncates",
            run: peer_killed_mid_frame_truncates,
        },
        Case {
            name: "peer_exiting_cleanly_closes",
            run: peer_exiting_cleanly_closes,
        },
        Case {
            name: "peer_credentials_name_the_peer",
            run: peer_credentials_name_the_peer,
        },
        Case {
            name: "rejected_descriptors_are_closed",
            run: rejected_descriptors_are_closed,
        },
        Case {
            name: "stream_to_a_killed_reader_is_an_error_not_a_sigpipe",
            run: stream_to_a_killed_reader_is_an_error_not_a_sigpipe,
        },
        Case {
            name: "stream_from_a_killed_writer_is_truncated",
            run: stream_from_a_killed_writer_is_truncated,
        },
    ])
}

/// The reader of a stream is SIGKILLed while the writer waits on a full pipe: the writer gets
/// `Closed` and lives, although `SIGPIPE` has its default disposition (death) here.
fn stream_to_a_killed_reader_is_an_error_not_a_sigpipe() {
    support::sys::default_sigpipe();
    let (mut reader, mut writer) = netmcore_ipc::stream::stream().unwrap();
    let capacity = writer.capacity();
    let child = fork_child(move || {
        // Reads a pipe's worth, then dies: the writer is waiting for room by then.
        let _ = reader.read_exact(capacity);
        let _ =
            rustix::process::kill_process(rustix::process::getpid(), rustix::process::Signal::KILL);
        0
    });
    let result = writer.write_all(&vec![5u8; 64 << 20]);
    assert!(matches!(result, Err(Error::Closed)), "{result:?}");
    assert_eq!(child.wait().status, Status::Signaled(libc::SIGKILL));
}

/// The writer of a stream is SIGKILLed after a part of what it announced: the reader gets
/// `Truncated` with what came.
fn stream_from_a_killed_writer_is_truncated() {
    let (mut reader, mut writer) = netmcore_ipc::stream::stream().unwrap();
    let child = fork_child(move || {
        writer.write_all(&vec![3u8; 3 << 20]).unwrap();
        let _ =
            rustix::process::kill_process(rustix::process::getpid(), rustix::process::Signal::KILL);
        0
    });
    match reader.read_exact(10 << 20) {
        Err(Error::Truncated { got, expected }) => assert_eq!((got, expected), (3 << 20, 10 << 20)),
        other => panic!("expected a truncated stream, got {other:?}"),
    }
    assert_eq!(child.wait().status, Status::Signaled(libc::SIGKILL));
}

/// Runs `body` in a forked child with `end`; the parent keeps the other end. The child's exit
/// code is 0 when `body` returns, 101 when it panics.
fn spawn_peer(end: Channel, body: impl FnOnce(Channel)) -> support::sys::Child {
    fork_child(move || {
        body(end);
        0
    })
}

fn assert_exited_ok(child: support::sys::Child) {
    assert_eq!(child.wait().status, Status::Exited(0), "the peer failed");
}

fn frames_cross_both_ways() {
    let (mut parent, child_end) = Channel::pair().unwrap();
    let child = spawn_peer(child_end, |mut ch| {
        // Echo each frame reversed until the parent says stop, then say goodbye.
        loop {
            let frame = ch.recv().unwrap();
            if frame.body() == b"stop" {
                break;
            }
            let mut reply = frame.body().to_vec();
            reply.reverse();
            ch.send(&reply).unwrap();
        }
        ch.send(b"bye").unwrap();
    });
    for i in 0..100usize {
        let body: Vec<u8> = (0..i * 37).map(|j| (i + j) as u8).collect();
        parent.send(&body).unwrap();
        let mut expected = body;
        expected.reverse();
        assert_eq!(parent.recv().unwrap().body(), &expected[..]);
    }
    parent.send(b"stop").unwrap();
    assert_eq!(parent.recv().unwrap().body(), b"bye");
    assert!(matches!(parent.recv(), Err(Error::Closed)));
    assert_exited_ok(child);
}

fn memfd_crosses_with_its_content() {
    let (mut parent, child_end) = Channel::pair().unwrap();
    let child = spawn_peer(child_end, |mut ch| {
        // Receive the parent's memfd, check it, answer with one of our own.
        let mut frame = ch.recv().unwrap();
        assert_eq!(frame.body(), b"from the parent");
        let memfd = Memfd::from_fd(frame.take_fds().remove(0)).unwrap();
        assert_eq!(memfd.read_to_vec().unwrap(), b"parent content");
        let ours = Memfd::from_bytes("child", b"child content").unwrap();
        ours.seal().unwrap();
        ch.send_with_fds(b"from the child", &[ours.as_fd()])
            .unwrap();
        // Ours is closed here; the parent's copy stays valid.
    });
    let memfd = Memfd::from_bytes("parent", b"parent content").unwrap();
    parent
        .send_with_fds(b"from the parent", &[memfd.as_fd()])
        .unwrap();
    drop(memfd);
    let mut frame = parent.recv().unwrap();
    assert_eq!(frame.body(), b"from the child");
    let fds = frame.take_fds();
    assert_eq!(fds.len(), 1);
    assert_exited_ok(child);
    // The child is gone; its memfd lives on through our descriptor.
    let received = Memfd::from_fd(fds.into_iter().next().unwrap()).unwrap();
    assert!(received.is_sealed().unwrap());
    assert_eq!(&*received.map().unwrap(), b"child content");
}

const BIG: usize = 256 << 20;
const PAGE: usize = 4096;

/// 256 MiB whose every 4 KiB page holds one byte value that depends on its index.
fn big_pattern() -> Vec<u8> {
    let mut v = vec![0u8; BIG];
    for (i, page) in v.chunks_mut(PAGE).enumerate() {
        page.fill((i % 251) as u8);
    }
    v
}

fn is_big_pattern(bytes: &[u8]) -> bool {
    let mut reference = [0u8; PAGE];
    bytes.len() == BIG
        && bytes.chunks(PAGE).enumerate().all(|(i, page)| {
            reference.fill((i % 251) as u8);
            page == &reference[..]
        })
}

fn frame_of_256_mib_goes_by_memfd() {
    let (mut parent, child_end) = Channel::pair().unwrap();
    let child = spawn_peer(child_end, |mut ch| {
        let frame = ch.recv().unwrap();
        assert!(frame.is_memfd());
        assert!(is_big_pattern(frame.body()));
        drop(frame);
        // And back, as a message whose encoding is written straight into a memfd.
        let result = Encap::wrap(&ByteBuf::from(big_pattern())).unwrap();
        ch.send_msg(&Response::Joined(Some(result))).unwrap();
    });
    parent.send(&big_pattern()).unwrap();
    match parent.recv_msg::<Response>().unwrap() {
        Response::Joined(Some(result)) => {
            assert!(is_big_pattern(&result.unwrap::<ByteBuf>().unwrap()));
        }
        other => panic!("unexpected response {other:?}"),
    }
    assert_exited_ok(child);
}

/// The first 10 bytes of a frame announcing 100 body bytes.
fn half_frame() -> Vec<u8> {
    encode_frame(&[42; 100]).unwrap()[..10].to_vec()
}

fn peer_exiting_mid_frame_truncates() {
    let (mut parent, child_end) = Channel::pair().unwrap();
    let child = spawn_peer(child_end, |mut ch| {
        ch.send(b"complete").unwrap();
        let mut raw = UnixStream::from(ch.into_fd());
        raw.write_all(&half_frame()).unwrap();
        // Exits without writing the rest.
    });
    assert_exited_ok(child);
    assert_eq!(parent.recv().unwrap().body(), b"complete");
    assert!(matches!(
        parent.recv(),
        Err(Error::Truncated {
            got: 10,
            expected: 108
        })
    ));
}

fn peer_killed_mid_frame_truncates() {
    let (mut parent, child_end) = Channel::pair().unwrap();
    let (mut sync_parent, sync_child) = Channel::pair().unwrap();
    let child = fork_child(move || {
        let mut raw = UnixStream::from(child_end.into_fd());
        raw.write_all(&half_frame()).unwrap();
        let mut sync = sync_child;
        sync.send(b"written").unwrap();
        // Wait to be killed; never returns normally (the parent never answers).
        let _ = sync.recv();
        1
    });
    // The non-blocking path keeps the partial frame and does not block on it.
    assert_eq!(sync_parent.recv().unwrap().body(), b"written");
    assert!(parent.try_recv().unwrap().is_none());
    child.kill();
    assert!(matches!(child.wait().status, Status::Signaled(9)));
    assert!(matches!(
        parent.recv(),
        Err(Error::Truncated {
            got: 10,
            expected: 108
        })
    ));
}

fn peer_exiting_cleanly_closes() {
    let (mut parent, child_end) = Channel::pair().unwrap();
    let child = spawn_peer(child_end, |mut ch| {
        ch.send(b"one").unwrap();
        ch.send(b"two").unwrap();
    });
    assert_exited_ok(child);
    assert_eq!(parent.recv().unwrap().body(), b"one");
    assert_eq!(parent.try_recv().unwrap().unwrap().body(), b"two");
    assert!(matches!(parent.try_recv(), Err(Error::Closed)));
}

fn peer_credentials_name_the_peer() {
    let me = std::process::id();
    let uid = rustix::process::getuid().as_raw();

    // A socketpair made before the fork names its creator on both ends.
    let (mut parent, child_end) = Channel::pair().unwrap();
    let child = spawn_peer(child_end, move |mut ch| {
        let cred = ch.peer_credentials().unwrap();
        assert_eq!(cred.pid, me);
        // A socketpair the child makes itself names the child: pass one end to the parent.
        let (ours, theirs) = Channel::pair().unwrap();
        ch.send_with_fds(b"pair", &[theirs.as_fd()]).unwrap();
        drop(theirs);
        let mut ours = ours;
        assert_eq!(ours.recv().unwrap().body(), b"seen");
    });
    assert_eq!(parent.peer_credentials().unwrap().pid, me);
    let mut frame = parent.recv().unwrap();
    let mut theirs = Channel::from_fd(frame.take_fds().remove(0)).unwrap();
    let cred = theirs.peer_credentials().unwrap();
    assert_eq!(cred.pid as i32, child.pid);
    assert_eq!(cred.uid, uid);
    assert!(cred.is_same_user());
    theirs.send(b"seen").unwrap();
    assert_exited_ok(child);

    // A listener sees the process that connected, and the client sees the listener.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("admin.sock");
    let listener = Listener::bind(&path).unwrap();
    let child = fork_child(|| {
        let mut client = Channel::connect(&path).unwrap();
        assert_eq!(client.peer_credentials().unwrap().pid, me);
        assert_eq!(client.recv().unwrap().body(), b"welcome");
        0
    });
    let mut server = listener.accept().unwrap();
    let cred = server.peer_credentials().unwrap();
    assert_eq!(cred.pid as i32, child.pid);
    assert_eq!(cred.uid, uid);
    server.send(b"welcome").unwrap();
    assert_exited_ok(child);
    std::fs::remove_file(&path).unwrap();
}

/// Open descriptors of this process.
fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

fn raw_sendmsg(sock: &UnixStream, bytes: &[u8], fds: &[BorrowedFd<'_>]) {
    let mut space = vec![MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(fds.len()))];
    let mut control = rustix::net::SendAncillaryBuffer::new(&mut space);
    assert!(control.push(rustix::net::SendAncillaryMessage::ScmRights(fds)));
    let iov = [std::io::IoSlice::new(bytes)];
    let n =
        rustix::net::sendmsg(sock, &iov, &mut control, rustix::net::SendFlags::empty()).unwrap();
    assert_eq!(n, bytes.len());
}

/// A frame's descriptors are closed when the frame is rejected, whatever the reason, and
/// with the frame when it is accepted and dropped: none stays open in the receiver.
fn rejected_descriptors_are_closed() {
    let memfds: Vec<Memfd> = (0..40)
        .map(|_| Memfd::from_bytes("fd", b"x").unwrap())
        .collect();
    let fds: Vec<BorrowedFd<'_>> = memfds.iter().map(AsFd::as_fd).collect();
    let header = |flags: u8, nfds: u8, len: u32| {
        let mut h = vec![MAGIC, PROTOCOL_VERSION, flags, nfds];
        h.extend_from_slice(&len.to_le_bytes());
        h
    };
    let scenarios: Vec<(Vec<u8>, usize)> = vec![
        // Accepted: three descriptors with a frame that announces three.
        ([header(0, 3, 1), vec![1]].concat(), 3),
        // More descriptors than announced.
        ([header(0, 2, 1), vec![1]].concat(), 3),
        // A memfd body that is not sealed.
        (header(1, 1, 1), 1),
        // More descriptors than a message may bring (the kernel truncates them).
        ([header(0, 17, 1), vec![1]].concat(), 40),
        // A bad header after descriptors arrived.
        ([vec![0], header(0, 0, 0)].concat(), 2),
    ];
    for (i, (bytes, nfds)) in scenarios.into_iter().enumerate() {
        let (mut receiver, sender) = Channel::pair().unwrap();
        let sender = UnixStream::from(sender.into_fd());
        let before = open_fds();
        raw_sendmsg(&sender, &bytes, &fds[..nfds]);
        let result = receiver.recv();
        if i == 0 {
            assert_eq!(result.unwrap().fds().len(), 3);
        } else {
            assert!(
                matches!(result, Err(Error::Protocol { .. })),
                "scenario {i}: {result:?}"
            );
        }
        assert_eq!(open_fds(), before, "scenario {i} left descriptors open");
    }
}
