//! Work spread over a few threads for the length of one call, for open's per-session work
//! (a replay after a crash reads every changed session's files: system calls and decoding
//! that one core does one session at a time).
//!
//! The answers come back in the order of the items, so a caller that merges them sees what a
//! loop over the items would have given; only the order of the file-system calls between two
//! items differs. A panic in a worker is raised again in the caller, as the loop would have
//! raised it. Where no thread can be started the caller's thread does all the work.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;

use parking_lot::Mutex;

/// One thread for each this many items (so fewer than twice as many are done on the caller's
/// thread alone): starting a thread costs about as much as a few sessions' work.
const ITEMS_PER_WORKER: usize = 8;

/// At most this many threads (the caller's included): open's work is system calls on one file
/// system, which more threads than this do not speed up.
const WORKERS_MAX: usize = 4;

/// How many threads work on `items` items: one per `ITEMS_PER_WORKER`, no more than the
/// cores this process may use (`available_parallelism` follows CPU affinity and quotas) nor
/// `WORKERS_MAX`.
fn workers(items: usize) -> usize {
    let cores = thread::available_parallelism().map_or(1, |n| n.get());
    (items / ITEMS_PER_WORKER).clamp(1, cores.clamp(1, WORKERS_MAX))
}

/// `f` of each item, in the items' order, worked out on up to [`WORKERS_MAX`] threads.
pub(crate) fn map<T: Send, R: Send>(items: Vec<T>, f: impl Fn(T) -> R + Sync) -> Vec<R> {
    let threads = workers(items.len());
    if threads <= 1 {
        return items.into_iter().map(f).collect();
    }
    let count = items.len();
    // Each item taken once, by whichever thread asks next: sessions differ in cost.
    let queue: Vec<Mutex<Option<T>>> = items.into_iter().map(|t| Mutex::new(Some(t))).collect();
    let next = AtomicUsize::new(0);
    let work = || {
        let mut done = Vec::new();
        loop {
            let at = next.fetch_add(1, Ordering::Relaxed);
            let Some(slot) = queue.get(at) else {
                return done;
            };
            if let Some(item) = slot.lock().take() {
                done.push((at, f(item)));
            }
        }
    };
    let parts: Vec<Vec<(usize, R)>> = thread::scope(|scope| {
        // A thread that cannot be started leaves its share to the others.
        let started: Vec<_> = (1..threads)
            .filter_map(|_| thread::Builder::new().spawn_scoped(scope, work).ok())
            .collect();
        let mut parts = vec![work()];
        for handle in started {
            match handle.join() {
                Ok(part) => parts.push(part),
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        parts
    });
    let mut answers: Vec<Option<R>> = (0..count).map(|_| None).collect();
    for (at, answer) in parts.into_iter().flatten() {
        if let Some(slot) = answers.get_mut(at) {
            *slot = Some(answer);
        }
    }
    // Every index below `count` was taken by exactly one thread, so none is missing.
    answers.into_iter().flatten().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_come_back_in_the_items_order_each_item_worked_once() {
        let calls = AtomicUsize::new(0);
        let items: Vec<u64> = (0..1000).collect();
        let answers = map(items, |i| {
            calls.fetch_add(1, Ordering::Relaxed);
            // Uneven work, so that the threads finish out of order.
            if i % 7 == 0 {
                thread::sleep(std::time::Duration::from_micros(50));
            }
            i * 2
        });
        assert_eq!(answers, (0..1000).map(|i| i * 2).collect::<Vec<_>>());
        assert_eq!(calls.load(Ordering::Relaxed), 1000);
    }

    #[test]
    fn a_few_items_are_worked_on_the_callers_thread() {
        let caller = thread::current().id();
        let answers = map(vec![1, 2, 3], |i| (i, thread::current().id()));
        assert!(answers.iter().all(|&(_, id)| id == caller));
        assert_eq!(
            answers.iter().map(|&(i, _)| i).collect::<Vec<_>>(),
            [1, 2, 3]
        );
    }

    #[test]
    fn many_items_are_shared_between_threads_where_there_are_cores() {
        if workers(1000) < 2 {
            return; // one core: nothing to share (the order test still holds)
        }
        let caller = thread::current().id();
        let answers = map((0..1000).collect(), |_: u32| {
            thread::sleep(std::time::Duration::from_micros(20));
            thread::current().id()
        });
        assert!(answers.iter().any(|&id| id != caller));
    }

    #[test]
    fn a_panic_in_a_worker_reaches_the_caller() {
        let result = std::panic::catch_unwind(|| {
            map((0..1000).collect(), |i: u32| {
                assert!(i != 777, "item 777");
                i
            })
        });
        assert!(result.is_err());
    }
}
