//! `subscribe`: a catch-up from the log, a signal, then live events, each exactly once and in
//! order, while writers run.

mod common;

use std::time::Duration;

use common::*;
use sessionlog::{ChatMessage, Delivery, EventFilter, EventKind, LogEvent, SessionBackend};

fn next_event(sub: &mut sessionlog::Subscription) -> LogEvent {
    match sub.recv_timeout(Duration::from_secs(30)).unwrap() {
        Some(Delivery::Event(event)) => event,
        other => panic!("expected an event, got {other:?}"),
    }
}

#[test]
fn a_subscriber_that_starts_midway_gets_every_later_event_once_in_order_while_writers_run() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_fast(dir.path());
    for i in 0..100 {
        store
            .append(&format!("s{}", i % 4), &user(&format!("early {i}")))
            .unwrap();
    }
    let start = 50;
    let mut sub = store.subscribe(start).unwrap();
    let mut received = Vec::new();
    let mut caught_up_at = None;
    std::thread::scope(|scope| {
        for t in 0..4 {
            let store = &store;
            scope.spawn(move || {
                let key = format!("s{t}");
                for i in 0..150 {
                    store.append(&key, &user(&format!("live {t} {i}"))).unwrap();
                    if i % 10 == 0 {
                        store
                            .update_last(&key, &ChatMessage::assistant(format!("edit {t} {i}")))
                            .unwrap();
                    }
                }
            });
        }
        // Read while the writers run.
        let total = 100 + 4 * (150 + 15);
        while received.len() < total - start as usize {
            match sub.recv_timeout(Duration::from_secs(30)).unwrap() {
                Some(Delivery::Event(event)) => received.push(event),
                Some(Delivery::CaughtUp) => {
                    assert!(caught_up_at.is_none(), "CaughtUp comes once");
                    caught_up_at = Some(received.len());
                }
                Some(other) => panic!("unexpected {other:?}"),
                None => panic!("no event within 30 s after {} events", received.len()),
            }
        }
    });
    let seqs: Vec<u64> = received.iter().map(|e| e.seq).collect();
    let expected: Vec<u64> = (start + 1..=store.last_seq()).collect();
    assert_eq!(seqs, expected, "every later event exactly once, in order");
    let caught_up_at = caught_up_at.expect("a CaughtUp signal");
    assert_eq!(
        received[caught_up_at].seq,
        sub.live_from(),
        "live events follow the signal"
    );
    // What was delivered live is what the log says.
    let from_log: Vec<LogEvent> = store
        .events(EventFilter {
            from_seq: Some(start + 1),
            ..EventFilter::all()
        })
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(received, from_log);
    assert!(sub
        .recv_timeout(Duration::from_millis(20))
        .unwrap()
        .is_none());
}

#[test]
fn live_events_say_what_they_replaced_and_include_compactions() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_fast(dir.path());
    store.append("k", &user("q")).unwrap();
    let mut sub = store.subscribe(store.last_seq()).unwrap();
    assert_eq!(sub.recv().unwrap(), Some(Delivery::CaughtUp));
    store.append("k", &ChatMessage::assistant("")).unwrap();
    store
        .update_last("k", &ChatMessage::assistant("answer"))
        .unwrap();
    store.remove_last("k").unwrap();
    store.compact_session("k").unwrap();
    store.delete_session("k").unwrap();
    let kinds: Vec<EventKind> = (0..5).map(|_| next_event(&mut sub).kind).collect();
    assert_eq!(
        kinds,
        vec![
            EventKind::Append {
                message: ChatMessage::assistant("")
            },
            EventKind::UpdateLast {
                old: ChatMessage::assistant(""),
                new: ChatMessage::assistant("answer")
            },
            EventKind::RemoveLast {
                removed: ChatMessage::assistant("answer")
            },
            EventKind::Compaction { messages: 1 },
            EventKind::Delete,
        ]
    );
}

#[test]
fn a_subscription_ends_when_the_store_is_closed() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_fast(dir.path());
    fill(&store, "k", "m", 2);
    let mut sub = store.subscribe(0).unwrap();
    assert!(matches!(sub.recv().unwrap(), Some(Delivery::Event(_))));
    store.append("k", &user("live")).unwrap();
    drop(store);
    assert!(matches!(sub.recv().unwrap(), Some(Delivery::Event(_))));
    assert_eq!(sub.recv().unwrap(), Some(Delivery::CaughtUp));
    let live = next_event(&mut sub);
    assert_eq!(
        live.kind,
        EventKind::Append {
            message: user("live")
        }
    );
    assert_eq!(sub.recv().unwrap(), None);
    assert!(sub.is_closed());
}
