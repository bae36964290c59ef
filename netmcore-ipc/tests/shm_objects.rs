//! Shared memory objects in one process: create, open, size, map, unlink, names and errors,
//! and the views of a mapping. Every test names its objects uniquely and checks that it left
//! nothing in `/dev/shm`.

mod support;

use std::sync::atomic::Ordering;

use netmcore_ipc::Error;
use netmcore_ipc::shm::{self, MapOptions, ShmObject};
use rustix::io::Errno;

/// Asserts that no object of exactly this name is left in `/dev/shm`.
fn assert_gone(name: &str) {
    let file = name.trim_start_matches('/');
    let left: Vec<_> = support::shm_leftovers(file)
        .into_iter()
        .filter(|n| n == file)
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
fn create_size_map_open_unlink() {
    let name = support::unique_name("shm");
    let shm = ShmObject::create(&name).expect("create");
    assert_eq!(shm.name(), name);
    assert_eq!(shm.size().expect("size"), 0);
    shm.set_size(3 * 4096).expect("set_size");
    assert_eq!(shm.size().expect("size"), 3 * 4096);

    let mapping = shm.map().expect("map");
    assert_eq!(mapping.len(), 3 * 4096);
    assert!(!mapping.is_empty());
    let words = mapping.as_atomic_u64s().expect("page-aligned");
    assert_eq!(words.len(), 3 * 512);
    assert!(
        words.iter().all(|w| w.load(Ordering::Relaxed) == 0),
        "fresh memory is zero"
    );
    words[100].store(0xfeed, Ordering::Relaxed);

    let opened = ShmObject::open(&name).expect("open");
    assert_eq!(opened.size().expect("size"), 3 * 4096);
    let other = opened
        .map_with(MapOptions::new().populate(true))
        .expect("map populated");
    assert_eq!(
        other.as_atomic_u64s().expect("aligned")[100].load(Ordering::Relaxed),
        0xfeed
    );

    shm.unlink().expect("unlink");
    assert_gone(&name);
    // The mappings outlive the name.
    words[101].store(1, Ordering::Relaxed);
    assert_eq!(
        other.as_atomic_u64s().expect("aligned")[101].load(Ordering::Relaxed),
        1
    );
    let err = ShmObject::open(&name).unwrap_err();
    assert_eq!(os_errno(&err), Some(Errno::NOENT.raw_os_error()), "{err}");
}

#[test]
fn exclusive_create_of_an_existing_name_fails_with_eexist() {
    let name = support::unique_name("shm-excl");
    let shm = ShmObject::create(&name).expect("create");
    let err = ShmObject::create(&name).unwrap_err();
    assert!(matches!(err, Error::Os { op: "shm_open", .. }), "{err:?}");
    assert_eq!(os_errno(&err), Some(Errno::EXIST.raw_os_error()), "{err}");
    let text = err.to_string();
    assert!(text.starts_with(&format!("shm_open {name}: ")), "{text}");
    assert!(text.contains("File exists"), "{text}");
    shm::unlink(shm.name()).expect("unlink");
    assert_gone(&name);
    let err = shm::unlink(&name).unwrap_err();
    assert!(
        err.to_string().starts_with(&format!("shm_unlink {name}: ")),
        "{err}"
    );
}

#[test]
fn created_objects_are_private_to_the_user() {
    let name = support::unique_name("shm-mode");
    let shm = ShmObject::create(&name).expect("create");
    let meta = std::fs::metadata(format!("/dev/shm{name}")).expect("the object is a file");
    shm.unlink().expect("unlink");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        meta.permissions().mode() & 0o077,
        0,
        "no access for group or others"
    );
    assert_gone(&name);
}

#[test]
fn unique_names_carry_the_prefix_and_differ() {
    let prefix = format!("{}-", support::unique_name("shm-unique"));
    let a = ShmObject::create_unique(&prefix).expect("create a");
    let b = ShmObject::create_unique(&prefix).expect("create b");
    assert!(a.name().starts_with(&prefix) && b.name().starts_with(&prefix));
    assert_eq!(a.name().len(), prefix.len() + 16);
    assert_ne!(a.name(), b.name());
    a.unlink().expect("unlink a");
    b.unlink().expect("unlink b");
    assert!(support::shm_leftovers(prefix.trim_start_matches('/')).is_empty());

    let lib = shm::library_name("data");
    assert!(
        lib.starts_with(&format!("/netmcore-{}-", std::process::id())),
        "{lib}"
    );
    shm::validate_name(&lib).expect("a valid name");
}

#[test]
fn invalid_names_are_refused_before_any_call() {
    let cases = [
        ("no-slash", "must start with '/'"),
        ("/", "must have at least one character after the '/'"),
        ("/a/b", "must not contain '/' after the leading one"),
        ("/a\0b", "must not contain NUL"),
        ("/.", "must not be '/.' or '/..'"),
    ];
    for (name, want) in cases {
        for result in [
            ShmObject::create(name).map(drop),
            ShmObject::open(name).map(drop),
            shm::unlink(name),
        ] {
            match result {
                Err(Error::InvalidName { name: got, reason }) => {
                    assert_eq!((got.as_str(), reason), (name, want));
                }
                other => panic!("{name:?}: {other:?}"),
            }
        }
    }
    let long = format!("/{}", "x".repeat(255));
    assert!(matches!(
        ShmObject::create(&long),
        Err(Error::InvalidName { .. })
    ));
    assert!(matches!(
        ShmObject::create_unique("relative-"),
        Err(Error::InvalidName { .. })
    ));
    let long_prefix = format!("/{}", "x".repeat(240));
    assert!(matches!(
        ShmObject::create_unique(&long_prefix),
        Err(Error::InvalidName { .. })
    ));
}

#[test]
fn shared_memory_handles_are_copies_of_one_mapping() {
    let name = support::unique_name("shm-shared");
    let shm = ShmObject::create(&name).expect("create");
    shm.set_size(4096).expect("set_size");
    let memory = shm.map_shared().expect("map");
    shm.unlink().expect("unlink");
    assert_gone(&name);

    let copy = memory;
    let from_thread = std::thread::spawn(move || {
        copy.as_atomic_u32s().expect("aligned")[3].store(33, Ordering::Release);
        copy.len()
    })
    .join()
    .expect("thread");
    assert_eq!(from_thread, 4096);
    assert_eq!(
        memory.as_atomic_u32s().expect("aligned")[3].load(Ordering::Acquire),
        33
    );
    assert_eq!(memory.as_atomic_u8s().len(), 4096);
    assert_eq!(memory.as_ptr(), copy.as_ptr());
    let word = memory.atomic_u32_at(12).expect("aligned word");
    assert_eq!(word.load(Ordering::Relaxed), 33);
    assert!(memory.atomic_u32_at(13).is_none(), "misaligned");
    assert!(memory.atomic_u64_at(4092).is_none(), "does not fit");
    let sub = memory.subrange(8, 8).expect("inside");
    assert_eq!(
        sub.as_atomic_u32s().expect("aligned")[1].load(Ordering::Relaxed),
        33
    );
    assert!(
        memory
            .subrange(4, 8)
            .expect("inside")
            .as_atomic_u64s()
            .is_none(),
        "misaligned"
    );
}

#[test]
fn an_empty_object_maps_to_an_empty_region() {
    let name = support::unique_name("shm-empty");
    let shm = ShmObject::create(&name).expect("create");
    let mapping = shm.map().expect("map");
    shm.unlink().expect("unlink");
    assert!(mapping.is_empty());
    assert_eq!(mapping.as_atomic_u64s().map(<[_]>::len), Some(0));
    assert_gone(&name);
}

#[test]
fn a_descriptor_can_be_taken_out() {
    use std::os::fd::{AsFd, OwnedFd};
    let name = support::unique_name("shm-fd");
    let shm = ShmObject::create(&name).expect("create");
    shm.set_size(10).expect("set_size");
    let _borrowed = shm.as_fd();
    shm.unlink().expect("unlink");
    let fd: OwnedFd = shm.into();
    let file = std::fs::File::from(fd);
    assert_eq!(file.metadata().expect("fstat").len(), 10);
    assert_gone(&name);
}
