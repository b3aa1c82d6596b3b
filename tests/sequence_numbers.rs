//! A sequence number, once handed out (to a subscriber, or by `last_seq`), never names another
//! event: numbers are reserved durably ahead (the `LOCK` floor), so when a power loss takes
//! unsynced records, or damage sends records to quarantine, the next open numbers on past them
//! and leaves a hole instead of handing them out again.

mod common;

use std::sync::Arc;

use common::SIM_DIR;
use sessionlog::testing::SimFs;
use sessionlog::{ChatMessage, Durability, LogStore, Options, SessionBackend};

#[test]
fn numbers_a_power_loss_took_are_never_handed_out_again() {
    for durability in [
        Durability::Never,
        Durability::Interval(std::time::Duration::from_secs(3600)),
    ] {
        let sim = SimFs::new();
        let options = Options::with_durability(durability);
        let store =
            LogStore::open_with_fs(SIM_DIR, options.clone(), Arc::new(sim.clone())).unwrap();
        let mut subscription = store.subscribe(0).unwrap();
        for i in 0..3 {
            store
                .append("k", &ChatMessage::user(format!("m{i}")))
                .unwrap();
        }
        let handed_out = store.last_seq();
        assert!(handed_out >= 3);
        let mut delivered = Vec::new();
        while delivered.len() < 3 {
            match subscription.recv().unwrap() {
                Some(sessionlog::Delivery::Event(e)) => delivered.push(e.seq),
                Some(sessionlog::Delivery::CaughtUp) => {}
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(*delivered.last().unwrap(), handed_out);
        // The power goes before anything was synced: the records are gone.
        drop(subscription);
        sim.cut_power_after(0);
        drop(store);
        sim.crash(None);
        let store =
            LogStore::open_with_fs(SIM_DIR, options.clone(), Arc::new(sim.clone())).unwrap();
        assert!(
            store.load("k").is_empty(),
            "{durability:?}: the records survived"
        );
        store.append("k", &ChatMessage::user("after")).unwrap();
        let reused = store.last_seq();
        assert!(
            reused > handed_out,
            "{durability:?}: number {reused} handed out again (the lost ones went to {handed_out})"
        );
        let seqs: Vec<u64> = store
            .events(sessionlog::EventFilter::all())
            .unwrap()
            .map(|e| e.unwrap().seq)
            .collect();
        assert_eq!(seqs, vec![reused], "{durability:?}");
    }
}

/// After a clean close the next open goes on from the last number: no hole.
#[test]
fn a_clean_close_leaves_no_hole() {
    let dir = tempfile::tempdir().unwrap();
    let store = common::open_fast(dir.path());
    store.append("k", &ChatMessage::user("one")).unwrap();
    let before = store.last_seq();
    store.close().unwrap();
    let store = common::open_fast(dir.path());
    store.append("k", &ChatMessage::user("two")).unwrap();
    assert_eq!(store.last_seq(), before + 1);
}
