//! A session's history as a stream of records: its segments in the folder and in `archive/`,
//! in order, each record folded through [`SessionView::apply`] by a [`Cursor`] that keeps no
//! file open between reads and holds one bounded read buffer.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::backend::TimestampedMessage;
use crate::cipher::DataKey;
use crate::error::{Error, Result};
use crate::event::{event_kind, EventKind, LogEvent};
use crate::fs::{context, FileSystem};
use crate::keyring::Keyring;
use crate::layout::{parse_segment_name, ARCHIVE_DIR, NUMBER_LIMIT, SEGMENT_SUFFIX};
use crate::location::{MessageLoc, RecordLoc};
use crate::message::ChatMessage;
use crate::projection::{to_time, SessionView};
use crate::reader::{
    bad_record_error, open_segment, ForkCuts, ReadPolicy, SegmentEnd, SegmentReader, SegmentRef,
};
use crate::record::{
    chain_start, decode_event, decode_frame, frame_fields, open_payload, record_hash, Event, Hash,
};
use crate::segment::{self, SegmentKind, HEADER_BYTES_MAX};

/// The histories of the store in `dir` ([`list_histories`]), leaving out sessions an
/// encrypted store was erasing when a crash stopped it (their key is gone; open finishes them).
pub(super) fn readable_histories(
    fs: &dyn FileSystem,
    dir: &Path,
    keys: Option<&Keyring>,
) -> Result<BTreeMap<u64, Vec<SegmentRef>>> {
    let mut histories = list_histories(fs, dir)?;
    if let Some(keys) = keys {
        for id in keys.erasing()? {
            histories.remove(&id);
        }
    }
    Ok(histories)
}

/// Every session's segments in `dir` and `dir/archive`, by session id, sorted by number. The
/// folder's copy wins over an archived one of the same name.
pub(super) fn list_histories(
    fs: &dyn FileSystem,
    dir: &Path,
) -> Result<BTreeMap<u64, Vec<SegmentRef>>> {
    let mut sessions: BTreeMap<u64, BTreeMap<u32, PathBuf>> = BTreeMap::new();
    let archive = dir.join(ARCHIVE_DIR);
    // The folder first, then the archive: a segment archived between the two listings is
    // then in at least one of them (and `read_segment` follows a listed one that moved).
    let folders: &[&Path] = if fs.is_dir(&archive) {
        &[dir, &archive]
    } else {
        &[dir]
    };
    for folder in folders {
        for entry in fs.list(folder).map_err(context("listing", folder))? {
            let Some(name) = entry.name.to_str().filter(|_| entry.is_file) else {
                continue;
            };
            let ours =
                parse_segment_name(name, SEGMENT_SUFFIX).filter(|(id, _)| *id < NUMBER_LIMIT);
            if let Some((id, number)) = ours {
                // The folder's copy wins over an archived one of the same number.
                sessions
                    .entry(id)
                    .or_default()
                    .entry(number)
                    .or_insert_with(|| folder.join(name));
            }
        }
    }
    Ok(sessions
        .into_iter()
        .map(|(id, segments)| {
            let refs = segments
                .into_iter()
                .map(|(number, path)| SegmentRef { number, path })
                .collect();
            (id, refs)
        })
        .collect())
}

/// The key a session's segments name, from the newest header that decodes (`key`: the
/// session's data key, in an encrypted store).
pub(super) fn history_key(
    fs: &dyn FileSystem,
    segments: &[SegmentRef],
    key: Option<&DataKey>,
) -> Option<String> {
    segments
        .iter()
        .rev()
        .find_map(|segment| read_header(fs, segment, key).ok().map(|h| h.key))
}

/// Reads and decodes a segment's header (`key`: the session's data key, in an encrypted
/// store).
pub(super) fn read_header(
    fs: &dyn FileSystem,
    segment: &SegmentRef,
    key: Option<&DataKey>,
) -> Result<segment::SegmentHeader> {
    let mut bytes = Vec::new();
    read_segment(fs, segment, 0, HEADER_BYTES_MAX, &mut bytes)?;
    let corrupt = |reason: String| Error::Corrupt {
        path: segment.path.clone(),
        offset: 0,
        reason,
    };
    let (header, len) = segment::decode_header(&bytes, key).map_err(|e| match e {
        segment::HeaderError::UnsupportedVersion(found) => Error::UnsupportedVersion {
            path: segment.path.clone(),
            found,
            supported: segment::FORMAT_VERSION_NEWEST,
        },
        segment::HeaderError::Truncated => corrupt(HEADER_CUT_SHORT.into()),
        segment::HeaderError::Corrupt(reason) => corrupt(reason),
        segment::HeaderError::Sealed => {
            corrupt("the session key is sealed and the session's data key is missing".into())
        }
    })?;
    let sealed = segment::is_sealed(header.version);
    debug_assert_eq!(len as u64, segment::header_len(&header.key, sealed));
    Ok(header)
}

/// Reads `len` bytes at `offset` of a segment, following it into `archive/` if a compaction
/// moved it there since it was listed.
pub(super) fn read_segment(
    fs: &dyn FileSystem,
    segment: &SegmentRef,
    offset: u64,
    want: usize,
    out: &mut Vec<u8>,
) -> Result<()> {
    let file = open_segment(fs, &segment.path, true)?;
    let size = file.size().map_err(context("reading", &segment.path))?;
    let available = size.saturating_sub(offset);
    let len = usize::try_from(available).unwrap_or(usize::MAX).min(want);
    out.clear();
    out.resize(len, 0);
    file.read_at(out, offset)
        .map_err(context("reading", &segment.path))
}

pub(super) const HEADER_CUT_SHORT: &str = "segment header cut short";

/// What folding one record did.
enum Folded {
    /// It is an event of the session's, reported.
    Event(LogEvent),
    /// It was folded (or skipped) without an event of its own: a message a compacted
    /// generation restates, or a fork's shared history.
    Silent,
    /// Its sequence number is past the limit: not folded.
    Beyond,
}

/// One session's history, read record by record and folded into a view.
pub(crate) struct Cursor {
    pub(super) fs: Arc<dyn FileSystem>,
    pub(super) session_id: u64,
    pub(super) segments: Vec<SegmentRef>,
    /// The segments' headers as `new` read them (`None`: unreadable then), so that each is
    /// read once; headers never change once written.
    pub(super) headers: Vec<Option<segment::SegmentHeader>>,
    /// Index in `segments` of the segment being read; `segments.len()` when done.
    pub(super) index: usize,
    /// The reader of that segment (`None` when done).
    pub(super) reader: Option<SegmentReader>,
    /// The bytes of the record at the cursor.
    pub(super) record: Vec<u8>,
    /// The segment is a compacted or recovered one and the records before its snapshot
    /// restate messages the fold already holds.
    pub(super) skipping_restated: bool,
    /// The segment is a compacted or recovered one whose history is not in the log.
    pub(super) restating: bool,
    /// The first sequence number from which the session's state is known.
    pub(super) available_from: u64,
    pub(super) view: SessionView,
    /// The format version of the segment being read.
    pub(super) version: u32,
    /// Check every record's link to the one before it (for `verify`).
    pub(super) check_chain: bool,
    /// The `prev` the next record must hold: the hash of the record before it (`None` where
    /// that record is not in the log: at the start of a compacted history).
    pub(super) chain: Option<Hash>,
    /// Where the record before the next one lies (segment index, offset).
    pub(super) previous: Option<(usize, u64)>,
    /// Links checked so far.
    pub(super) links: u64,
    /// For a fork: its forked segment (the segments before it are shared with its source,
    /// read silently: their events are the source's), and how many bytes of a shared segment
    /// belong to its history.
    pub(super) forks: ForkCuts,
    /// The session's data key, in an encrypted store.
    pub(super) key: Option<Arc<DataKey>>,
}

impl Cursor {
    /// A cursor over a session's segments, starting where its history can be read whole: at
    /// segment 1, or at the first compacted or recovered segment after the last gap.
    pub(super) fn new(
        fs: Arc<dyn FileSystem>,
        session_id: u64,
        key: Option<Arc<DataKey>>,
        segments: Vec<SegmentRef>,
    ) -> Result<Self> {
        let mut cursor = Cursor {
            key,
            fs,
            session_id,
            segments,
            headers: Vec::new(),
            index: 0,
            reader: None,
            record: Vec::new(),
            skipping_restated: false,
            restating: false,
            available_from: 0,
            view: SessionView::with_window("", 0),
            version: segment::FORMAT_VERSION,
            check_chain: false,
            chain: None,
            previous: None,
            links: 0,
            forks: ForkCuts::default(),
        };
        // Forks first: where the session's own segments begin, and the shares of segments
        // below forked ones (headers read without the file-name check, since a fork's shared
        // segments name their source).
        // A file gone since it was listed (a writer beside a read-only store compacted or
        // deleted the session) is that error, not a gap in the history: the caller may list
        // again.
        let mut headers = Vec::with_capacity(cursor.segments.len());
        for i in 0..cursor.segments.len() {
            match cursor.read_header(i) {
                Err(e) if e.is_file_gone() => return Err(e),
                read => headers.push(read.ok()),
            }
        }
        cursor.headers = headers;
        let headers = cursor.headers.clone();
        let numbers = cursor.segments.iter().map(|s| s.number);
        let forks = ForkCuts::of(numbers.zip(headers.iter().map(Option::as_ref)));
        // The history is whole from the first of the newest run of consecutive segment
        // numbers if that is segment 1; otherwise (a gap: compacted without keep_history,
        // or damage quarantined) it starts at the first compacted or recovered segment.
        let mut start = cursor.segments.len().saturating_sub(1);
        while start > 0
            && cursor.segments[start - 1].number.checked_add(1)
                == Some(cursor.segments[start].number)
        {
            start -= 1;
        }
        if cursor.segments.get(start).is_some_and(|s| s.number != 1) {
            let base = (start..cursor.segments.len()).find(|&i| {
                headers[i].as_ref().is_some_and(|h| {
                    matches!(h.kind, SegmentKind::Compacted | SegmentKind::Recovered)
                })
            });
            start = base.ok_or_else(|| Error::Corrupt {
                path: cursor.segments[start].path.clone(),
                offset: 0,
                reason: "the session's history has a gap before this segment".into(),
            })?;
        }
        // A newest segment whose header is not whole is one a crash (or a writer right now)
        // was creating: it holds nothing, and the segment before it is the newest.
        if let Some(last) = cursor.segments.len().checked_sub(1).filter(|&i| i > start) {
            let cut_short = |e: &Error| match e {
                Error::Corrupt { reason, .. } => reason == HEADER_CUT_SHORT,
                _ => false,
            };
            if cursor.header(last).as_ref().is_err_and(cut_short) {
                cursor.segments.pop();
                cursor.headers.pop();
            }
        }
        let whole = cursor.segments.get(start).is_some_and(|s| s.number == 1);
        cursor.segments.drain(..start);
        cursor.headers.drain(..start);
        cursor.forks = forks;
        // The session's key is its newest segment's; the chain starts at the key of the
        // session that wrote its first record.
        let first_key = headers
            .get(start)
            .and_then(|h| h.as_ref())
            .map(|h| h.key.clone());
        if let Some(newest) = headers.iter().rev().flatten().next() {
            cursor.view = SessionView::with_window(&newest.key, 0);
        }
        cursor.enter_segment()?;
        if whole {
            // The chain starts at the key of the session that wrote the first record (a
            // fork's first records are its source's).
            let key = first_key.unwrap_or_else(|| cursor.view.key.clone());
            cursor.chain = Some(chain_start(&key));
        }
        Ok(cursor)
    }

    /// The header of segment `index`, checked against its file name (a fork's shared
    /// segments name their source).
    pub(super) fn header(&self, index: usize) -> Result<segment::SegmentHeader> {
        let header = self.read_header(index)?;
        let segment = &self.segments[index];
        let inherited = self.forks.inherited(segment.number);
        if (header.session_id != self.session_id && !inherited) || header.segment != segment.number
        {
            return Err(Error::Corrupt {
                path: segment.path.clone(),
                offset: 0,
                reason: "header does not match the file name".into(),
            });
        }
        Ok(header)
    }

    /// The header of segment `index`, decoded.
    pub(super) fn read_header(&self, index: usize) -> Result<segment::SegmentHeader> {
        if let Some(Some(header)) = self.headers.get(index) {
            return Ok(header.clone());
        }
        let segment = self.segments.get(index).ok_or_else(|| Error::Corrupt {
            path: PathBuf::new(),
            offset: 0,
            reason: "no such segment".into(),
        })?;
        read_header(&*self.fs, segment, self.key.as_deref())
    }

    /// Reads the header of the segment at `index` and positions the cursor after it.
    pub(super) fn enter_segment(&mut self) -> Result<()> {
        self.reader = None;
        let Some(segment) = self.segments.get(self.index).cloned() else {
            return Ok(());
        };
        let header = match self.header(self.index) {
            Ok(header) => header,
            // The newest segment's header is not whole: a crash while it was created, or a
            // writer creating it right now. The history ends before it.
            Err(Error::Corrupt { reason, .. })
                if self.index + 1 == self.segments.len() && reason == HEADER_CUT_SHORT =>
            {
                self.index = self.segments.len();
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        let inherited = self.forks.inherited(segment.number);
        if self.view.key.is_empty() {
            self.view = SessionView::with_window(&header.key, 0);
        } else if self.view.key != header.key && !inherited {
            return Err(Error::Corrupt {
                path: self.segments[self.index].path.clone(),
                offset: 0,
                reason: "segment holds another session's key".into(),
            });
        }
        let base = matches!(header.kind, SegmentKind::Compacted | SegmentKind::Recovered);
        self.skipping_restated = base && self.index > 0;
        self.restating = base && self.index == 0;
        let start = segment::header_len(&header.key, segment::is_sealed(header.version));
        self.version = header.version;
        let cut = self.forks.cut(segment.number);
        self.reader = Some(SegmentReader::new(segment, start, cut, ReadPolicy::AUDIT));
        Ok(())
    }

    /// The session key (empty for a session with no segment).
    pub(crate) fn key(&self) -> &str {
        &self.view.key
    }

    /// The next record of the history, its bytes copied into `self.record`: its offset in
    /// segment `self.index`. `None` at the end of the session's history. A bad record in the
    /// session's newest segment with no good record anywhere after it is what a crash
    /// mid-write leaves (or a write in progress, seen by a reader beside the writer): the end
    /// of the history, as open treats it. Anywhere else it is damage.
    pub(super) fn next_record(&mut self) -> Result<Option<(u64, usize)>> {
        loop {
            let newest = self.index + 1 == self.segments.len();
            let Some(reader) = self.reader.as_mut() else {
                return Ok(None);
            };
            match reader.next(&*self.fs)? {
                Some(record) if !record.shared => {
                    self.record.clear();
                    self.record.extend_from_slice(record.bytes);
                    return Ok(Some((record.offset, record.frame.header.len())));
                }
                // The rest of a segment a fork shares is its source's.
                Some(_) => {}
                None => {
                    if let Some(SegmentEnd::Bad {
                        offset,
                        error,
                        torn,
                    }) = reader.end()
                    {
                        if newest && *torn {
                            self.index = self.segments.len();
                            self.reader = None;
                            return Ok(None);
                        }
                        let path = &reader.segment().path;
                        return Err(bad_record_error(path, *offset, error.clone()));
                    }
                }
            }
            self.index += 1;
            self.enter_segment()?;
        }
    }

    /// The message whose record is at `loc` (a `MessageLoc` of this cursor's view, whose
    /// `segment` is an index into `segments`).
    pub(super) fn message_at(&self, loc: &MessageLoc) -> Result<(u64, ChatMessage)> {
        let segment = self
            .segments
            .get(loc.segment as usize)
            .ok_or_else(|| Error::Corrupt {
                path: PathBuf::new(),
                offset: loc.offset(),
                reason: "message location outside the history".into(),
            })?;
        let mut bytes = Vec::new();
        read_segment(
            &*self.fs,
            segment,
            loc.offset(),
            loc.len as usize,
            &mut bytes,
        )?;
        let corrupt = |reason: String| Error::Corrupt {
            path: segment.path.clone(),
            offset: loc.offset(),
            reason,
        };
        let (frame, _) = decode_frame(&bytes).map_err(|e| corrupt(e.to_string()))?;
        let mut scratch = Vec::new();
        let payload = open_payload(&frame, self.key.as_deref(), &mut scratch).map_err(corrupt)?;
        let event = decode_event(payload).map_err(corrupt)?;
        match event.message(loc.index()) {
            Some((role, content)) => Ok((frame.seq, ChatMessage::new(role, content))),
            None => Err(corrupt("record holds no such message".into())),
        }
    }

    /// The session's next event, folded into the view, if its sequence number is at most
    /// `limit`; otherwise the cursor stays before it. `None` at the end, or beyond `limit`.
    pub(crate) fn next_event(&mut self, limit: u64) -> Result<Option<LogEvent>> {
        loop {
            let Some((offset, header_len)) = self.next_record()? else {
                return Ok(None);
            };
            let record = std::mem::take(&mut self.record);
            let folded = self.fold_record(offset, &record, header_len, limit);
            self.record = record;
            match folded? {
                Folded::Event(event) => return Ok(Some(event)),
                Folded::Silent => {}
                Folded::Beyond => {
                    // The cursor stays before it.
                    if let Some(reader) = self.reader.as_mut() {
                        reader.rewind(offset);
                    }
                    return Ok(None);
                }
            }
        }
    }

    /// Folds the record at `offset` of segment `self.index` (its bytes: `record`, which the
    /// reader checked, with a header of `header_len` bytes) into the view, unless its sequence
    /// number is past `limit`.
    fn fold_record(
        &mut self,
        record_offset: u64,
        record: &[u8],
        header_len: usize,
        limit: u64,
    ) -> Result<Folded> {
        let path = self.segments[self.index].path.clone();
        let corrupt = |reason: String| Error::Corrupt {
            path: path.clone(),
            offset: record_offset,
            reason,
        };
        let bytes = record;
        let frame = frame_fields(bytes, header_len).map_err(|e| corrupt(e.to_string()))?;
        let len = bytes.len();
        let at = RecordLoc {
            seq: frame.seq,
            segment: self.index as u32,
            offset: record_offset,
            len: len as u32,
        };
        segment::check_layout(self.version, &frame).map_err(&corrupt)?;
        let mut scratch = Vec::new(); // an encrypted store's opened payload
        let key = self.key.clone();
        let payload = open_payload(&frame, key.as_deref(), &mut scratch).map_err(&corrupt)?;
        let event = decode_event(payload).map_err(&corrupt)?;
        let (seq, ts) = (frame.seq, frame.ts_micros);
        // In a compacted generation whose history was read already, every record before
        // the snapshot restates what that history built. (`next_record` never returns a
        // record past a fork's cut.)
        let restated = self.skipping_restated && !matches!(event, Event::Snapshot(_));
        let shared = self.forks.inherited(self.segments[self.index].number);
        if seq > limit && !restated && !shared {
            return Ok(Folded::Beyond);
        }
        if self.check_chain {
            if self.check_link(frame.prev, at.offset)? {
                self.links += 1;
            }
            self.chain = Some(record_hash(bytes));
            self.previous = Some((self.index, at.offset));
        }
        if restated {
            // The fold already holds this message from the archived history.
            return Ok(Folded::Silent);
        }
        if shared {
            // A fork's shared history: folded, not reported (those are the source's
            // events).
            if matches!(event, Event::Snapshot(_)) {
                self.skipping_restated = false;
                self.restating = false;
            }
            self.view.apply(ts, &event, at).map_err(&corrupt)?;
            return Ok(Folded::Silent);
        }
        let last = self.view.messages.last().copied();
        let before = self.view.messages.len();
        let kind = if self.restating {
            match event {
                Event::Append { role, content } => EventKind::Restated {
                    message: ChatMessage::new(role, content),
                },
                _ => event_kind(&event, before, || self.old_message(last, &at))?,
            }
        } else {
            event_kind(&event, before, || self.old_message(last, &at))?
        };
        if let Event::Snapshot(_) = event {
            if self.restating {
                self.available_from = seq;
            }
            self.skipping_restated = false;
            self.restating = false;
        }
        self.view.apply(ts, &event, at).map_err(corrupt)?;
        Ok(Folded::Event(LogEvent {
            seq,
            time: to_time(ts),
            session: self.view.key.clone(),
            kind,
        }))
    }

    /// Checks that a record's `prev` is the hash of the record before it: `Ok(true)` when it
    /// is, `Ok(false)` when there is no link to check.
    pub(super) fn check_link(&self, prev: Option<Hash>, offset: u64) -> Result<bool> {
        let (Some(prev), Some(expected)) = (prev, self.chain) else {
            return Ok(false); // a version 1 record, or the first record of a compacted history
        };
        if prev == expected {
            return Ok(true);
        }
        let here = &self.segments[self.index].path;
        Err(match self.previous {
            Some((index, previous)) => Error::Corrupt {
                path: self.segments[index].path.clone(),
                offset: previous,
                reason: format!(
                    "hash chain broken: this record does not hash to the link held by the next \
                     record ({} at offset {offset}); a record was altered, inserted or removed",
                    here.display()
                ),
            },
            None => Error::Corrupt {
                path: here.clone(),
                offset,
                reason: "hash chain broken: the session's first record does not link to the \
                         start of its key's chain (records moved from another session?)"
                    .into(),
            },
        })
    }

    pub(super) fn old_message(
        &self,
        last: Option<MessageLoc>,
        at: &RecordLoc,
    ) -> Result<ChatMessage> {
        let loc = last.ok_or_else(|| Error::Corrupt {
            path: self.segments[self.index].path.clone(),
            offset: at.offset,
            reason: "update_last or remove_last on a session without messages".into(),
        })?;
        Ok(self.message_at(&loc)?.1)
    }

    /// The session's messages as the fold holds them now.
    pub(super) fn messages(&self) -> Result<Vec<TimestampedMessage>> {
        self.view
            .messages
            .iter()
            .map(|loc| {
                let (_, message) = self.message_at(loc)?;
                Ok(TimestampedMessage {
                    message,
                    created_at: Some(to_time(loc.created_at)),
                })
            })
            .collect()
    }
}
