//! Multi-process tests of the admin socket: each case runs in a forked process of its own
//! (see `support::run_cases`), which becomes a master with `startup`; its first process, a
//! worker of the same user, plays the admin clients.

mod support;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use netmcore_encap::Encap;
use netmcore_ipc::channel::Channel;
use netmcore_ipc::wire::PROTOCOL_VERSION;
use netmcore_master::{
    ADMIN_MAX_CLIENTS, ADMIN_REQUEST_LIMIT, ADMIN_SOCKET_NAME, AdminStatus, Config, Error,
    admin_socket_path, admin_status, def_process, join, start, startup_with_result,
};
use netmcore_resources::registry::ProcessState;
use netmcore_resources::{Holder, ProcessId, ResourceDesc};
use support::{Case, run_cases, wait_for_file, write_file};

fn main() -> std::process::ExitCode {
    run_cases(&[
        Case {
            name: "status_reports_the_master_its_processes_and_resources",
            run: status_reports_the_master_its_processes_and_resources,
        },
        Case {
            name: "hostile_clients_are_dropped_and_the_master_keeps_serving",
            run: hostile_clients_are_dropped_and_the_master_keeps_serving,
        },
        Case {
            name: "connections_beyond_the_cap_are_refused",
            run: connections_beyond_the_cap_are_refused,
        },
        Case {
            name: "a_client_of_another_user_is_refused",
            run: a_client_of_another_user_is_refused,
        },
    ])
}

/// `Encap::wrap(value)`, which must succeed.
macro_rules! wrap {
    ($value:expr) => {
        Encap::wrap($value).expect("encodes")
    };
}

/// A private temporary directory, the socket directory in it, and a path for a stop file.
fn dirs() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let sock = dir.path().join("sock");
    let stop = dir.path().join("stop");
    (dir, sock, stop)
}

/// Runs a master on `sock` whose first process is `coordinator` (which returns the list of
/// what went wrong); asserts that the list is empty and that the admin socket is gone
/// afterwards.
fn run_coordinator(sock: &Path, coordinator: netmcore_resources::ResId) {
    let result = startup_with_result(Config::new(sock), || start(coordinator, wrap!(&())));
    let failures: Vec<String> = result
        .expect("startup")
        .expect("the coordinator returned")
        .unwrap()
        .expect("a list of failures");
    assert_eq!(failures, Vec::<String>::new());
    assert!(
        !admin_socket_path(sock).exists(),
        "the admin socket outlived its master"
    );
}

/// A process type whose workers wait until `stop` exists.
fn sleeper(stop: PathBuf) -> (netmcore_resources::ResId, netmcore_resources::ResId) {
    def_process(move |_| {
        wait_for_file(&stop);
        wrap!(&())
    })
    .expect("def_process")
}

/// A process type that echoes its argument.
fn echo() -> (netmcore_resources::ResId, netmcore_resources::ResId) {
    def_process(|arg| arg).expect("def_process")
}

/// Whether a start and a join through the echo type still work.
fn workers_still_served(
    echo: (netmcore_resources::ResId, netmcore_resources::ResId),
    n: u64,
) -> bool {
    let Ok(pid) = start(echo.0, wrap!(&n)) else {
        return false;
    };
    matches!(join(echo.1, pid), Ok(Some(r)) if r.unwrap::<u64>().ok() == Some(n))
}

/// Reads a connection to its end; the bytes read (an error counts as the end).
fn read_to_end(stream: &mut UnixStream) -> Vec<u8> {
    let mut bytes = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return bytes,
            Ok(n) => bytes.extend_from_slice(&buf[..n]),
        }
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn status_reports_the_master_its_processes_and_resources() {
    let (_dir, sock, stop) = dirs();
    let (sleeper_fp, sleeper_jp) = sleeper(stop.clone());
    let sock_for_worker = sock.clone();
    let (coordinator, coordinator_jp) = def_process(move |_| {
        let mut failures = Vec::new();
        let sleepers: Vec<ProcessId> = (0..2)
            .map(|_| start(sleeper_fp, wrap!(&())).expect("start"))
            .collect();
        match admin_status(&sock_for_worker) {
            Ok(status) => check_status(&status, &sleepers, (sleeper_fp, sleeper_jp), &mut failures),
            Err(e) => failures.push(format!("admin_status: {e}")),
        }
        write_file(&stop, "");
        for pid in sleepers {
            if !matches!(join(sleeper_jp, pid), Ok(Some(_))) {
                failures.push(format!("join {pid}"));
            }
        }
        wrap!(&failures)
    })
    .expect("def_process");
    let _ = coordinator_jp;
    assert!(admin_socket_path(&sock).ends_with(ADMIN_SOCKET_NAME));
    run_coordinator(&sock, coordinator);
}

/// What the coordinator (the first process, process 0) checks in the status it got.
fn check_status(
    status: &AdminStatus,
    sleepers: &[ProcessId],
    sleeper_type: (netmcore_resources::ResId, netmcore_resources::ResId),
    failures: &mut Vec<String>,
) {
    let master = rustix::process::getppid().map(|p| p.as_raw_pid().unsigned_abs());
    if Some(status.unix_pid) != master {
        failures.push(format!(
            "master pid {} instead of {master:?}",
            status.unix_pid
        ));
    }
    if status.shutting_down {
        failures.push("shutting down already".to_owned());
    }
    let me = std::process::id();
    let ids: Vec<ProcessId> = status.processes.iter().map(|p| p.id).collect();
    let mut expected = vec![ProcessId(0)];
    expected.extend_from_slice(sleepers);
    if ids != expected {
        failures.push(format!("processes {ids:?} instead of {expected:?}"));
    }
    for p in &status.processes {
        if p.state != ProcessState::Running || p.unix_pid.is_none() {
            failures.push(format!("{p:?} is not running with a unix pid"));
        }
        if p.id == ProcessId(0) && (p.unix_pid != Some(me) || p.started_by != Holder::Master) {
            failures.push(format!("the coordinator is reported as {p:?}"));
        }
        if sleepers.contains(&p.id)
            && (p.started_by != Holder::Process(ProcessId(0)) || p.join_point != sleeper_type.1)
        {
            failures.push(format!("a sleeper is reported as {p:?}"));
        }
    }
    let sleeper_fork_point = status.resources.iter().find(|r| r.id == sleeper_type.0);
    if !sleeper_fork_point.is_some_and(|r| {
        r.desc
            == ResourceDesc::ForkPoint {
                join_point: sleeper_type.1,
            }
            && r.users == [Holder::Master]
    }) {
        failures.push(format!(
            "the sleeper's fork point is reported as {sleeper_fork_point:?}"
        ));
    }
    // Two process types defined before startup: four points.
    if status.resources.len() != 4 {
        failures.push(format!("resources {:?}", status.resources));
    }
    let text = status.to_string();
    if !text.contains("processes: 3 (3 running)") {
        failures.push(format!("the report says {text}"));
    }
}

fn hostile_clients_are_dropped_and_the_master_keeps_serving() {
    let log = support::log::Lines::install();
    let (_dir, sock, _stop) = dirs();
    let echo = echo();
    let path = admin_socket_path(&sock);
    let sock_for_worker = sock.clone();
    let (coordinator, _) = def_process(move |_| {
        let mut failures = Vec::new();
        let mut fail = |what: String| failures.push(what);

        // A slow client that never finishes its request (half a header), and a silent one:
        // the master serves the workers meanwhile, then drops both.
        let mut slow = UnixStream::connect(&path).expect("connect");
        slow.write_all(&[0x4E, PROTOCOL_VERSION, 0, 0])
            .expect("half a header");
        let mut silent = UnixStream::connect(&path).expect("connect");
        if !workers_still_served(echo, 1) {
            fail("a worker start and join while slow clients wait".to_owned());
        }
        if let Err(e) = admin_status(&sock_for_worker) {
            fail(format!("status while slow clients wait: {e}"));
        }

        // Garbage: an error reply, then the end.
        let mut garbage = UnixStream::connect(&path).expect("connect");
        garbage
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .expect("write");
        let reply = read_to_end(&mut garbage);
        if !contains(&reply, b"netmcore-admin 1 error malformed request") {
            fail(format!("garbage got {:?}", String::from_utf8_lossy(&reply)));
        }

        // A well-framed request that is not one: an error reply naming it.
        let mut channel = Channel::connect(&path).expect("connect");
        channel.send(b"netmcore-admin 1 shutdown").expect("send");
        match channel.recv() {
            Ok(frame)
                if frame
                    .body()
                    .starts_with(b"netmcore-admin 1 error unknown command") => {}
            other => fail(format!("an unknown command got {other:?}")),
        }

        // A header that announces 1 GiB, then bytes: refused without reading them.
        let mut huge = UnixStream::connect(&path).expect("connect");
        let mut header = vec![0x4E, PROTOCOL_VERSION, 0, 0];
        header.extend_from_slice(&(1u32 << 30).to_le_bytes());
        huge.write_all(&header).expect("write");
        let _ = huge.write_all(&[b'x'; 1000]);
        let reply = read_to_end(&mut huge);
        if !contains(&reply, b"exceeds the limit of 4096 bytes") {
            fail(format!(
                "an oversize header got {:?}",
                String::from_utf8_lossy(&reply)
            ));
        }

        // A body just over the limit, and a large one (which the channel sends in a
        // memfd): refused too.
        for len in [ADMIN_REQUEST_LIMIT + 1, 1 << 20] {
            let mut big = Channel::connect(&path).expect("connect");
            let body = vec![b'x'; len];
            // The master may refuse it before it is all sent: its reply counts.
            let _ = big.send(&body);
            match big.recv() {
                Ok(frame) if contains(frame.body(), b"exceeds the limit of 4096 bytes") => {}
                other => fail(format!("a request of {len} bytes got {other:?}")),
            }
        }

        // The slow and the silent client are dropped at their deadline: they see the end.
        if !read_to_end(&mut slow).is_empty() {
            fail("the slow client got a reply".to_owned());
        }
        if !read_to_end(&mut silent).is_empty() {
            fail("the silent client got a reply".to_owned());
        }

        // The master is unaffected: workers and admin clients are still served.
        if !workers_still_served(echo, 2) {
            fail("a worker start and join after the hostile clients".to_owned());
        }
        match admin_status(&sock_for_worker) {
            Ok(status) if status.processes.len() == 1 => {}
            other => fail(format!("status after the hostile clients: {other:?}")),
        }
        wrap!(&failures)
    })
    .expect("def_process");
    run_coordinator(&sock, coordinator);
    assert!(
        log.contains("sent no complete request within"),
        "{:?}",
        log.get()
    );
    assert!(
        log.contains("admin socket: refused a request of"),
        "{:?}",
        log.get()
    );
}

fn connections_beyond_the_cap_are_refused() {
    let (_dir, sock, _stop) = dirs();
    let echo = echo();
    let path = admin_socket_path(&sock);
    let sock_for_worker = sock.clone();
    let (coordinator, _) = def_process(move |_| {
        let mut failures = Vec::new();
        let idle: Vec<UnixStream> = (0..ADMIN_MAX_CLIENTS)
            .map(|_| UnixStream::connect(&path).expect("connect"))
            .collect();
        // The master has taken them all once it served this start and join (connections
        // are accepted in order).
        if !workers_still_served(echo, 1) {
            failures.push("a worker start and join with the admin socket full".to_owned());
        }
        match admin_status(&sock_for_worker) {
            Err(Error::InMaster { message, .. }) if message.starts_with("busy") => {}
            other => failures.push(format!("a client beyond the cap got {other:?}")),
        }
        // Once the idle clients left (and the master noticed: it serves a start and a
        // join after their ends were closed), it serves admin clients again.
        drop(idle);
        if !workers_still_served(echo, 2) {
            failures.push("a worker start and join after the idle clients left".to_owned());
        }
        match admin_status(&sock_for_worker) {
            Ok(_) => {}
            Err(e) => failures.push(format!("status after the idle clients left: {e}")),
        }
        wrap!(&failures)
    })
    .expect("def_process");
    run_coordinator(&sock, coordinator);
}

/// The uid and gid of `nobody`.
const NOBODY: u32 = 65534;

fn a_client_of_another_user_is_refused() {
    if !rustix::process::geteuid().is_root() {
        println!("skipped a_client_of_another_user_is_refused: it needs root to become nobody");
        return;
    }
    let log = support::log::Lines::install();
    let (_dir, sock, _stop) = dirs();
    let echo = echo();
    let path = admin_socket_path(&sock);
    let (intruder, intruder_jp) = def_process(move |_| wrap!(&intrude(&path))).expect("def");
    let sock_for_worker = sock.clone();
    let (coordinator, _) = def_process(move |_| {
        let mut failures: Vec<String> = Vec::new();
        let pid = start(intruder, wrap!(&())).expect("start");
        match join(intruder_jp, pid) {
            Ok(Some(result)) => failures.extend(result.unwrap::<Vec<String>>().expect("a list")),
            other => failures.push(format!("the intruder ended with {other:?}")),
        }
        if !workers_still_served(echo, 3) {
            failures.push("a worker start and join after the intruder".to_owned());
        }
        if let Err(e) = admin_status(&sock_for_worker) {
            failures.push(format!("status after the intruder: {e}"));
        }
        wrap!(&failures)
    })
    .expect("def_process");
    run_coordinator(&sock, coordinator);
    assert!(
        log.contains("admin socket: refused a client of uid 65534"),
        "{:?}",
        log.get()
    );
}

/// In a worker running as root: becomes `nobody`, and checks that the admin socket refuses
/// it twice — by its file mode, and, with the file permission check bypassed (the
/// capability `CAP_DAC_OVERRIDE` kept), by its peer credentials. Returns what went wrong.
fn intrude(path: &Path) -> Vec<String> {
    use rustix::process::{Gid, Uid};
    use rustix::thread;
    let mut failures = Vec::new();
    let nobody_gid = Gid::from_raw(NOBODY);
    let nobody_uid = Uid::from_raw(NOBODY);
    thread::set_keep_capabilities(true).expect("PR_SET_KEEPCAPS");
    thread::set_thread_res_gid(nobody_gid, nobody_gid, nobody_gid).expect("setresgid");
    thread::set_thread_res_uid(nobody_uid, nobody_uid, nobody_uid).expect("setresuid");
    // Without capabilities, the socket's mode (0600, root's) refuses nobody.
    match Channel::connect(path) {
        Err(netmcore_ipc::Error::Os { source, .. })
            if source.kind() == std::io::ErrorKind::PermissionDenied => {}
        other => failures.push(format!("nobody without capabilities: {other:?}")),
    }
    // With the kept capabilities made effective, the file checks pass; SO_PEERCRED still
    // says nobody, and the master closes the connection without a word.
    let mut caps = thread::capabilities(None).expect("capget");
    caps.effective = caps.permitted;
    thread::set_capabilities(None, caps).expect("capset");
    match Channel::connect(path) {
        Ok(mut channel) => {
            let sent = channel.send(b"netmcore-admin 1 status");
            match (sent, channel.recv()) {
                (_, Err(netmcore_ipc::Error::Closed)) | (Err(netmcore_ipc::Error::Closed), _) => {}
                other => failures.push(format!("nobody with capabilities got {other:?}")),
            }
        }
        Err(e) => failures.push(format!("nobody with capabilities cannot connect: {e}")),
    }
    failures
}
