//! The anchor log's unit tests (`anchor/mod.rs`).

use std::sync::Arc;

use super::*;
use crate::report::Finding;
use crate::testing::SimFs;

/// A file system holding an empty store folder, and that folder.
fn empty_store() -> (SimFs, &'static Path) {
    let fs = SimFs::new();
    let dir = Path::new("/s");
    fs.create_dir_all(dir).unwrap();
    (fs, dir)
}

/// A store folder whose anchor log holds one anchor (session 1 at 5), that log, its root.
fn one_anchor() -> (SimFs, &'static Path, Anchors, Hash) {
    let (fs, dir) = empty_store();
    let mut log = Anchors::read_until(&fs, dir, u64::MAX).unwrap();
    let first = add(&mut log, &fs, dir, 10, [(1, point(5, 1))]).unwrap();
    (fs, dir, log, first)
}

/// Appends an anchor of `now` (nothing lowered; the log made durable as a first anchor).
fn add<const N: usize>(
    log: &mut Anchors,
    fs: &SimFs,
    dir: &Path,
    next_seq: u64,
    now: [(u64, Point); N],
) -> Result<Hash> {
    log.append(fs, dir, next_seq, now, &HashSet::new(), true)
}

/// The anchor log's bytes.
fn log_bytes(fs: &SimFs, dir: &Path) -> Vec<u8> {
    let path = anchors_path(dir);
    fs.files().into_iter().find(|(p, _)| *p == path).unwrap().1
}

fn point(last_seq: u64, h: u8) -> Point {
    Point {
        last_seq,
        head: [h; HASH_LEN],
    }
}

#[test]
fn a_descending_walk_finds_what_a_search_finds_in_any_order_of_ids() {
    let points: Vec<(u64, Point)> = (0..200u64)
        .filter(|id| id % 3 != 0)
        .map(|id| (id * 2, point(id, id as u8)))
        .collect();
    let anchored = Anchored::fold(points);
    // Down, as a checkpoint lists its sessions; then up, and at random.
    let down: Vec<u64> = (0..420).rev().collect();
    let up: Vec<u64> = (0..420).collect();
    let mut state = 7u64;
    let random: Vec<u64> = (0..420)
        .map(|_| {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1);
            (state >> 33) % 420
        })
        .collect();
    for ids in [down, up, random] {
        let mut walk = anchored.descending();
        for id in ids {
            assert_eq!(walk.get(id), anchored.get(&id), "id {id}");
        }
    }
}

#[test]
fn anchors_fold_chain_and_only_rise() {
    let (fs, dir) = empty_store();
    let mut log = Anchors::read_until(&fs, dir, u64::MAX).unwrap();
    let first = add(&mut log, &fs, dir, 10, [(1, point(5, 1)), (2, point(9, 2))]).unwrap();
    // Nothing rose: no new anchor.
    assert_eq!(
        add(&mut log, &fs, dir, 10, [(1, point(5, 1)), (2, point(9, 2))]).unwrap(),
        first
    );
    // Session 1 went back (not recorded), session 2 rose.
    let second = add(
        &mut log,
        &fs,
        dir,
        20,
        [(1, point(3, 7)), (2, point(15, 3))],
    )
    .unwrap();
    assert_ne!(first, second);
    let again = Anchors::read_until(&fs, dir, u64::MAX).unwrap();
    assert_eq!(again.roots, vec![first, second]);
    assert_eq!(*again.points.get(&1).unwrap(), point(5, 1));
    assert_eq!(*again.points.get(&2).unwrap(), point(15, 3));
    let behind = again.behind(
        |id, _| Some(if id == 1 { point(3, 7) } else { point(15, 3) }),
        |_| false,
    );
    assert_eq!(behind, vec![(1, point(5, 1), Some(point(3, 7)))]);
    // Same number, another head: not the anchored history.
    let behind = again.behind(
        |id, _| Some(point(if id == 1 { 5 } else { 15 }, 9)),
        |_| false,
    );
    assert_eq!(behind.len(), 2);
    // Gone without an erasure is behind; erased is not.
    assert_eq!(again.behind(|_, _| None, |id| id == 2).len(), 1);
}

#[test]
fn a_long_log_read_in_steps_folds_to_each_sessions_latest_point() {
    let (fs, dir) = empty_store();
    let mut log = Anchors::read_until(&fs, dir, u64::MAX).unwrap();
    let mut latest = std::collections::BTreeMap::new();
    for round in 1..=30u64 {
        // Each round some sessions rise, a subset that changes.
        let rising: Vec<(u64, Point)> = (1..=9u64)
            .filter(|id| (id * 7 + round) % 3 != 0)
            .map(|id| (id, point(round * 10 + id, (round + id) as u8)))
            .collect();
        log.append(&fs, dir, round * 100, rising.clone(), &HashSet::new(), true)
            .unwrap();
        latest.extend(rising);
    }
    let read = Anchors::read_until(&fs, dir, u64::MAX).unwrap();
    assert_eq!(read.roots.len(), 30);
    let folded: Vec<(u64, Point)> = read.points.iter().collect();
    let expected: Vec<(u64, Point)> = latest.into_iter().collect();
    assert_eq!(folded, expected);
}

/// An empty store folder with its `LOCK` file (where a full anchor is named), and its log.
fn store_with_lock() -> (SimFs, &'static Path, Anchors) {
    let (fs, dir) = empty_store();
    fs.open(&dir.join(crate::layout::LOCK_FILE), OpenMode::Truncate)
        .unwrap();
    let log = Anchors::read_until(&fs, dir, u64::MAX).unwrap();
    (fs, dir, log)
}

/// Appends round `round`'s anchor: each session of `ids` at `round * 10_000` plus its id.
fn rise(log: &mut Anchors, fs: &SimFs, dir: &Path, round: u64, ids: impl Iterator<Item = u64>) {
    let rising = ids.map(|id| (id, point(round * 10_000 + id, round as u8)));
    log.append(fs, dir, round * 100_000, rising, &HashSet::new(), true)
        .unwrap();
}

#[test]
fn a_read_from_the_full_anchor_folds_to_the_points_of_a_whole_read() {
    let (fs, dir, mut log) = store_with_lock();
    // 2,000 sessions (96 KB an anchor), most rising each round.
    for round in 1..=8u64 {
        rise(
            &mut log,
            &fs,
            dir,
            round,
            (0..2000).filter(|id| (id + round) % 5 != 0),
        );
    }
    let full = log
        .full()
        .expect("a full anchor once the log holds twice the points");
    assert!(full.at > 0);
    full.write(&fs, dir).unwrap();
    let whole = Anchors::read_until(&fs, dir, u64::MAX).unwrap();
    let latest = Anchors::read_latest(&fs, dir, u64::MAX).unwrap();
    assert_eq!(latest.full(), Some(full));
    let points = |a: &Anchors| a.points.iter().collect::<Vec<_>>();
    assert!(points(&latest) == points(&whole));
    assert_eq!((latest.end(), latest.root()), (whole.end(), whole.root()));
    assert!(whole.roots.ends_with(&latest.roots) && latest.roots.len() < whole.roots.len());
    // The next anchor, appended after a read that started there, links to the chain.
    let mut latest = latest;
    let now = [(7, point(999_999, 9)), (5_000, point(1, 1))];
    latest
        .append(&fs, dir, 2_000_000, now, &HashSet::new(), false)
        .unwrap();
    let after = Anchors::read_until(&fs, dir, u64::MAX).unwrap();
    assert!(points(&latest) == points(&after));
    assert_eq!(latest.root(), after.root());
    assert!(after.damaged.is_empty());
    assert_eq!(after.roots.len(), whole.roots.len() + 1);
}

/// A log of rounds of 2,500 sessions rising, in anchors of at most 1,000 entries, until
/// a full anchor (of three) is written; it is named in `LOCK`.
fn split_full_anchor() -> (SimFs, &'static Path, FullAnchor) {
    let (fs, dir, mut log) = store_with_lock();
    log.entries_max = 1000;
    let mut round = 0u64;
    while log.full().is_none() {
        round += 1;
        rise(&mut log, &fs, dir, round, 0..2500);
    }
    let full = log.full().unwrap();
    assert_eq!(full.end - full.at, 2 * anchor_len(1000) + anchor_len(500));
    // One more round after it, of a few sessions.
    let rising = (0..10u64).map(|id| (id, point(900_000 + id, 99)));
    log.append(&fs, dir, 1_000_000, rising, &HashSet::new(), true)
        .unwrap();
    full.write(&fs, dir).unwrap();
    (fs, dir, full)
}

#[test]
fn a_full_anchor_in_several_is_read_from_only_when_every_one_of_them_is_sound() {
    let (fs, dir, full) = split_full_anchor();
    let whole = Anchors::read_until(&fs, dir, u64::MAX).unwrap();
    let latest = Anchors::read_latest(&fs, dir, u64::MAX).unwrap();
    assert_eq!(latest.full(), Some(full));
    assert!(latest.points.iter().eq(whole.points.iter()));
    // Its second anchor damaged: a read from the first would have none of the sessions
    // the second lists; the whole log is read instead, its older points with it.
    let mut bytes = log_bytes(&fs, dir);
    let second = (full.at + anchor_len(1000)) as usize;
    bytes[second + 100] ^= 0xFF;
    fs.put_file(&anchors_path(dir), &bytes);
    let whole = Anchors::read_until(&fs, dir, u64::MAX).unwrap();
    assert_eq!(whole.damaged, vec![second as u64]);
    let latest = Anchors::read_latest(&fs, dir, u64::MAX).unwrap();
    assert_eq!(latest.full(), None);
    assert_eq!(latest.damaged, whole.damaged);
    assert!(latest.points.iter().eq(whole.points.iter()));
    // Cut inside its last anchor (a torn tail): the same.
    bytes.truncate(full.end as usize - 10);
    fs.put_file(&anchors_path(dir), &bytes);
    let latest = Anchors::read_latest(&fs, dir, u64::MAX).unwrap();
    assert_eq!(latest.full(), None);
    let whole = Anchors::read_until(&fs, dir, u64::MAX).unwrap();
    assert!(latest.points.iter().eq(whole.points.iter()));
}

#[test]
fn no_full_anchor_lists_a_point_at_or_past_its_next_number() {
    let (fs, dir) = empty_store();
    let mut log = Anchors::read_until(&fs, dir, u64::MAX).unwrap();
    let high = (0..2000u64).map(|id| (id, point(500_000 + id, 1)));
    log.append(&fs, dir, 600_000, high, &HashSet::new(), true)
        .unwrap();
    // The numbers start lower again (the floor lost) while the log outgrows twice its
    // points: no full anchor, whose held points would be past its `next_seq`.
    for round in 1..=6u64 {
        let rising = (2000..4000u64).map(|id| (id, point(round * 10_000 + id, 2)));
        log.append(
            &fs,
            dir,
            round * 10_000 + 5_000,
            rising,
            &HashSet::new(),
            true,
        )
        .unwrap();
    }
    assert_eq!(log.full(), None);
    let whole = Anchors::read_until(&fs, dir, u64::MAX).unwrap();
    assert_eq!(whole.roots.len(), 7, "every anchor sound");
    assert!(whole.damaged.is_empty());
}

#[test]
fn a_full_anchor_named_wrongly_is_passed_over_for_a_whole_read() {
    let (fs, dir, mut log) = store_with_lock();
    for round in 1..=8u64 {
        rise(&mut log, &fs, dir, round, 0..2000);
    }
    let full = log.full().unwrap();
    let whole = Anchors::read_until(&fs, dir, u64::MAX).unwrap();
    let len = fs.stat(&anchors_path(dir)).unwrap().len;
    for wrong in [
        FullAnchor {
            root: [3; 32],
            ..full
        },
        FullAnchor {
            at: full.at + 1,
            ..full
        },
        FullAnchor {
            at: len + 10,
            ..full
        },
    ] {
        wrong.write(&fs, dir).unwrap();
        let read = Anchors::read_latest(&fs, dir, u64::MAX).unwrap();
        assert_eq!(read.full(), None, "{wrong:?}");
        assert_eq!(read.roots, whole.roots);
        assert_eq!(read.points.len(), whole.points.len());
    }
}

#[test]
fn a_bad_byte_ends_the_chain_where_it_is_and_the_tail_is_saved() {
    let (fs, dir, mut log, first) = one_anchor();
    add(&mut log, &fs, dir, 20, [(1, point(15, 1))]).unwrap();
    let path = anchors_path(dir);
    let mut bytes = log_bytes(&fs, dir);
    let len = bytes.len();
    bytes[len - 10] ^= 1;
    fs.put_file(&path, &bytes);
    let mut again = Anchors::read_until(&fs, dir, u64::MAX).unwrap();
    assert_eq!(again.roots, vec![first]);
    assert_eq!(*again.points.get(&1).unwrap(), point(5, 1));
    let mut report = RecoveryReport::default();
    again.repair(&fs, dir, &mut report).unwrap();
    assert!(matches!(report.findings[..], [Finding::TornTail { .. }]));
    let third = add(&mut again, &fs, dir, 30, [(1, point(25, 1))]).unwrap();
    assert_eq!(
        Anchors::read_until(&fs, dir, u64::MAX).unwrap().roots,
        vec![first, third]
    );
}

#[test]
fn damage_in_the_middle_is_kept_and_reported_and_the_anchors_after_it_are_read() {
    let (fs, dir, mut log, first) = one_anchor();
    let first_end = log.end();
    add(
        &mut log,
        &fs,
        dir,
        20,
        [(1, point(15, 1)), (2, point(16, 2))],
    )
    .unwrap();
    let third = add(&mut log, &fs, dir, 30, [(2, point(25, 2))]).unwrap();
    let path = anchors_path(dir);
    let mut bytes = log_bytes(&fs, dir);
    bytes[first_end as usize + 50] ^= 1; // inside the second anchor
    fs.put_file(&path, &bytes);
    let mut again = Anchors::read_until(&fs, dir, u64::MAX).unwrap();
    assert_eq!(again.roots, vec![first, third]);
    assert_eq!(again.damaged, vec![first_end]);
    assert_eq!(
        again.end(),
        bytes.len() as u64,
        "the next anchor goes after them all"
    );
    assert_eq!(
        *again.points.get(&1).unwrap(),
        point(5, 1),
        "the lost anchor's points are not known"
    );
    assert_eq!(*again.points.get(&2).unwrap(), point(25, 2));
    let mut report = RecoveryReport::default();
    again.report_damage(dir, &mut report);
    again.repair(&fs, dir, &mut report).unwrap();
    assert!(
        matches!(&report.findings[..], [Finding::Damaged { offset, .. }] if *offset == first_end),
        "{report:?}"
    );
    // Nothing is cut: the damaged bytes stay where they are.
    let kept = log_bytes(&fs, dir);
    assert_eq!(kept, bytes);
    let fourth = add(&mut again, &fs, dir, 40, [(1, point(35, 1))]).unwrap();
    assert_eq!(
        Anchors::read_until(&fs, dir, u64::MAX).unwrap().roots,
        vec![first, third, fourth]
    );
}

#[test]
fn the_next_anchor_is_found_across_the_scan_buffers_edge() {
    let (fs, dir, log, first) = one_anchor();
    let damaged_at = log.end();
    let path = anchors_path(dir);
    let mut bytes = log_bytes(&fs, dir);
    // The scan starts one byte into the damage and reads 64 KiB at a time, each read
    // overlapping the one before by three bytes: put the next magic across the first
    // read's end, after garbage that holds a stray magic of no sound anchor.
    let next_at = damaged_at as usize + 1 + (1 << 16) - 2;
    bytes.resize(next_at, 0xa5);
    bytes[damaged_at as usize + 100..][..4].copy_from_slice(&MAGIC);
    let (next, root) = encode(20, &[7; HASH_LEN], &[(2, point(15, 2))]);
    bytes.extend_from_slice(&next);
    fs.put_file(&path, &bytes);
    let again = Anchors::read_until(&fs, dir, u64::MAX).unwrap();
    assert_eq!(again.damaged, vec![damaged_at]);
    assert_eq!(again.roots, vec![first, root]);
    assert_eq!(again.end(), bytes.len() as u64);
}

#[test]
fn a_file_of_false_magics_is_scanned_in_bounded_reads() {
    // After one sound anchor: 64 KiB of magics, each claiming an anchor of 1 MiB that the
    // file is long enough to hold, then 2 MiB of filler.
    let (sim, dir, _, first) = one_anchor();
    let path = anchors_path(dir);
    let mut bytes = log_bytes(&sim, dir);
    let count = ((1u32 << 20) / ENTRY_LEN as u32).to_le_bytes();
    for _ in 0..(1 << 16) / 8 {
        bytes.extend_from_slice(&MAGIC);
        bytes.extend_from_slice(&count);
    }
    bytes.resize(bytes.len() + (2 << 20), 7);
    sim.put_file(&path, &bytes);
    let fs = crate::testing::FaultyFs::new(Arc::new(sim));
    let again = Anchors::read_until(&fs, dir, u64::MAX).unwrap();
    assert_eq!(again.roots, vec![first]);
    assert!(
        again.damaged.is_empty(),
        "no sound anchor after them: a torn tail"
    );
    // Reading each of the 8,192 candidates would take two reads of it; the budget stops
    // the scan after about a hundred.
    assert!(fs.count() < 1_000, "{} reads", fs.count());
}

#[test]
fn a_settled_point_lowers_the_anchored_one() {
    let (fs, dir) = empty_store();
    let mut log = Anchors::read_until(&fs, dir, u64::MAX).unwrap();
    add(&mut log, &fs, dir, 10, [(1, point(5, 1)), (2, point(9, 2))]).unwrap();
    // Session 1 now ends lower, session 2 has no record left.
    let lowered = HashSet::from([1, 2]);
    log.append(&fs, dir, 10, [(1, point(3, 7))], &lowered, false)
        .unwrap();
    let again = Anchors::read_until(&fs, dir, u64::MAX).unwrap();
    assert_eq!(*again.points.get(&1).unwrap(), point(3, 7));
    // Session 1 at its settled point, session 2 gone: neither is behind.
    let found = |id, _: &Point| (id == 1).then_some(point(3, 7));
    assert!(again.behind(found, |_| false).is_empty());
    // Session 2 with a record is past nothing vouched for; session 1 below its settled
    // point is behind it.
    let found = |id, _: &Point| Some(point(if id == 1 { 2 } else { 4 }, 7));
    assert_eq!(
        again.behind(found, |_| false),
        vec![(1, point(3, 7), Some(point(2, 7)))]
    );
}

#[test]
fn any_flipped_bit_makes_an_anchor_unsound() {
    let (bytes, _) = encode(10, &[0; HASH_LEN], &[(1, point(5, 1))]);
    assert!(decode(&bytes).is_some());
    for bit in 0..bytes.len() * 8 {
        let mut bad = bytes.clone();
        bad[bit / 8] ^= 1 << (bit % 8);
        assert!(decode(&bad).is_none(), "bit {bit} was not noticed");
    }
    // A number past what any store reaches.
    let (bytes, _) = encode(10, &[0; HASH_LEN], &[(1, point(10, 1))]);
    assert!(decode(&bytes).is_none(), "a last_seq at or past next_seq");
}
