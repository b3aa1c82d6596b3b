//! A second open of a folder that is open, from this process or another, fails at once with
//! `Error::Locked`; dropping the store releases the folder.

mod common;

use std::process::Command;

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

#[test]
fn another_process_cannot_open_a_folder_this_one_holds() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store.append("k", &user("x")).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_sessionlog"))
        .arg("ls")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("locked"), "{stderr}");
    drop(store);
    let output = Command::new(env!("CARGO_BIN_EXE_sessionlog"))
        .arg("ls")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains('k'));
}
