//! Property tests: decoding any byte string, through the message decoders and through the
//! frame decoder, gives a value or an error and never panics; valid input round-trips.

use netmcore_encap::Encap;
use netmcore_ipc::Error;
use netmcore_ipc::channel::{FrameDecoder, HEADER_LEN, Limits, encode_frame};
use netmcore_ipc::wire::{Message, Outcome, RemoteError, Request, Response};
use netmcore_resources::{Inherit, ProcessId, ResId, ResourceDesc, ResourceKind};
use proptest::prelude::*;

fn encap() -> impl Strategy<Value = Encap> {
    prop_oneof![
        any::<Vec<u8>>().prop_map(|v| Encap::wrap(&v).unwrap()),
        ".*".prop_map(|s: String| Encap::wrap(&s).unwrap()),
        any::<(u64, bool)>().prop_map(|t| Encap::wrap(&t).unwrap()),
    ]
}

fn kind() -> impl Strategy<Value = ResourceKind> {
    proptest::sample::select(ResourceKind::ALL.to_vec())
}

fn res_id() -> impl Strategy<Value = ResId> {
    any::<u64>().prop_map(ResId)
}

fn pid() -> impl Strategy<Value = ProcessId> {
    any::<u64>().prop_map(ProcessId)
}

fn inherit() -> impl Strategy<Value = Inherit> {
    prop_oneof![
        Just(Inherit::Nothing),
        Just(Inherit::All),
        proptest::collection::vec(res_id(), 0..5).prop_map(Inherit::Resources),
    ]
}

fn request() -> impl Strategy<Value = Request> {
    prop_oneof![
        (res_id(), encap(), inherit()).prop_map(|(fork_point, arg, inherit)| Request::Start {
            fork_point,
            arg,
            inherit
        }),
        (res_id(), pid()).prop_map(|(join_point, pid)| Request::Join { join_point, pid }),
        (res_id(), pid()).prop_map(|(join_point, pid)| Request::JoinNowait { join_point, pid }),
        encap().prop_map(|e| Request::Finished(Outcome::Returned(e))),
        ".*".prop_map(|m| Request::Finished(Outcome::Failed(m))),
        (res_id(), proptest::option::of(kind()))
            .prop_map(|(id, expected)| Request::GetResource { id, expected }),
        res_id().prop_map(Request::Release),
        any::<Vec<u8>>().prop_map(|b| {
            use std::os::unix::ffi::OsStringExt;
            Request::ManageFile(std::ffi::OsString::from_vec(b).into())
        }),
        ".*".prop_map(Request::ManageShm),
        ".*".prop_map(Request::ManageSem),
        (".*", any::<u64>())
            .prop_map(|(prefix, size)| Request::CreatePreallocatedShm { prefix, size }),
        Just(Request::SelfProcessId),
        (".*", any::<u64>()).prop_map(|(prefix, size)| Request::CreateShm { prefix, size }),
        (res_id(), any::<Vec<u8>>(), any::<u64>(), inherit()).prop_map(
            |(fork_point, head, run_len, inherit)| Request::StartStream {
                fork_point,
                head,
                run_len,
                inherit
            }
        ),
    ]
}

fn desc() -> impl Strategy<Value = ResourceDesc> {
    prop_oneof![
        "/.*".prop_map(|p| ResourceDesc::File(p.into())),
        res_id().prop_map(|join_point| ResourceDesc::ForkPoint { join_point }),
        res_id().prop_map(|fork_point| ResourceDesc::JoinPoint { fork_point }),
        ".*".prop_map(ResourceDesc::PosixSem),
        ".*".prop_map(ResourceDesc::PosixShm),
        (".*", any::<usize>())
            .prop_map(|(name, size)| ResourceDesc::PosixShmPreallocated { name, size }),
    ]
}

fn remote_error() -> impl Strategy<Value = RemoteError> {
    prop_oneof![
        res_id().prop_map(RemoteError::NoResource),
        pid().prop_map(RemoteError::UnknownProcess),
        (res_id(), kind(), kind()).prop_map(|(id, expected, found)| RemoteError::WrongKind {
            id,
            expected,
            found
        }),
        res_id().prop_map(RemoteError::NotShared),
        Just(RemoteError::NotInMaster),
        ".*".prop_map(RemoteError::InvalidName),
        Just(RemoteError::ShuttingDown),
        (".*", ".*", ".*").prop_map(|(op, target, message)| RemoteError::Io {
            op,
            target,
            message
        }),
    ]
}

fn response() -> impl Strategy<Value = Response> {
    prop_oneof![
        pid().prop_map(Response::Started),
        proptest::option::of(encap()).prop_map(Response::Joined),
        (res_id(), desc()).prop_map(|(id, desc)| Response::Resource { id, desc }),
        (res_id(), ".*").prop_map(|(id, name)| Response::Preallocated { id, name }),
        pid().prop_map(Response::ProcessId),
        Just(Response::Ok),
        remote_error().prop_map(Response::Error),
        (
            pid(),
            res_id(),
            encap(),
            proptest::collection::vec(res_id(), 0..4)
        )
            .prop_map(|(pid, fork_point, arg, inherited)| Response::Run {
                pid,
                fork_point,
                arg,
                inherited
            }),
        Just(Response::Shutdown),
    ]
}

/// How a valid encoding is damaged.
#[derive(Debug, Clone)]
enum Mutation {
    /// Flip these bits (positions taken modulo the length).
    Flips(Vec<(usize, u8)>),
    /// Keep only this many bytes (modulo the length + 1).
    Truncate(usize),
    /// Append these bytes.
    Extend(Vec<u8>),
    /// Overwrite a byte.
    Set(usize, u8),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        proptest::collection::vec((any::<usize>(), 0..8u8), 1..6).prop_map(Mutation::Flips),
        any::<usize>().prop_map(Mutation::Truncate),
        proptest::collection::vec(any::<u8>(), 1..16).prop_map(Mutation::Extend),
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Set(i, b)),
    ]
}

fn mutate(mut bytes: Vec<u8>, mutations: &[Mutation]) -> Vec<u8> {
    for m in mutations {
        match m {
            Mutation::Flips(flips) if !bytes.is_empty() => {
                let len = bytes.len();
                for &(at, bit) in flips {
                    bytes[at % len] ^= 1 << bit;
                }
            }
            Mutation::Flips(_) => {}
            Mutation::Truncate(n) => bytes.truncate(n % (bytes.len() + 1)),
            Mutation::Extend(more) => bytes.extend_from_slice(more),
            Mutation::Set(at, b) if !bytes.is_empty() => {
                let len = bytes.len();
                bytes[at % len] = *b;
            }
            Mutation::Set(..) => {}
        }
    }
    bytes
}

/// Feeds `bytes` in chunks of the given sizes (cycled) and collects frames until the decoder
/// wants more or fails; returns the bodies and the error, if any.
fn run_decoder(limits: Limits, bytes: &[u8], chunks: &[usize]) -> (Vec<Vec<u8>>, Option<Error>) {
    let mut decoder = FrameDecoder::new(limits);
    let mut bodies = Vec::new();
    let mut at = 0;
    let mut sizes = chunks.iter().cycle();
    loop {
        loop {
            match decoder.next_frame() {
                Ok(Some(frame)) => bodies.push(frame.body().to_vec()),
                Ok(None) => break,
                Err(e) => return (bodies, Some(e)),
            }
        }
        if at == bytes.len() {
            return (bodies, Some(decoder.end_of_stream()));
        }
        let n = (*sizes.next().unwrap_or(&1)).clamp(1, bytes.len() - at);
        decoder.feed(&bytes[at..at + n], Vec::new());
        at += n;
    }
}

/// Cases per property: `PROPTEST_CASES` when set (`cargo xtask prop` sets it), else `default`.
fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases(512)))]

    #[test]
    fn arbitrary_bytes_never_panic_the_message_decoders(bytes in any::<Vec<u8>>()) {
        let _ = Request::decode(&bytes);
        let _ = Response::decode(&bytes);
    }

    #[test]
    fn requests_round_trip(request in request()) {
        let body = request.encode().unwrap();
        prop_assert_eq!(request.encoded_len().unwrap(), body.len());
        prop_assert_eq!(Request::decode(&body).unwrap(), request);
    }

    #[test]
    fn responses_round_trip(response in response()) {
        let body = response.encode().unwrap();
        prop_assert_eq!(Response::decode(&body).unwrap(), response);
    }

    #[test]
    fn mutated_requests_decode_or_fail_cleanly(
        request in request(),
        mutations in proptest::collection::vec(mutation(), 1..4),
    ) {
        let body = mutate(request.encode().unwrap(), &mutations);
        if let Ok(decoded) = Request::decode(&body) {
            // Whatever decoded is a real message: it round-trips.
            prop_assert_eq!(Request::decode(&decoded.encode().unwrap()).unwrap(), decoded);
        }
    }

    #[test]
    fn mutated_responses_decode_or_fail_cleanly(
        response in response(),
        mutations in proptest::collection::vec(mutation(), 1..4),
    ) {
        let body = mutate(response.encode().unwrap(), &mutations);
        if let Ok(decoded) = Response::decode(&body) {
            prop_assert_eq!(Response::decode(&decoded.encode().unwrap()).unwrap(), decoded);
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic_the_frame_decoder(
        bytes in proptest::collection::vec(any::<u8>(), 0..2048),
        chunks in proptest::collection::vec(1..64usize, 1..8),
        limit in 0..4096usize,
    ) {
        let limits = Limits::default().with_frame_limit(limit);
        let (_, end) = run_decoder(limits, &bytes, &chunks);
        prop_assert!(end.is_some());
    }

    #[test]
    fn valid_frames_come_out_whole_however_the_stream_is_cut(
        bodies in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 0..8),
        chunks in proptest::collection::vec(1..200usize, 1..8),
    ) {
        let stream: Vec<u8> = bodies.iter().flat_map(|b| encode_frame(b).unwrap()).collect();
        let (got, end) = run_decoder(Limits::default(), &stream, &chunks);
        prop_assert_eq!(got, bodies);
        prop_assert!(matches!(end, Some(Error::Closed)));
    }

    #[test]
    fn mutated_frame_streams_decode_or_fail_cleanly(
        bodies in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..100), 1..5),
        mutations in proptest::collection::vec(mutation(), 1..4),
        chunks in proptest::collection::vec(1..50usize, 1..4),
    ) {
        let stream: Vec<u8> = bodies.iter().flat_map(|b| encode_frame(b).unwrap()).collect();
        let stream = mutate(stream, &mutations);
        let limits = Limits::default().with_frame_limit(1000);
        let (got, end) = run_decoder(limits, &stream, &chunks);
        // Every frame that came out is a prefix of the stream's frames as laid out.
        let mut at = 0;
        for body in &got {
            prop_assert!(stream.len() >= at + HEADER_LEN + body.len());
            prop_assert_eq!(&stream[at + HEADER_LEN..at + HEADER_LEN + body.len()], &body[..]);
            at += HEADER_LEN + body.len();
        }
        let end = end.unwrap();
        prop_assert!(
            matches!(
                end,
                Error::Closed | Error::Truncated { .. } | Error::Protocol { .. } | Error::FrameTooLarge { .. }
            ),
            "unexpected end {:?}",
            end
        );
    }

    #[test]
    fn message_frames_survive_the_whole_path(
        request in request(),
        chunks in proptest::collection::vec(1..100usize, 1..4),
    ) {
        let stream = encode_frame(&request.encode().unwrap()).unwrap();
        let (got, end) = run_decoder(Limits::default(), &stream, &chunks);
        prop_assert_eq!(got.len(), 1);
        prop_assert_eq!(Request::decode(&got[0]).unwrap(), request);
        prop_assert!(matches!(end, Some(Error::Closed)));
    }
}
