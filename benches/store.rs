//! Benchmarks of the store's hot paths: append, update_last, load, load_tail and reopen.
//! Run with `cargo bench`.
#![allow(missing_docs)] // criterion_group! generates undocumented items

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use sessionlog::{ChatMessage, Durability, LogStore, Options, SessionBackend};

fn message(i: usize) -> ChatMessage {
    ChatMessage::user(format!("message {i} {}", "lorem ipsum ".repeat(40)))
}

fn bench_append(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let store =
        LogStore::open_with(dir.path(), Options::with_durability(Durability::Never)).unwrap();
    let mut i = 0;
    c.bench_function("append_never", |b| {
        b.iter(|| {
            i += 1;
            store.append("bench", &message(i)).unwrap();
        })
    });
    drop(store);
    let dir = tempfile::tempdir().unwrap();
    let store = LogStore::open(dir.path()).unwrap();
    c.bench_function("append_always", |b| {
        b.iter(|| {
            i += 1;
            store.append("bench", &message(i)).unwrap();
        })
    });
}

fn bench_reads(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let store =
        LogStore::open_with(dir.path(), Options::with_durability(Durability::Never)).unwrap();
    for i in 0..1000 {
        store.append("s1000", &message(i)).unwrap();
    }
    for i in 0..10_000 {
        store.append("s10000", &message(i)).unwrap();
    }
    c.bench_function("update_last_1000", |b| {
        b.iter(|| store.update_last("s1000", &message(7)).unwrap())
    });
    c.bench_function("load_1000", |b| b.iter(|| store.load("s1000")));
    c.bench_function("load_tail_50_of_10000", |b| {
        b.iter(|| store.load_tail("s10000", 50))
    });
    drop(store);
    c.bench_function("reopen_11000_messages", |b| {
        b.iter_batched(
            || (),
            |()| LogStore::open(dir.path()).unwrap(),
            BatchSize::PerIteration,
        )
    });
}

criterion_group!(benches, bench_append, bench_reads);
criterion_main!(benches);
