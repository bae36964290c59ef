//! The ledger file: round trips of awkward names, permissions, replay semantics, truncation and
//! malformed contents.

use std::ffi::OsString;
use std::fs;
use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use netmcore_resources::ledger::{
    self, LEDGER_FILE_NAME, Ledger, LedgerError, LedgerObject, ObjectKind, Record,
};

const HEADER: &str = "netmcore-ledger 1\n";

fn name(bytes: &[u8]) -> OsString {
    OsString::from_vec(bytes.to_vec())
}

fn mode_of(path: &Path) -> u32 {
    fs::metadata(path)
        .expect("stat the ledger")
        .permissions()
        .mode()
        & 0o7777
}

fn write_ledger(dir: &Path, contents: &[u8]) {
    let path = dir.join(LEDGER_FILE_NAME);
    fs::write(&path, contents).expect("write a ledger by hand");
    fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).expect("chmod the ledger");
}

#[test]
fn awkward_names_round_trip() {
    let dir = tempfile::tempdir().expect("temp dir");
    let names: Vec<&[u8]> = vec![
        b"/with space",
        b"/quotes\"and'",
        b"/per%cent%20literal",
        b"/new\nline",
        b"/tab\there",
        b"/ctrl\x01\x1b\x7f\x00nul",
        "/ünïcødé ✓ 名前".as_bytes(),
        b"/invalid\xff\xfe\x80utf8",
        b" ",
        b"%",
    ];
    let objects: Vec<LedgerObject> = ObjectKind::ALL
        .into_iter()
        .flat_map(|kind| {
            names
                .iter()
                .map(move |bytes| LedgerObject::new(kind, name(bytes)))
        })
        .collect();

    let mut ledger = Ledger::open(dir.path()).expect("open");
    for object in &objects {
        ledger.registered(object).expect("register");
    }
    assert_eq!(ledger.live().expect("live"), objects);
    assert_eq!(ledger::replay_dir(dir.path()).expect("replay_dir"), objects);
    assert_eq!(ledger::replay(ledger.path()).expect("replay"), objects);

    // One line per record plus the header, all of it printable ASCII.
    let text = fs::read(ledger.path()).expect("read the file");
    assert_eq!(
        text.iter().filter(|&&byte| byte == b'\n').count(),
        objects.len() + 1
    );
    assert!(
        text.iter()
            .all(|&byte| byte == b'\n' || (0x20..=0x7E).contains(&byte))
    );
    assert!(text.starts_with(HEADER.as_bytes()));

    let records = ledger::read_records(ledger.path()).expect("records");
    let expected: Vec<Record> = objects.iter().cloned().map(Record::Registered).collect();
    assert_eq!(records, expected);

    for object in &objects {
        ledger.destroyed(object).expect("destroy");
    }
    assert_eq!(ledger.live().expect("live"), []);
}

#[test]
fn constructors_and_accessors_agree() {
    let file = LedgerObject::file("/tmp/a b");
    assert_eq!(file.kind(), ObjectKind::File);
    assert_eq!(file.path(), Path::new("/tmp/a b"));
    assert_eq!(file.to_string(), "file /tmp/a b");
    assert_eq!(LedgerObject::shm("/m").kind(), ObjectKind::Shm);
    assert_eq!(LedgerObject::sem("/s").name(), "/s");
    assert_eq!(LedgerObject::sem("/s").into_name(), OsString::from("/s"));
    assert_ne!(LedgerObject::file("/a"), LedgerObject::shm("/a"));
}

#[test]
fn new_ledger_has_mode_0600_and_a_header() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ledger = Ledger::open(dir.path()).expect("open");
    assert_eq!(ledger.path(), dir.path().join(LEDGER_FILE_NAME));
    assert_eq!(mode_of(ledger.path()), 0o600);
    assert_eq!(fs::read(ledger.path()).expect("read"), HEADER.as_bytes());
    drop(ledger);

    // Reopening keeps the contents and does not write a second header.
    let mut ledger = Ledger::open(dir.path()).expect("reopen");
    ledger
        .registered(&LedgerObject::shm("/x"))
        .expect("register");
    let reopened = Ledger::open(dir.path()).expect("reopen again");
    assert_eq!(reopened.live().expect("live"), [LedgerObject::shm("/x")]);
    assert_eq!(
        fs::read(ledger.path()).expect("read"),
        format!("{HEADER}R shm /x\n").as_bytes()
    );
}

#[test]
fn readable_by_others_is_tightened_to_0600() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join(LEDGER_FILE_NAME);
    fs::write(&path, format!("{HEADER}R sem /s\n")).expect("write");
    fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).expect("chmod");

    // Reading does not change anything.
    assert_eq!(
        ledger::replay_dir(dir.path()).expect("replay"),
        [LedgerObject::sem("/s")]
    );
    assert_eq!(mode_of(&path), 0o644);

    let ledger = Ledger::open(dir.path()).expect("open");
    assert_eq!(mode_of(&path), 0o600);
    assert_eq!(ledger.live().expect("live"), [LedgerObject::sem("/s")]);
}

#[test]
fn writable_by_others_is_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join(LEDGER_FILE_NAME);
    let contents = format!("{HEADER}R file /home/someone/precious\n");
    fs::write(&path, &contents).expect("write");
    for mode in [0o666, 0o620, 0o602] {
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).expect("chmod");
        let err = Ledger::open(dir.path()).expect_err("open must refuse");
        assert!(
            matches!(&err, LedgerError::InsecureMode { path: p, mode: m } if *p == path && *m == mode),
            "{err:?}"
        );
        assert!(err.to_string().starts_with("open ledger "), "{err}");
        assert!(
            err.to_string().contains("writable by group or others"),
            "{err}"
        );
        let err = ledger::replay_dir(dir.path()).expect_err("replay must refuse");
        assert!(matches!(err, LedgerError::InsecureMode { .. }), "{err:?}");
        // Nothing was written and the mode was left for an administrator to see.
        assert_eq!(fs::read_to_string(&path).expect("read"), contents);
        assert_eq!(mode_of(&path), mode);
    }
}

#[test]
fn non_regular_files_are_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let elsewhere = dir.path().join("elsewhere");
    fs::write(&elsewhere, HEADER).expect("write");
    std::os::unix::fs::symlink(&elsewhere, dir.path().join(LEDGER_FILE_NAME)).expect("symlink");
    let err = Ledger::open(dir.path()).expect_err("a symlink");
    assert!(matches!(err, LedgerError::NotAFile { .. }), "{err:?}");
    let err = ledger::replay_dir(dir.path()).expect_err("a symlink");
    assert!(matches!(err, LedgerError::NotAFile { .. }), "{err:?}");
    assert_eq!(fs::read_to_string(&elsewhere).expect("read"), HEADER);

    let dir = tempfile::tempdir().expect("temp dir");
    fs::create_dir(dir.path().join(LEDGER_FILE_NAME)).expect("mkdir");
    let err = Ledger::open(dir.path()).expect_err("a directory");
    assert!(matches!(err, LedgerError::NotAFile { .. }), "{err:?}");
    let err = ledger::replay(dir.path().join(LEDGER_FILE_NAME)).expect_err("a directory");
    assert!(matches!(err, LedgerError::NotAFile { .. }), "{err:?}");
}

#[test]
fn replay_has_set_semantics_in_registration_order() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut ledger = Ledger::open(dir.path()).expect("open");
    let [a, b, c, d] = ["/a", "/b", "/c", "/d"].map(LedgerObject::shm);
    let a_file = LedgerObject::file("/a");

    ledger.registered(&a).expect("R a");
    ledger.registered(&a).expect("R a again");
    ledger.registered(&a_file).expect("R file a");
    ledger.destroyed(&a).expect("U a");
    ledger.destroyed(&b).expect("U b, never registered");
    ledger.registered(&c).expect("R c");
    ledger.registered(&d).expect("R d");
    ledger.append(&Record::Destroyed(c.clone())).expect("U c");
    ledger
        .append(&Record::Registered(c.clone()))
        .expect("R c again");
    ledger.registered(&d).expect("R d again keeps its place");

    let expected = [a_file, d, c];
    assert_eq!(ledger.live().expect("live"), expected);
    assert_eq!(ledger::replay_dir(dir.path()).expect("replay"), expected);
    assert_eq!(ledger.records().expect("records").len(), 10);
}

#[test]
fn truncate_empties_the_ledger() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut ledger = Ledger::open(dir.path()).expect("open");
    for index in 0..5 {
        ledger
            .registered(&LedgerObject::sem(format!("/s{index}")))
            .expect("register");
    }
    assert_eq!(ledger.live().expect("live").len(), 5);
    ledger.truncate().expect("truncate");
    assert_eq!(ledger.live().expect("live"), []);
    assert_eq!(ledger::replay_dir(dir.path()).expect("replay"), []);
    assert_eq!(fs::read(ledger.path()).expect("read"), HEADER.as_bytes());
    assert_eq!(mode_of(ledger.path()), 0o600);

    // Appending after a truncate goes to the new end.
    ledger
        .registered(&LedgerObject::shm("/after"))
        .expect("register");
    assert_eq!(ledger.live().expect("live"), [LedgerObject::shm("/after")]);
    assert_eq!(
        fs::read(ledger.path()).expect("read"),
        format!("{HEADER}R shm /after\n").as_bytes()
    );
}

#[test]
fn an_emptied_file_is_an_empty_ledger_and_gets_its_header_back() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut ledger = Ledger::open(dir.path()).expect("open");
    ledger
        .registered(&LedgerObject::shm("/gone"))
        .expect("register");
    fs::write(ledger.path(), b"").expect("empty it by hand");
    assert_eq!(ledger.live().expect("live"), []);
    assert_eq!(ledger::replay_dir(dir.path()).expect("replay"), []);
    ledger
        .registered(&LedgerObject::shm("/new"))
        .expect("register");
    assert_eq!(
        fs::read(ledger.path()).expect("read"),
        format!("{HEADER}R shm /new\n").as_bytes()
    );
}

#[test]
fn replay_of_a_missing_ledger_is_empty() {
    let dir = tempfile::tempdir().expect("temp dir");
    assert_eq!(ledger::replay_dir(dir.path()).expect("replay_dir"), []);
    // Reading never creates the file.
    assert!(!dir.path().join(LEDGER_FILE_NAME).exists());

    let err = ledger::replay(dir.path().join(LEDGER_FILE_NAME)).expect_err("an explicit path");
    assert!(
        matches!(&err, LedgerError::Io { op: "open", source, .. } if source.kind() == std::io::ErrorKind::NotFound),
        "{err:?}"
    );
}

#[test]
fn io_errors_name_the_operation_and_the_path() {
    let dir = tempfile::tempdir().expect("temp dir");
    let missing = dir.path().join("no-such-dir");
    let err = Ledger::open(&missing).expect_err("no directory");
    assert!(matches!(err, LedgerError::Io { op: "open", .. }), "{err:?}");
    let expected = format!("open ledger {}: ", missing.join(LEDGER_FILE_NAME).display());
    assert!(err.to_string().starts_with(&expected), "{err}");
}

#[test]
fn empty_names_are_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut ledger = Ledger::open(dir.path()).expect("open");
    let err = ledger
        .registered(&LedgerObject::shm(""))
        .expect_err("empty name");
    assert!(
        matches!(
            err,
            LedgerError::EmptyName {
                kind: ObjectKind::Shm,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().ends_with(": empty shm name"), "{err}");
    let err = ledger
        .destroyed(&LedgerObject::file(""))
        .expect_err("empty name");
    assert!(
        matches!(
            err,
            LedgerError::EmptyName {
                kind: ObjectKind::File,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(fs::read(ledger.path()).expect("read"), HEADER.as_bytes());
}

#[test]
fn malformed_lines_name_the_line() {
    let cases: &[(&[u8], usize, &str)] = &[
        (b"hello\n", 1, "invalid header"),
        (b"R shm /a\n", 1, "invalid header"),
        (
            b"netmcore-ledger 2\nR shm /a\n",
            1,
            "unsupported ledger version `2`",
        ),
        (b"netmcore-ledger\n", 1, "invalid header"),
        (b"netmcore-ledger 1", 1, "no newline"),
        (
            b"netmcore-ledger 1\nR shm /a\nX shm /b\n",
            3,
            "unknown record type `X`",
        ),
        (b"netmcore-ledger 1\nr shm /a\n", 2, "unknown record type"),
        (
            b"netmcore-ledger 1\nR pipe /a\n",
            2,
            "unknown object kind `pipe`",
        ),
        (b"netmcore-ledger 1\nR SHM /a\n", 2, "unknown object kind"),
        (b"netmcore-ledger 1\nR shm /a%2\n", 2, "bad escape"),
        (b"netmcore-ledger 1\nR shm /a%zz\n", 2, "bad escape"),
        (b"netmcore-ledger 1\nR shm\n", 2, "missing object name"),
        (b"netmcore-ledger 1\nR shm \n", 2, "missing object name"),
        (b"netmcore-ledger 1\nR\n", 2, "missing object kind"),
        (b"netmcore-ledger 1\nR  /a\n", 2, "missing object kind"),
        (b"netmcore-ledger 1\nR shm /a b\n", 2, "unexpected space"),
        (b"netmcore-ledger 1\nR shm /a \n", 2, "unexpected space"),
        (b"netmcore-ledger 1\nR shm /a\n\n", 3, "empty line"),
        (
            b"netmcore-ledger 1\nR shm /a\tb\n",
            2,
            "unescaped byte 0x09",
        ),
        (b"netmcore-ledger 1\nR shm /a\r\n", 2, "unescaped byte 0x0d"),
        (
            b"netmcore-ledger 1\nR shm /\xff\n",
            2,
            "unescaped byte 0xff",
        ),
        (
            b"netmcore-ledger 1\nR shm /a\nU shm /a\nR sem /b",
            4,
            "no newline",
        ),
    ];
    for &(contents, want_line, want_reason) in cases {
        let dir = tempfile::tempdir().expect("temp dir");
        write_ledger(dir.path(), contents);
        let path = dir.path().join(LEDGER_FILE_NAME);
        let shown = contents.escape_ascii();

        let err = ledger::replay_dir(dir.path()).expect_err("malformed");
        match &err {
            LedgerError::Malformed {
                path: p,
                line,
                reason,
            } => {
                assert_eq!(p, &path, "{shown}");
                assert_eq!(*line, want_line, "{shown}: {reason}");
                assert!(reason.contains(want_reason), "{shown}: {reason}");
            }
            other => panic!("{shown}: expected Malformed, got {other:?}"),
        }
        let message = err.to_string();
        let prefix = format!("ledger {}, line {want_line}: ", path.display());
        assert!(message.starts_with(&prefix), "{message}");

        // The writer refuses it too, and appends nothing to it.
        let err = Ledger::open(dir.path()).expect_err("open a malformed ledger");
        assert!(matches!(err, LedgerError::Malformed { line, .. } if line == want_line));
        assert_eq!(fs::read(&path).expect("read"), contents);
    }
}
