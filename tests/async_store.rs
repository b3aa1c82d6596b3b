//! `AsyncLogStore` (feature `tokio`) on a multi-threaded runtime under many concurrent tasks,
//! and on a current-thread runtime, where a call that blocked the runtime's only thread would
//! deadlock it.

use std::time::Duration;

use sessionlog::{
    AsyncLogStore, ChatMessage, Delivery, Durability, ListQuery, LogStore, Options, SessionBackend,
    SessionContext,
};

/// Long enough for anything these tests do; a deadlock fails the test instead of hanging it.
const DEADLINE: Duration = Duration::from_secs(120);

/// A runtime with one thread, which every task (and every wait) shares.
fn current_thread_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn a_thousand_tasks_over_a_hundred_sessions_keep_every_sessions_order_and_count() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    const SESSIONS: usize = 100;
    const TASKS: usize = 1000;
    const EACH: usize = 3;
    runtime.block_on(async {
        let store = AsyncLogStore::open(dir.path()).await.unwrap(); // Durability::Always
        let mut tasks = Vec::new();
        for task in 0..TASKS {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                let key = format!("session-{}", task % SESSIONS);
                for n in 0..EACH {
                    let message = ChatMessage::user(format!("{task}:{n}"));
                    store.append(&key, &message).await.unwrap();
                }
            }));
        }
        tokio::time::timeout(DEADLINE, async {
            for task in tasks {
                task.await.unwrap();
            }
        })
        .await
        .expect("the tasks finish");
        for session in 0..SESSIONS {
            let messages = store.load(&format!("session-{session}")).await;
            assert_eq!(messages.len(), TASKS / SESSIONS * EACH, "session {session}");
            // Each task's messages are all there, in the order it wrote them.
            for task in (session..TASKS).step_by(SESSIONS) {
                let seen: Vec<usize> = messages
                    .iter()
                    .filter_map(|m| {
                        let (t, n) = m.content.split_once(':')?;
                        (t.parse::<usize>().ok()? == task).then(|| n.parse().unwrap())
                    })
                    .collect();
                assert_eq!(seen, (0..EACH).collect::<Vec<_>>(), "task {task}");
            }
        }
        tokio::time::timeout(DEADLINE, store.close())
            .await
            .expect("close finishes")
            .unwrap();
    });
    // Closed: the folder's lock is free again, and what was acknowledged is there.
    let store = LogStore::open(dir.path()).unwrap();
    assert_eq!(store.list_sessions().len(), SESSIONS);
    assert_eq!(store.load("session-7").len(), TASKS / SESSIONS * EACH);
}

#[test]
fn a_current_thread_runtime_is_never_blocked_by_a_call() {
    let runtime = current_thread_runtime();
    let dir = tempfile::tempdir().unwrap();
    runtime.block_on(async {
        tokio::time::timeout(DEADLINE, async {
            let options = Options::with_durability(Durability::Always);
            let store = AsyncLogStore::open_with(dir.path(), options).await.unwrap();
            // While a call runs on the blocking pool, the runtime's one thread still runs
            // other tasks: this ticker advances during the writes.
            let ticks = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
            let ticker = {
                let ticks = ticks.clone();
                tokio::spawn(async move {
                    loop {
                        ticks.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        tokio::task::yield_now().await;
                    }
                })
            };
            let key = "telegram_alice";
            let before = ticks.load(std::sync::atomic::Ordering::SeqCst);
            store
                .append(key, &ChatMessage::user("hello"))
                .await
                .unwrap();
            // A call that did its work on this thread would have returned without letting the
            // ticker run in between.
            let after = ticks.load(std::sync::atomic::Ordering::SeqCst);
            assert!(
                after > before,
                "the thread ran other tasks while the append synced"
            );
            ticker.abort();
            store
                .append(key, &ChatMessage::assistant(""))
                .await
                .unwrap();
            let reply = ChatMessage::assistant("hi!");
            assert!(store.update_last(key, &reply).await.unwrap());
            let context = SessionContext {
                channel_id: Some("telegram.main"),
                room_id: None,
                sender_id: Some("alice"),
            };
            store.set_session_context(key, context).await.unwrap();
            store.set_session_name(key, "Alice").await.unwrap();
            store.set_session_agent_alias(key, "helper").await.unwrap();
            assert_eq!(store.count_agent_attribution("helper").await.unwrap(), 1);
            assert_eq!(
                store.load(key).await,
                [ChatMessage::user("hello"), ChatMessage::assistant("hi!")]
            );
            assert_eq!(store.load_tail(key, 1).await, [reply]);
            let metadata = store.get_session_metadata(key).await.unwrap();
            assert_eq!(metadata.name.as_deref(), Some("Alice"));
            assert_eq!(metadata.sender_id.as_deref(), Some("alice"));
            let page = store.list_page(&ListQuery::default()).await.unwrap();
            assert_eq!(page.sessions.len(), 1);
            store.fork_session(key, "fork", None).await.unwrap();
            assert_eq!(store.load("fork").await.len(), 2);
            assert!(store.delete_session("fork").await.unwrap());
            assert!(!store.session_exists("fork").await);
            store.close().await.unwrap();
        })
        .await
        .expect("no call deadlocks the runtime");
    });
}

#[test]
fn a_subscription_stream_delivers_what_the_blocking_one_does() {
    let runtime = current_thread_runtime();
    let dir = tempfile::tempdir().unwrap();
    runtime.block_on(async {
        tokio::time::timeout(DEADLINE, async {
            let store = AsyncLogStore::open(dir.path()).await.unwrap();
            store.append("a", &ChatMessage::user("one")).await.unwrap();
            store.append("b", &ChatMessage::user("two")).await.unwrap();
            let mut stream = store.subscribe(0).await.unwrap();
            let mut blocking = store.blocking().subscribe(0).unwrap();
            // The catch-up, then the point where it ends.
            let mut seen = Vec::new();
            loop {
                match stream.next().await.unwrap().unwrap() {
                    Delivery::CaughtUp => break,
                    Delivery::Event(event) => seen.push(event),
                    other => panic!("{other:?}"),
                }
            }
            let mut expected = Vec::new();
            while let Some(Delivery::Event(event)) = blocking.recv().unwrap() {
                expected.push(event);
            }
            assert_eq!(seen, expected);
            assert_eq!(seen.len(), 2);
            // Then live events as they commit.
            store
                .append("a", &ChatMessage::user("three"))
                .await
                .unwrap();
            let live = match stream.next().await.unwrap().unwrap() {
                Delivery::Event(event) => event,
                other => panic!("{other:?}"),
            };
            assert_eq!(live.session, "a");
            assert_eq!(live.seq, store.blocking().last_seq());
            drop(blocking);
            // Closing the store ends the stream after what was queued.
            store.close().await.unwrap();
            assert!(stream.next().await.is_none());
        })
        .await
        .expect("the stream never stalls");
    });
}

/// Redelivered messages from many tasks at once: each id is written once, on a multi-threaded
/// runtime; archive and unarchive answer as their blocking twins.
#[test]
fn concurrent_redeliveries_write_each_id_once_and_archive_works_async() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    runtime.block_on(async {
        let options = Options::with_durability(Durability::Never);
        let store = AsyncLogStore::open_with(dir.path(), options).await.unwrap();
        let mut tasks = Vec::new();
        for delivery in 0..200 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                let id = format!("wamid.{}", delivery % 50);
                let message = ChatMessage::user(id.clone());
                let single = store.append_once("chat", &message, &id).await.unwrap();
                let batch_id = format!("turn.{}", delivery % 10);
                let turn = [message.clone(), ChatMessage::assistant("ok")];
                let batch = store
                    .append_batch_once("chat", &turn, &batch_id)
                    .await
                    .unwrap();
                usize::from(single) + usize::from(batch)
            }));
        }
        let mut written = 0;
        for task in tasks {
            written += tokio::time::timeout(DEADLINE, task)
                .await
                .expect("the task finishes")
                .unwrap();
        }
        assert_eq!(written, 50 + 10);
        assert_eq!(store.load("chat").await.len(), 50 + 2 * 10);
        assert!(store.archive_session("chat").await.unwrap());
        assert!(store.list_sessions().await.is_empty());
        assert!(!store.archive_session("missing").await.unwrap());
        assert!(store.unarchive_session("chat").await.unwrap());
        assert_eq!(store.list_sessions().await, vec!["chat".to_string()]);
        store.close().await.unwrap();
    });
}
