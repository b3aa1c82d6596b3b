//! What the store creates is open to its owner only, whatever the umask, and a folder that
//! other users may write to is refused unless `allow_shared_folder` says otherwise.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use common::*;
use sessionlog::{Error, LogStore, Options, SessionBackend};

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

/// Every file and folder under `dir`, `dir` included.
fn everything(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = vec![dir.to_path_buf()];
    let mut i = 0;
    while i < out.len() {
        if out[i].is_dir() {
            for entry in std::fs::read_dir(&out[i]).unwrap() {
                out.push(entry.unwrap().path());
            }
        }
        i += 1;
    }
    out
}

#[test]
fn files_and_folders_are_the_owners_alone_under_a_permissive_umask() {
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("nested").join("store");
    // A child process with umask 000, so this test's umask (shared by every thread of the
    // test process) is left alone. The demo writes, compacts, keeps history and closes.
    let script = format!(
        "umask 000 && exec '{}' demo '{}' > /dev/null",
        env!("CARGO_BIN_EXE_sessionlog"),
        dir.display()
    );
    let status = Command::new("sh").arg("-c").arg(&script).status().unwrap();
    assert!(status.success());
    {
        // Archive and quarantine folders, a compaction's output, the checkpoint.
        let store = LogStore::open_with(
            &dir,
            Options {
                keep_history: true,
                ..Options::default()
            },
        )
        .unwrap();
        store.compact_session("telegram_alice").unwrap();
    }
    let all = everything(&dir);
    assert!(all.len() > 5, "{all:?}");
    for path in all {
        let expected = if path.is_dir() { 0o700 } else { 0o600 };
        assert_eq!(mode(&path), expected, "{}", path.display());
    }
    assert_eq!(
        mode(&parent.path().join("nested")),
        0o700,
        "created parents too"
    );
}

#[test]
fn a_folder_others_may_write_to_is_refused_unless_allowed() {
    for bits in [0o777, 0o770, 0o702] {
        let parent = tempfile::tempdir().unwrap();
        let dir = parent.path().join("shared");
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(bits)).unwrap();
        match LogStore::open(&dir) {
            Err(Error::InsecureFolder { path, mode }) => {
                assert_eq!((path, mode), (dir.clone(), bits));
            }
            other => panic!(
                "mode {bits:o}: expected InsecureFolder, got {:?}",
                other.err()
            ),
        }
        assert!(matches!(
            LogStore::open_read_only(&dir),
            Err(Error::InsecureFolder { .. })
        ));
        assert_eq!(
            std::fs::read_dir(&dir).unwrap().count(),
            0,
            "nothing written"
        );
        let allowed = Options {
            allow_shared_folder: true,
            ..Options::default()
        };
        let store = LogStore::open_with(&dir, allowed).unwrap();
        store.append("k", &user("hi")).unwrap();
        drop(store);
        // The command says what to do, and takes the same permission.
        let refused = Command::new(env!("CARGO_BIN_EXE_sessionlog"))
            .args(["ls", dir.to_str().unwrap()])
            .output()
            .unwrap();
        assert_eq!(refused.status.code(), Some(2));
        assert!(String::from_utf8_lossy(&refused.stderr).contains("chmod go-w"));
        let listed = Command::new(env!("CARGO_BIN_EXE_sessionlog"))
            .args(["--allow-shared-folder", "ls", dir.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(listed.status.success(), "{listed:?}");
        assert!(String::from_utf8_lossy(&listed.stdout).contains('k'));
    }
    // Readable by others, but not writable: accepted.
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("readable");
    std::fs::create_dir(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    open(&dir).append("k", &user("hi")).unwrap();
}
