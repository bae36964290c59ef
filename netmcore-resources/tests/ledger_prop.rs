//! Property tests of the ledger: arbitrary file contents never panic, and replay agrees with a
//! simple model of the live set.

use std::ffi::OsString;
use std::fs;
use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::PermissionsExt;

use netmcore_resources::ledger::{self, LEDGER_FILE_NAME, Ledger, LedgerObject, ObjectKind};
use proptest::prelude::*;

/// A small pool of names, some of them awkward, so that random sequences hit the same objects.
const NAMES: [&[u8]; 4] = [b"/a", b"/b c", b"/%41\n", b"/\xc3\xbc\xff"];

fn object(kind: usize, name: usize) -> LedgerObject {
    LedgerObject::new(
        ObjectKind::ALL[kind],
        OsString::from_vec(NAMES[name].to_vec()),
    )
}

/// The reference model: a list of live objects in order of registration.
#[derive(Default)]
struct Model {
    live: Vec<LedgerObject>,
}

impl Model {
    fn registered(&mut self, object: &LedgerObject) {
        if !self.live.contains(object) {
            self.live.push(object.clone());
        }
    }

    fn destroyed(&mut self, object: &LedgerObject) {
        self.live.retain(|live| live != object);
    }
}

#[derive(Debug, Clone)]
enum Op {
    Register(usize, usize),
    Destroy(usize, usize),
    Truncate,
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    let kind = 0..ObjectKind::ALL.len();
    let name = 0..NAMES.len();
    prop_oneof![
        8 => (kind.clone(), name.clone()).prop_map(|(k, n)| Op::Register(k, n)),
        8 => (kind, name).prop_map(|(k, n)| Op::Destroy(k, n)),
        1 => Just(Op::Truncate),
        1 => Just(Op::Reopen),
    ]
}

/// Cases per property: `PROPTEST_CASES` when set (`cargo xtask prop` sets it), else `default`.
fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases(64)))]

    #[test]
    fn arbitrary_bytes_never_panic(
        contents in prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..300),
            // Start with a valid header so that the record parser gets exercised too.
            proptest::collection::vec(any::<u8>(), 0..300).prop_map(|mut body| {
                let mut contents = b"netmcore-ledger 1\n".to_vec();
                contents.append(&mut body);
                contents
            }),
        ]
    ) {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join(LEDGER_FILE_NAME);
        fs::write(&path, &contents).expect("write");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).expect("chmod");
        let replayed = ledger::replay_dir(dir.path());
        let records = ledger::read_records(&path);
        prop_assert_eq!(replayed.is_ok(), records.is_ok());
        // Opening for writing either refuses exactly what replay refused or accepts it.
        let opened = Ledger::open(dir.path());
        prop_assert_eq!(opened.is_ok(), replayed.is_ok());
        if let Ok(ledger) = opened {
            prop_assert_eq!(ledger.live().expect("live after open"), replayed.expect("replayed"));
        }
    }

    #[test]
    fn replay_matches_the_model(ops in proptest::collection::vec(op(), 0..60)) {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut ledger = Ledger::open(dir.path()).expect("open");
        let mut model = Model::default();
        for op in &ops {
            match *op {
                Op::Register(kind, name) => {
                    let object = object(kind, name);
                    ledger.registered(&object).expect("register");
                    model.registered(&object);
                }
                Op::Destroy(kind, name) => {
                    let object = object(kind, name);
                    ledger.destroyed(&object).expect("destroy");
                    model.destroyed(&object);
                }
                Op::Truncate => {
                    ledger.truncate().expect("truncate");
                    model.live.clear();
                }
                Op::Reopen => {
                    ledger = Ledger::open(dir.path()).expect("reopen");
                }
            }
        }
        prop_assert_eq!(&ledger.live().expect("live"), &model.live);
        prop_assert_eq!(&ledger::replay_dir(dir.path()).expect("replay"), &model.live);
    }
}
