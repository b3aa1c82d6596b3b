//! A second open of a folder that is open, from this process or another, fails at once with
//! `Error::Locked`; dropping the store releases the folder. (The cross-process case is in
//! `lock_other_process.rs`: a child forked by one test would briefly share this test's lock.)

mod common;

use common::*;
use sessionlog::{Error, LogStore, SessionBackend};

#[test]
fn a_second_open_in_the_same_process_is_refused_until_the_first_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let first = open(dir.path());
    first.append("k", &user("x")).unwrap();
    let second = LogStore::open(dir.path());
    assert!(matches!(second, Err(Error::Locked { .. })));
    let as_io: std::io::Error = LogStore::open(dir.path()).err().unwrap().into();
    assert_eq!(as_io.kind(), std::io::ErrorKind::ResourceBusy);
    drop(first);
    let again = open(dir.path());
    assert_eq!(again.load("k"), vec![user("x")]);
}
