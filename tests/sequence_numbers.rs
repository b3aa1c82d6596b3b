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
        // The log says which numbers name no event: every one the crash took among them.
        let events: Vec<sessionlog::LogEvent> = store
            .events(sessionlog::EventFilter::all())
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let [gap, after] = &events[..] else {
            panic!("{durability:?}: {events:?}");
        };
        let sessionlog::EventKind::Gap { from, to } = gap.kind else {
            panic!("{durability:?}: {gap:?} is no gap");
        };
        assert!(from <= delivered[0] && handed_out <= to, "{from}..={to}");
        assert_eq!((gap.seq, gap.session.as_str()), (to + 1, ""));
        assert_eq!(after.seq, reused);
        assert!(reused > gap.seq);
        // Logged once: a clean reopen finds the gap explained.
        drop(store);
        let store = LogStore::open_with_fs(SIM_DIR, options, Arc::new(sim.clone())).unwrap();
        let gaps = store
            .events(sessionlog::EventFilter::all())
            .unwrap()
            .filter(|e| matches!(e.as_ref().unwrap().kind, sessionlog::EventKind::Gap { .. }))
            .count();
        assert_eq!(gaps, 1, "{durability:?}");
    }
}

/// A process that ends without closing the store (its records synced) leaves numbers
/// reserved past its last one: the next open logs them as a gap, once, and the numbers on go
/// on from after it; the events before it are all there.
#[test]
fn a_crash_leaves_a_logged_gap_and_a_clean_close_none() {
    let sim = SimFs::new();
    let open =
        || LogStore::open_with_fs(SIM_DIR, Options::default(), Arc::new(sim.clone())).unwrap();
    let store = open();
    store.append("k", &ChatMessage::user("one")).unwrap();
    store.append("k", &ChatMessage::user("two")).unwrap();
    let last = store.last_seq();
    sim.cut_power_after(0);
    drop(store);
    sim.crash(None);
    let store = open();
    let kinds = |store: &LogStore| -> Vec<(u64, sessionlog::EventKind)> {
        store
            .events(sessionlog::EventFilter::all())
            .unwrap()
            .map(|e| e.map(|e| (e.seq, e.kind)).unwrap())
            .collect()
    };
    let seen = kinds(&store);
    assert_eq!(seen.len(), 3, "{seen:?}");
    let (gap_seq, sessionlog::EventKind::Gap { from, to }) = seen[2].clone() else {
        panic!("{seen:?}");
    };
    assert_eq!((from, to + 1), (last + 1, gap_seq));
    store.append("k", &ChatMessage::user("three")).unwrap();
    assert_eq!(store.last_seq(), gap_seq + 1);
    store.close().unwrap();
    let store = open();
    assert_eq!(kinds(&store).len(), 4, "a clean close logs no gap");
    store.append("k", &ChatMessage::user("four")).unwrap();
    assert_eq!(store.last_seq(), gap_seq + 2, "and leaves none");
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
