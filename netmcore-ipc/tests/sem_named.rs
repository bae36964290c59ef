//! POSIX named semaphores in one process: create, open, post, wait, try_wait, timeouts, value,
//! unlink, names and errors. Every test names its semaphores uniquely and checks that it left
//! nothing in `/dev/shm` (where `/NAME` is the file `sem.NAME`).

mod support;

use std::time::Duration;

use netmcore_ipc::Error;
use netmcore_ipc::sem::{self, NamedSemaphore};
use rustix::io::Errno;

/// A generous bound for waits that must succeed: it only keeps a broken test from hanging.
const NO_HANG: Duration = Duration::from_secs(30);

fn assert_gone(name: &str) {
    let file = format!("sem.{}", name.trim_start_matches('/'));
    let left: Vec<_> = support::shm_leftovers(&file)
        .into_iter()
        .filter(|n| *n == file)
        .collect();
    assert!(left.is_empty(), "left in /dev/shm: {left:?}");
}

fn os_errno(err: &Error) -> Option<i32> {
    match err {
        Error::Os { source, .. } => source.raw_os_error(),
        _ => None,
    }
}

#[test]
fn create_post_wait_value_unlink() {
    let name = support::unique_name("sem");
    let sem = NamedSemaphore::create(&name, 2).expect("create");
    assert_eq!(sem.name(), name);
    assert!(std::path::Path::new(&format!("/dev/shm/sem.{}", &name[1..])).exists());
    assert_eq!(sem.value().expect("value"), 2);
    sem.wait().expect("wait");
    assert!(sem.try_wait().expect("try_wait"));
    assert!(!sem.try_wait().expect("try_wait at 0"));
    assert_eq!(sem.value().expect("value"), 0);
    sem.post().expect("post");
    sem.post().expect("post");
    assert_eq!(sem.value().expect("value"), 2);
    sem.wait_timeout(NO_HANG).expect("a token is there");
    assert_eq!(sem.value().expect("value"), 1);
    sem.unlink().expect("unlink");
    assert_gone(&name);
    // The open handle outlives the name.
    sem.post().expect("post after unlink");
    assert_eq!(sem.value().expect("value"), 2);
}

#[test]
fn open_shares_the_semaphore() {
    let name = support::unique_name("sem-open");
    let a = NamedSemaphore::create(&name, 0).expect("create");
    let b = NamedSemaphore::open(&name).expect("open");
    assert_eq!(b.name(), name);
    b.post().expect("post through b");
    assert_eq!(a.value().expect("value"), 1);
    a.wait().expect("wait through a");
    assert_eq!(b.value().expect("value"), 0);
    sem::unlink(&name).expect("unlink");
    assert_gone(&name);
    let err = NamedSemaphore::open(&name).unwrap_err();
    assert!(matches!(err, Error::Os { op: "sem_open", .. }), "{err:?}");
    assert_eq!(os_errno(&err), Some(Errno::NOENT.raw_os_error()), "{err}");
}

#[test]
fn exclusive_create_twice_fails_with_eexist() {
    let name = support::unique_name("sem-excl");
    let sem = NamedSemaphore::create(&name, 0).expect("create");
    let err = NamedSemaphore::create(&name, 5).unwrap_err();
    assert_eq!(os_errno(&err), Some(Errno::EXIST.raw_os_error()), "{err}");
    let text = err.to_string();
    assert!(
        text.starts_with(&format!("sem_open {name}: ")) && text.contains("File exists"),
        "{text}"
    );
    assert_eq!(
        sem.value().expect("value"),
        0,
        "the existing semaphore is untouched"
    );
    sem.unlink().expect("unlink");
    assert_gone(&name);
    let err = sem::unlink(&name).unwrap_err();
    assert!(
        err.to_string().starts_with(&format!("sem_unlink {name}: ")),
        "{err}"
    );
}

#[test]
fn wait_timeout_on_zero_times_out() {
    let name = support::unique_name("sem-timeout");
    let sem = NamedSemaphore::create(&name, 0).expect("create");
    let err = sem.wait_timeout(Duration::from_millis(5)).unwrap_err();
    match &err {
        Error::Timeout { op, target } => {
            assert_eq!((*op, target.as_str()), ("sem_timedwait", name.as_str()))
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(err.to_string(), format!("sem_timedwait {name}: timed out"));
    assert!(matches!(
        sem.wait_timeout(Duration::ZERO),
        Err(Error::Timeout { .. })
    ));
    sem.unlink().expect("unlink");
    assert_gone(&name);
}

#[test]
fn a_post_from_another_thread_wakes_a_waiter() {
    let name = support::unique_name("sem-thread");
    let sem = NamedSemaphore::create(&name, 0).expect("create");
    sem.unlink().expect("unlink");
    std::thread::scope(|s| {
        let waiter = s.spawn(|| sem.wait_timeout(NO_HANG));
        sem.post().expect("post");
        waiter.join().expect("waiter").expect("woken");
    });
    assert_eq!(sem.value().expect("value"), 0);
    assert_gone(&name);
}

#[test]
fn values_beyond_the_maximum_are_refused() {
    let name = support::unique_name("sem-max");
    let err = NamedSemaphore::create(&name, sem::MAX_VALUE + 1).unwrap_err();
    assert_eq!(os_errno(&err), Some(Errno::INVAL.raw_os_error()), "{err}");
    assert_gone(&name);
    let sem = NamedSemaphore::create(&name, sem::MAX_VALUE).expect("create at the maximum");
    sem.unlink().expect("unlink");
    let err = sem.post().unwrap_err();
    assert!(matches!(err, Error::Os { op: "sem_post", .. }), "{err:?}");
    assert_eq!(
        os_errno(&err),
        Some(Errno::OVERFLOW.raw_os_error()),
        "{err}"
    );
    assert_gone(&name);
}

#[test]
fn unique_names_and_invalid_names() {
    let prefix = format!("{}-", support::unique_name("sem-unique"));
    let sem = NamedSemaphore::create_unique(&prefix, 3).expect("create_unique");
    assert!(sem.name().starts_with(&prefix) && sem.name().len() == prefix.len() + 16);
    assert_eq!(sem.value().expect("value"), 3);
    sem.unlink().expect("unlink");
    assert_gone(sem.name());

    for name in ["relative", "/", "/a/b", "/a\0b", "/.."] {
        assert!(
            matches!(
                NamedSemaphore::create(name, 0),
                Err(Error::InvalidName { .. })
            ),
            "{name:?}"
        );
        assert!(
            matches!(NamedSemaphore::open(name), Err(Error::InvalidName { .. })),
            "{name:?}"
        );
        assert!(
            matches!(sem::unlink(name), Err(Error::InvalidName { .. })),
            "{name:?}"
        );
    }
    // 251 bytes are accepted, 252 are not (the kernel's file is `sem.` + the name).
    let longest = format!("{}-{}", support::unique_name("sem-long"), "x".repeat(200));
    let longest = format!("{longest}{}", "y".repeat(251 - longest.len()));
    let sem = NamedSemaphore::create(&longest, 0).expect("251 bytes");
    sem.unlink().expect("unlink");
    assert_gone(&longest);
    let too_long = format!("{longest}z");
    match NamedSemaphore::create(&too_long, 0) {
        Err(Error::InvalidName { reason, .. }) => assert!(reason.contains("251"), "{reason}"),
        other => panic!("{other:?}"),
    }
}
