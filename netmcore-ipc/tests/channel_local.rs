//! Channels within one process: both ends of a socketpair (or a listener and its client) are
//! driven from the test thread, so every case is deterministic.

use std::io::Write;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use netmcore_encap::Encap;
use netmcore_ipc::Error;
use netmcore_ipc::channel::{
    self, Channel, HEADER_LEN, Limits, Listener, MAGIC, MAX_FDS, encode_frame,
};
use netmcore_ipc::memfd::Memfd;
use netmcore_ipc::wire::{PROTOCOL_VERSION, Request, Response};
use netmcore_resources::{Inherit, ProcessId, ResId};
use rustix::net::{SendAncillaryBuffer, SendAncillaryMessage, SendFlags};

/// The other end as a plain stream, to write arbitrary bytes.
fn raw(end: Channel) -> UnixStream {
    UnixStream::from(end.into_fd())
}

/// A header as the channel writes it.
fn header(flags: u8, nfds: u8, len: u32) -> Vec<u8> {
    let mut h = vec![MAGIC, PROTOCOL_VERSION, flags, nfds];
    h.extend_from_slice(&len.to_le_bytes());
    h
}

/// Writes `bytes` with `fds` attached, bypassing the channel's checks.
fn raw_sendmsg(sock: &UnixStream, bytes: &[u8], fds: &[BorrowedFd<'_>]) {
    let mut space = vec![MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(fds.len()))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    assert!(control.push(SendAncillaryMessage::ScmRights(fds)));
    let n = rustix::net::sendmsg(
        sock,
        &[std::io::IoSlice::new(bytes)],
        &mut control,
        SendFlags::empty(),
    )
    .unwrap();
    assert_eq!(n, bytes.len());
}

fn memfd_with(text: &[u8]) -> Memfd {
    Memfd::from_bytes("test", text).unwrap()
}

#[test]
fn frames_cross_both_ways_in_order() {
    let (mut a, mut b) = Channel::pair().unwrap();
    for i in 0..20u8 {
        a.send(&vec![i; usize::from(i) * 100]).unwrap();
    }
    b.send(b"").unwrap();
    for i in 0..20u8 {
        let frame = b.recv().unwrap();
        assert_eq!(frame.body(), &vec![i; usize::from(i) * 100][..]);
        assert!(frame.fds().is_empty() && !frame.is_memfd());
    }
    assert_eq!(a.recv().unwrap().body(), b"");
}

#[test]
fn descriptors_travel_with_their_frame() {
    let (mut a, mut b) = Channel::pair().unwrap();
    let one = memfd_with(b"one");
    let two = memfd_with(b"two");
    a.send(b"before").unwrap();
    a.send_with_fds(b"with two", &[one.as_fd(), two.as_fd()])
        .unwrap();
    a.send(b"after").unwrap();
    a.send_with_fds(b"with one", &[two.as_fd()]).unwrap();
    assert!(b.recv().unwrap().fds().is_empty());
    let mut frame = b.recv().unwrap();
    assert_eq!(frame.body(), b"with two");
    let fds = frame.take_fds();
    let texts: Vec<_> = fds
        .into_iter()
        .map(|fd| Memfd::from_fd(fd).unwrap().read_to_vec().unwrap())
        .collect();
    assert_eq!(texts, [b"one".to_vec(), b"two".to_vec()]);
    assert!(b.recv().unwrap().fds().is_empty());
    let (body, fds) = b.recv().unwrap().into_parts();
    assert_eq!(&*body, b"with one");
    assert_eq!(fds.len(), 1);
}

#[test]
fn a_large_body_travels_in_a_memfd() {
    let (mut a, mut b) = Channel::pair().unwrap();
    let threshold = a.limits().memfd_threshold();
    let at = vec![1u8; threshold];
    let over: Vec<u8> = (0..threshold + 1).map(|i| i as u8).collect();
    let fd_memfd = memfd_with(b"extra");
    a.send(&at).unwrap();
    a.send_with_fds(&over, &[fd_memfd.as_fd()]).unwrap();
    let small = b.recv().unwrap();
    assert!(!small.is_memfd());
    assert_eq!(small.body(), &at[..]);
    let big = b.recv().unwrap();
    assert!(big.is_memfd());
    assert_eq!(big.body(), &over[..]);
    // The memfd that carried the body is not among the frame's descriptors.
    assert_eq!(big.fds().len(), 1);
    let (body, _) = big.into_parts();
    assert_eq!(body.into_vec(), over);
}

#[test]
fn the_threshold_can_be_lowered() {
    let (mut a, mut b) = Channel::pair().unwrap();
    a.set_limits(Limits::default().with_memfd_threshold(10));
    a.send(b"0123456789").unwrap();
    a.send(b"0123456789A").unwrap();
    assert!(!b.recv().unwrap().is_memfd());
    assert!(b.recv().unwrap().is_memfd());
}

#[test]
fn try_recv_waits_for_a_whole_frame() {
    let (mut a, b) = Channel::pair().unwrap();
    let mut w = raw(b);
    assert!(a.try_recv().unwrap().is_none());
    let frame = encode_frame(b"split across writes").unwrap();
    w.write_all(&frame[..3]).unwrap();
    assert!(a.try_recv().unwrap().is_none());
    w.write_all(&frame[3..12]).unwrap();
    assert!(a.try_recv().unwrap().is_none());
    assert!(!a.has_buffered_frame());
    // The rest of this frame and two more in one write.
    let mut rest = frame[12..].to_vec();
    rest.extend(encode_frame(b"second").unwrap());
    rest.extend(encode_frame(b"third").unwrap());
    w.write_all(&rest).unwrap();
    assert_eq!(
        a.try_recv().unwrap().unwrap().body(),
        b"split across writes"
    );
    assert!(a.has_buffered_frame());
    assert_eq!(a.try_recv().unwrap().unwrap().body(), b"second");
    assert_eq!(a.try_recv().unwrap().unwrap().body(), b"third");
    assert!(a.try_recv().unwrap().is_none());
}

#[test]
fn end_of_stream_is_closed_at_a_boundary_and_truncated_inside_a_frame() {
    let (mut a, mut b) = Channel::pair().unwrap();
    b.send(b"last").unwrap();
    drop(b);
    assert_eq!(a.recv().unwrap().body(), b"last");
    assert!(matches!(a.recv(), Err(Error::Closed)));
    assert!(matches!(a.try_recv(), Err(Error::Closed)));

    let (mut a, b) = Channel::pair().unwrap();
    let mut w = raw(b);
    let frame = encode_frame(&[9; 100]).unwrap();
    w.write_all(&frame[..50]).unwrap();
    drop(w);
    match a.recv() {
        Err(Error::Truncated { got: 50, expected }) => assert_eq!(expected, HEADER_LEN + 100),
        other => panic!("expected a truncated frame, got {other:?}"),
    }

    let (mut a, b) = Channel::pair().unwrap();
    let mut w = raw(b);
    w.write_all(&frame[..5]).unwrap();
    drop(w);
    assert!(matches!(
        a.recv(),
        Err(Error::Truncated {
            got: 5,
            expected: HEADER_LEN
        })
    ));
}

#[test]
fn sending_to_a_closed_peer_is_closed() {
    let (mut a, b) = Channel::pair().unwrap();
    drop(b);
    assert!(matches!(a.send(b"x"), Err(Error::Closed)));
}

#[test]
fn recv_timeout_gives_up_and_keeps_the_partial_frame() {
    let (mut a, b) = Channel::pair().unwrap();
    let mut w = raw(b);
    let frame = encode_frame(b"late").unwrap();
    w.write_all(&frame[..6]).unwrap();
    assert!(matches!(
        a.recv_timeout(Duration::from_millis(20)),
        Err(Error::Timeout { op: "recv", .. })
    ));
    w.write_all(&frame[6..]).unwrap();
    assert_eq!(
        a.recv_timeout(Duration::from_secs(60)).unwrap().body(),
        b"late"
    );
}

#[test]
fn busy_poll_still_receives() {
    let (mut a, mut b) = Channel::pair().unwrap();
    a.set_busy_poll(Duration::from_micros(50));
    b.send(b"spun").unwrap();
    assert_eq!(a.recv().unwrap().body(), b"spun");
}

#[test]
fn oversized_frames_are_refused_on_both_sides() {
    let (mut a, mut b) = Channel::pair().unwrap();
    let small = Limits::default()
        .with_frame_limit(100)
        .with_memfd_threshold(1000);
    a.set_limits(small);
    assert!(matches!(
        a.send(&[0; 101]),
        Err(Error::FrameTooLarge {
            len: 101,
            limit: 100
        })
    ));
    b.set_limits(Limits::default().with_memfd_threshold(1000));
    b.send(&[0; 101]).unwrap();
    assert!(matches!(
        a.recv(),
        Err(Error::FrameTooLarge {
            len: 101,
            limit: 100
        })
    ));
    // The channel is spent after a bad frame.
    assert!(matches!(a.try_recv(), Err(Error::Protocol { .. })));

    let (mut a, mut b) = Channel::pair().unwrap();
    a.set_limits(
        Limits::default()
            .with_memfd_limit(1000)
            .with_memfd_threshold(10),
    );
    b.set_limits(Limits::default().with_memfd_threshold(10));
    b.send(&[1; 1001]).unwrap();
    assert!(matches!(
        a.recv(),
        Err(Error::FrameTooLarge {
            len: 1001,
            limit: 1000
        })
    ));
    assert!(matches!(b.send(&[1; 1001]), Ok(())));
    b.set_limits(
        Limits::default()
            .with_memfd_limit(1000)
            .with_memfd_threshold(10),
    );
    assert!(matches!(
        b.send(&[1; 1001]),
        Err(Error::FrameTooLarge {
            len: 1001,
            limit: 1000
        })
    ));
}

#[test]
fn an_announced_length_over_the_limit_is_refused_before_the_body() {
    let (mut a, b) = Channel::pair().unwrap();
    let mut w = raw(b);
    // Announces 4 GiB − 1 but sends only the header: the error comes at once.
    w.write_all(&header(0, 0, u32::MAX)).unwrap();
    assert!(matches!(
        a.recv(),
        Err(Error::FrameTooLarge { len, limit }) if len == u64::from(u32::MAX) && limit == 16 << 20
    ));
}

#[test]
fn malformed_headers_are_protocol_errors() {
    let cases: Vec<(Vec<u8>, &str)> = vec![
        ([&[0x00][..], &header(0, 0, 0)[1..]].concat(), "magic"),
        (
            [&[MAGIC, PROTOCOL_VERSION + 1][..], &header(0, 0, 0)[2..]].concat(),
            "version",
        ),
        (header(0x80, 0, 0), "flags"),
        (header(0, 40, 0), "descriptors"),
        (header(1, 0, 10), "memfd"),
        (header(0, 1, 0), "descriptors"),
    ];
    for (bytes, word) in cases {
        let (mut a, b) = Channel::pair().unwrap();
        raw(b).write_all(&bytes).unwrap();
        match a.recv() {
            Err(Error::Protocol { reason, .. }) => assert!(reason.contains(word), "{reason}"),
            other => panic!("{word}: expected a protocol error, got {other:?}"),
        }
    }
}

#[test]
fn a_version_mismatch_names_both_versions() {
    let (mut a, b) = Channel::pair().unwrap();
    let mut bytes = header(0, 0, 0);
    bytes[1] = 9;
    raw(b).write_all(&bytes).unwrap();
    let err = a.recv().unwrap_err().to_string();
    assert!(
        err.contains("version 9") && err.contains(&PROTOCOL_VERSION.to_string()),
        "{err}"
    );
}

#[test]
fn unannounced_and_missing_descriptors_are_protocol_errors() {
    // Descriptors sent with a frame that announces none.
    let (mut a, b) = Channel::pair().unwrap();
    let w = raw(b);
    let m = memfd_with(b"x");
    raw_sendmsg(&w, &encode_frame(b"liar").unwrap(), &[m.as_fd()]);
    raw_sendmsg(&w, &encode_frame(b"next").unwrap(), &[]);
    // The first frame itself is fine as far as its reader can tell; the stray descriptor is
    // detected when the next frame starts.
    assert_eq!(a.recv().unwrap().body(), b"liar");
    assert!(matches!(
        a.recv(),
        Err(Error::Protocol {
            what: "frame descriptors",
            ..
        })
    ));

    // A frame that announces two and brings one.
    let (mut a, b) = Channel::pair().unwrap();
    let w = raw(b);
    let mut bytes = header(0, 2, 1);
    bytes.push(7);
    raw_sendmsg(&w, &bytes, &[m.as_fd()]);
    assert!(matches!(
        a.recv(),
        Err(Error::Protocol {
            what: "frame descriptors",
            ..
        })
    ));

    // A memfd body whose descriptor is a socket.
    let (mut a, b) = Channel::pair().unwrap();
    let w = raw(b);
    let (s1, _s2) = Channel::pair().unwrap();
    raw_sendmsg(&w, &header(1, 1, 10), &[s1.as_fd()]);
    assert!(matches!(
        a.recv(),
        Err(Error::Protocol {
            what: "frame body",
            ..
        })
    ));
}

#[test]
fn an_unsealed_or_short_memfd_body_is_refused() {
    let (mut a, b) = Channel::pair().unwrap();
    let w = raw(b);
    let unsealed = memfd_with(&[5; 100]);
    raw_sendmsg(&w, &header(1, 1, 100), &[unsealed.as_fd()]);
    match a.recv() {
        Err(Error::Protocol { reason, .. }) => assert!(reason.contains("not sealed"), "{reason}"),
        other => panic!("expected a protocol error, got {other:?}"),
    }

    let (mut a, b) = Channel::pair().unwrap();
    let w = raw(b);
    let short = memfd_with(&[5; 100]);
    short.seal().unwrap();
    raw_sendmsg(&w, &header(1, 1, 101), &[short.as_fd()]);
    assert!(matches!(
        a.recv(),
        Err(Error::Protocol {
            what: "frame body",
            ..
        })
    ));
}

#[test]
fn too_many_descriptors_are_refused_by_the_sender() {
    let (mut a, _b) = Channel::pair().unwrap();
    let m = memfd_with(b"x");
    let fds = vec![m.as_fd(); MAX_FDS + 1];
    assert!(matches!(
        a.send_with_fds(b"x", &fds),
        Err(Error::Protocol { .. })
    ));
    assert!(a.send_with_fds(b"x", &fds[..MAX_FDS]).is_ok());
}

#[test]
fn queued_frames_go_out_without_blocking_and_in_order() {
    let (mut a, mut b) = Channel::pair().unwrap();
    a.set_limits(Limits::default().with_memfd_threshold(1 << 20));
    // Queue far more than a socket buffer holds; nothing blocks.
    let bodies: Vec<Vec<u8>> = (0..64u8).map(|i| vec![i; 60_000]).collect();
    for (i, body) in bodies.iter().enumerate() {
        let fds = if i % 10 == 0 {
            vec![OwnedFd::from(memfd_with(&[i as u8]))]
        } else {
            vec![]
        };
        a.queue(body, fds).unwrap();
    }
    assert!(a.has_pending_output());
    // A blocking send would have to wait; the reader drains while the writer flushes.
    let mut got = Vec::new();
    while got.len() < bodies.len() {
        a.flush().unwrap();
        while let Some(frame) = b.try_recv().unwrap() {
            let i = got.len();
            assert_eq!(frame.fds().len(), usize::from(i % 10 == 0), "frame {i}");
            got.push(frame.body().to_vec());
        }
    }
    assert_eq!(got, bodies);
    assert!(a.flush().unwrap());
    assert!(!a.has_pending_output());
}

#[test]
fn messages_round_trip_including_large_ones() {
    let (mut worker, mut master) = Channel::pair().unwrap();
    let big = Encap::wrap(&vec![3u8; 1 << 20]).unwrap();
    let request = Request::Start {
        fork_point: ResId(0),
        arg: big.clone(),
        inherit: Inherit::All,
    };
    worker.send_msg(&request).unwrap();
    worker.send_msg(&Request::Release(ResId(1))).unwrap();
    assert_eq!(master.recv_msg::<Request>().unwrap(), request);
    assert_eq!(
        master.try_recv_msg::<Request>().unwrap(),
        Some(Request::Release(ResId(1)))
    );
    assert_eq!(master.try_recv_msg::<Request>().unwrap(), None);
    master
        .queue_msg(&Response::Joined(Some(big.clone())))
        .unwrap();
    master.queue_msg(&Response::Started(ProcessId(2))).unwrap();
    assert!(master.flush().unwrap());
    assert_eq!(
        worker.recv_msg::<Response>().unwrap(),
        Response::Joined(Some(big))
    );
    assert_eq!(
        worker.recv_msg::<Response>().unwrap(),
        Response::Started(ProcessId(2))
    );
}

#[test]
fn a_message_frame_with_descriptors_or_garbage_is_refused() {
    let (mut a, mut b) = Channel::pair().unwrap();
    let m = memfd_with(b"x");
    let body = netmcore_ipc::wire::Message::encode(&Request::SelfProcessId).unwrap();
    b.send_with_fds(&body, &[m.as_fd()]).unwrap();
    assert!(matches!(
        a.recv_msg::<Request>(),
        Err(Error::Protocol {
            what: "request",
            ..
        })
    ));
    b.send(&[0xff, 0xff, 0xff]).unwrap();
    assert!(matches!(
        a.recv_msg::<Request>(),
        Err(Error::Protocol {
            what: "request",
            ..
        })
    ));
    // The frames were well formed: the stream goes on.
    b.send_msg(&Request::SelfProcessId).unwrap();
    assert_eq!(a.recv_msg::<Request>().unwrap(), Request::SelfProcessId);
}

#[test]
fn peer_credentials_of_a_socketpair_are_ours() {
    let (a, _b) = Channel::pair().unwrap();
    let cred = a.peer_credentials().unwrap();
    assert_eq!(cred.pid, std::process::id());
    assert_eq!(cred.uid, rustix::process::getuid().as_raw());
    assert_eq!(cred.gid, rustix::process::getgid().as_raw());
    assert!(cred.is_same_user());
    let m = memfd_with(b"x");
    assert!(matches!(
        channel::peer_credentials(&m),
        Err(Error::Os { .. })
    ));
}

#[test]
fn a_listener_accepts_framed_connections() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("admin.sock");
    let listener = Listener::bind(&path).unwrap();
    assert_eq!(listener.path(), path);
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    assert!(listener.try_accept().unwrap().is_none());
    let mut client = Channel::connect(&path).unwrap();
    let mut server = listener.accept().unwrap();
    let cred = server.peer_credentials().unwrap();
    assert_eq!(cred.pid, std::process::id());
    assert!(cred.is_same_user());
    client.send(b"status").unwrap();
    assert_eq!(server.recv().unwrap().body(), b"status");
    server.send(b"ok").unwrap();
    assert_eq!(client.recv().unwrap().body(), b"ok");
    // A second bind on the same path fails and names it.
    match Listener::bind(&path) {
        Err(Error::Os {
            op: "bind", target, ..
        }) => assert!(target.contains("admin.sock")),
        other => panic!("expected EADDRINUSE, got {other:?}"),
    }
    assert!(matches!(
        Channel::connect(dir.path().join("nobody.sock")),
        Err(Error::Os { op: "connect", .. })
    ));
}

#[test]
fn from_fd_accepts_only_unix_stream_sockets() {
    let (a, b) = Channel::pair().unwrap();
    let mut a = Channel::from_fd(a.into_fd()).unwrap();
    let mut b = Channel::from_fd(b.into_fd()).unwrap();
    a.send(b"again").unwrap();
    assert_eq!(b.recv().unwrap().body(), b"again");
    let m = memfd_with(b"x");
    assert!(matches!(
        Channel::from_fd(m.into_fd()),
        Err(Error::Os {
            op: "getsockopt",
            ..
        })
    ));
    let (d, _) = std::os::unix::net::UnixDatagram::pair().unwrap();
    assert!(matches!(
        Channel::from_fd(d.into()),
        Err(Error::Protocol { .. })
    ));
}

#[test]
fn a_nonblocking_descriptor_still_blocks_in_recv_and_send() {
    let (a, mut b) = Channel::pair().unwrap();
    let fd = a.into_fd();
    let flags = rustix::fs::fcntl_getfl(&fd).unwrap();
    rustix::fs::fcntl_setfl(&fd, flags | rustix::fs::OFlags::NONBLOCK).unwrap();
    let mut a = Channel::from_fd(fd).unwrap();
    b.send(b"x").unwrap();
    assert_eq!(a.recv().unwrap().body(), b"x");
    a.send(&[1; 60_000]).unwrap();
    assert_eq!(b.recv().unwrap().body(), &[1; 60_000][..]);
}

#[test]
fn a_message_travels_with_its_descriptor_and_a_plain_receive_refuses_it() {
    let (mut a, mut b) = Channel::pair().unwrap();
    let (reader, mut writer) = netmcore_ipc::stream::stream().unwrap();
    let request = Request::StartStream {
        fork_point: ResId(3),
        head: b"head".to_vec(),
        run_len: 5,
        inherit: Inherit::Nothing,
    };
    a.send_msg_with_fds(&request, &[reader.as_fd()]).unwrap();
    drop(reader);
    let (got, mut fds) = b.recv_msg_with_fds::<Request>().unwrap();
    assert_eq!(got, request);
    assert_eq!(fds.len(), 1);
    // The descriptor is the stream's read end.
    writer.write_all(b"12345").unwrap();
    let mut received = netmcore_ipc::stream::Reader::from_fd(fds.remove(0)).unwrap();
    assert_eq!(received.read_exact(5).unwrap(), b"12345");

    // Without descriptors, it is the same message.
    a.send_msg_with_fds(&request, &[]).unwrap();
    assert_eq!(
        b.try_recv_msg_with_fds::<Request>()
            .unwrap()
            .map(|(_, f)| f.len()),
        Some(0)
    );
    // A plain receive takes no descriptors: the frame is refused (and its descriptor closed),
    // and the channel goes on.
    let memfd = memfd_with(b"any descriptor");
    a.send_msg_with_fds(&request, &[memfd.as_fd()]).unwrap();
    assert!(matches!(
        b.recv_msg::<Request>(),
        Err(Error::Protocol { .. })
    ));
    a.send_msg(&Request::SelfProcessId).unwrap();
    assert_eq!(b.recv_msg::<Request>().unwrap(), Request::SelfProcessId);
}
