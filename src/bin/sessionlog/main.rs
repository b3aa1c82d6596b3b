//! The `sessionlog` command: look into a store, check it, compact it, export it, import the
//! JSONL folders agents keep today, and run the demo.
//!
//! Read-only commands (`ls`, `show`, `replay`, `at`, `search`, `verify`, `stats`, `export`)
//! open the store with
//! `LogStore::open_read_only`: they work while an agent has the store open and change no byte.
//! (`search` reads the search index's files and indexes in memory what they lack; a writable
//! open, or `sessionlog reindex`, saves the index.)
//! Exit status: 0 on success (for `verify`: the store is sound), 1 when `verify` found damage
//! or `archive`/`unarchive` found no such session, 2 on a usage or I/O error.
//!
//! An encrypted store's key comes from `--key-file PATH` (a file holding 64 hexadecimal
//! digits), else from the file named by `SESSIONLOG_KEY_FILE`, else from `SESSIONLOG_KEY` (the
//! digits themselves); `sessionlog keygen` makes one.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use serde_json::json;
use sessionlog::{
    ChatMessage, EncryptionKey, EventFilter, EventKind, LogStore, MessageQuery, Options,
    SessionBackend, SessionContext, TimestampedMessage, MESSAGE_LIMIT_DEFAULT,
};

/// Writes a line to standard output; a closed pipe ends the command instead of panicking.
macro_rules! outln {
    ($($arg:tt)*) => {
        writeln!(std::io::stdout(), $($arg)*)?
    };
}

mod export;
mod import;
mod position;
#[cfg(feature = "replication")]
mod replica;
mod search;
mod sessions;
mod verify;

use export::{export, ExportFormat};
use position::Position;
use search::{search, search_messages};
use sessions::{print_sessions, session_keys, set_archived, stats};
use verify::{describe, verify};

#[derive(Parser)]
#[command(
    name = "sessionlog",
    version,
    about = "Look into, check and fill a sessionlog store"
)]
struct Cli {
    /// The key of an encrypted store (created encrypted if new): a file holding 64
    /// hexadecimal digits. Without it, the file named by SESSIONLOG_KEY_FILE, or the digits in
    /// SESSIONLOG_KEY, if set.
    #[arg(long, global = true, value_name = "PATH")]
    key_file: Option<PathBuf>,
    /// How many recent message ids each session's window keeps (Options::idempotency_window)
    /// while this command writes, compacts or closes the store. A compaction keeps only this
    /// many ids, so pass your application's value if it is larger than the default.
    #[arg(long, global = true, value_name = "N", default_value_t = sessionlog::IDEMPOTENCY_WINDOW_DEFAULT)]
    idempotency_window: usize,
    /// Keep the segments a compaction replaces in archive/ (Options::keep_history), as your
    /// application does if it sets it: without it, a command that compacts, or an open that
    /// finishes a compaction a crash cut short, removes them.
    #[arg(long, global = true)]
    keep_history: bool,
    /// Reclaim for good the deleted sessions older than this many hours
    /// (Options::tombstone_retention) when a command opens the store to write. Without it the
    /// command reclaims none, whatever their age: it cannot know your application's undo
    /// window.
    #[arg(long, global = true, value_name = "HOURS")]
    tombstone_retention_hours: Option<u64>,
    /// Open a store whose folder other users may write to (Options::allow_shared_folder),
    /// which is refused otherwise.
    #[arg(long, global = true)]
    allow_shared_folder: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print a new random encryption key (64 hexadecimal digits) for --key-file or
    /// SESSIONLOG_KEY. Keep it where your program keeps its secrets: a store cannot be read
    /// without it.
    Keygen,
    /// Build a small store in DIR (creating it), stream a reply, reopen it and print it.
    Demo {
        /// The store's folder.
        dir: PathBuf,
    },
    /// List the sessions: name, messages, created, last activity, state, alias.
    Ls {
        /// The store's folder.
        dir: PathBuf,
        /// One JSON object a line instead of a table.
        #[arg(long)]
        json: bool,
        /// List the archived sessions instead (left out otherwise).
        #[arg(long)]
        archived: bool,
    },
    /// Archive a session: it keeps everything but leaves `ls` and `search` until unarchived
    /// or appended to.
    Archive {
        /// The store's folder.
        dir: PathBuf,
        /// The session key.
        key: String,
    },
    /// Bring an archived session back into `ls` and `search`.
    Unarchive {
        /// The store's folder.
        dir: PathBuf,
        /// The session key.
        key: String,
    },
    /// Print a session's messages with their times.
    Show {
        /// The store's folder.
        dir: PathBuf,
        /// The session key.
        key: String,
        /// Print only the last N messages.
        #[arg(long)]
        tail: Option<usize>,
        /// One JSON object a line instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Messages holding any of the words, best match first (BM25), each with a snippet; with
    /// `--sessions`, the sessions whose messages, key or name hold one (the trait's search).
    Search {
        /// The store's folder.
        dir: PathBuf,
        /// Words; a `"quoted phrase"` or a word of several tokens (`new-york`) must appear as
        /// written.
        #[arg(required = true)]
        words: Vec<String>,
        /// At most this many hits (default 20; with `--sessions`, sessions, default 50).
        #[arg(long)]
        limit: Option<usize>,
        /// Only this session's messages.
        #[arg(long)]
        session: Option<String>,
        /// List sessions, as the trait's search does, instead of messages.
        #[arg(long)]
        sessions: bool,
        /// One JSON object a line instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Build the search index again from the log (never needed for correct answers; gives
    /// back the space of an index grown through many changes).
    Reindex {
        /// The store's folder.
        dir: PathBuf,
    },
    /// The event log, one event a line, in commit order: for audit.
    Replay {
        /// The store's folder.
        dir: PathBuf,
        /// Only this session's events.
        #[arg(long)]
        session: Option<String>,
        /// From this sequence number or time (RFC 3339, e.g. 2026-11-24T10:00:00Z) on.
        #[arg(long, value_name = "SEQ|TIME")]
        since: Option<Position>,
        /// Up to this sequence number or time.
        #[arg(long, value_name = "SEQ|TIME")]
        until: Option<Position>,
        /// One JSON object a line instead of text.
        #[arg(long)]
        json: bool,
    },
    /// A session as it was right after an event, or at a time.
    At {
        /// The store's folder.
        dir: PathBuf,
        /// The session key.
        key: String,
        /// Right after the event with this sequence number.
        #[arg(long, conflicts_with = "time", required_unless_present = "time")]
        seq: Option<u64>,
        /// At this time (RFC 3339): after the session's last event written at or before it.
        #[arg(long)]
        time: Option<chrono::DateTime<chrono::Utc>>,
        /// One JSON object a line instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Check every record's checksum, the archive's too, and that no session ends before the
    /// point its anchor records. Exit status 0 when sound, 1 when damage was found.
    Verify {
        /// The store's folder.
        dir: PathBuf,
        /// Without a value: print the store's root hash (as of its last anchor) to keep
        /// elsewhere. With one: fail unless the store's history holds that root (a folder
        /// rolled back to a copy older than it does not).
        #[arg(long, num_args = 0..=1, default_missing_value = "", value_name = "HASH")]
        root: Option<String>,
    },
    /// Sessions, messages, and bytes live and dead, per session and in total.
    Stats {
        /// The store's folder.
        dir: PathBuf,
        /// One JSON object a line instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Compact one session, or every session.
    Compact {
        /// The store's folder.
        dir: PathBuf,
        /// The session key (all sessions if omitted).
        key: Option<String>,
    },
    /// Every message: as a JSON line each (session, role, content, created_at; the default),
    /// as Markdown people can read, or as one JSON document per session.
    Export {
        /// The store's folder.
        dir: PathBuf,
        /// Only this session.
        #[arg(long)]
        session: Option<String>,
        /// What to write.
        #[arg(long, value_enum, default_value_t = ExportFormat::Jsonl)]
        format: ExportFormat,
    },
    /// Import histories from the stores agents use today: a folder of `<key>.jsonl` files (one
    /// {"role","content"} object a line), or a SQLite database (`sessions` and
    /// `session_metadata` tables; needs a build with `--features sqlite`). Importing twice adds
    /// nothing; the source is only read.
    #[command(group(clap::ArgGroup::new("source").required(true)))]
    Import {
        /// The store's folder (created if missing).
        dir: PathBuf,
        /// The JSONL folder to import.
        #[arg(long = "from-jsonl", value_name = "PATH", group = "source")]
        from_jsonl: Option<PathBuf>,
        /// The SQLite database to import.
        #[arg(long = "from-sqlite", value_name = "PATH", group = "source")]
        from_sqlite: Option<PathBuf>,
    },
    /// Ship what the store wrote since the last backup to object storage, once (for cron):
    /// URL is s3://bucket/prefix (credentials from the AWS_* variables) or file:///path. The
    /// store must not be open in another process; a running agent ships with
    /// Options::replicate_to instead.
    #[cfg(feature = "replication")]
    Backup {
        /// The store's folder.
        dir: PathBuf,
        /// Where to ship.
        url: String,
    },
    /// Rebuild in DIR (new or empty) the store shipped to URL, as of its latest batch or of a
    /// point, and verify it before saying done.
    #[cfg(feature = "replication")]
    Restore {
        /// Where the store shipped.
        url: String,
        /// The folder to rebuild it in.
        dir: PathBuf,
        /// As of right after this sequence number, or at this time (RFC 3339).
        #[arg(long = "at", value_name = "SEQ|TIME")]
        at: Option<Position>,
        /// Ship on from the restored store to URL under a new generation, fencing the store
        /// that shipped there (only with the latest point).
        #[arg(long)]
        take_over: bool,
    },
}

type CliResult<T = ()> = Result<T, Box<dyn std::error::Error>>;

/// The encryption key from `--key-file`, `SESSIONLOG_KEY_FILE` or `SESSIONLOG_KEY`.
fn encryption_key(key_file: Option<PathBuf>) -> CliResult<Option<EncryptionKey>> {
    let file = key_file.or_else(|| std::env::var_os("SESSIONLOG_KEY_FILE").map(PathBuf::from));
    if let Some(file) = file {
        // A key is 64 digits: a few KiB at most are read (never all of `/dev/zero`).
        let mut text = zeroize::Zeroizing::new(String::new());
        std::fs::File::open(&file)
            .and_then(|f| {
                std::io::Read::read_to_string(&mut std::io::Read::take(f, 4096), &mut text)
            })
            .map_err(|e| format!("reading the key file {}: {e}", file.display()))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&file)?.permissions().mode();
            if mode & 0o077 != 0 {
                eprintln!(
                    "warning: {} may be read by other users (mode {:o}); chmod 600 it",
                    file.display(),
                    mode & 0o777
                );
            }
        }
        let key = EncryptionKey::from_hex(&text)
            .map_err(|e| format!("the key in {}: {e}", file.display()))?;
        return Ok(Some(key));
    }
    match std::env::var("SESSIONLOG_KEY") {
        Ok(text) => {
            let key = EncryptionKey::from_hex(&zeroize::Zeroizing::new(text))
                .map_err(|e| format!("the key in SESSIONLOG_KEY: {e}"))?;
            Ok(Some(key))
        }
        Err(std::env::VarError::NotUnicode(_)) => {
            Err("the key in SESSIONLOG_KEY is not text: it holds 64 hexadecimal digits".into())
        }
        Err(std::env::VarError::NotPresent) => Ok(None),
    }
}

/// Opens (creating it if missing) the store in `dir` with the command's options (the
/// encryption key, if any), and prints what its open found and repaired.
fn open_store(dir: &Path, options: &Options) -> sessionlog::Result<LogStore> {
    let store = LogStore::open_with(dir, options.clone())?;
    note_findings(&store);
    Ok(store)
}

/// Prints what the store's open found (damage set aside, a torn tail cut, an erasure
/// finished, ...), one `note:` line each.
fn note_findings(store: &LogStore) {
    for finding in &store.recovery_report().findings {
        eprintln!("note: {}", describe(finding));
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let encryption = match &cli.command {
        // A new key needs no old one (a bad SESSIONLOG_KEY must not stop keygen).
        Command::Keygen => Ok(None),
        _ => encryption_key(cli.key_file),
    };
    // What the application's options keep, the command must not take away: no background
    // compaction, no deleted session reclaimed unless asked, history kept if asked.
    let tombstone_retention = cli
        .tombstone_retention_hours
        .map_or(Duration::MAX, |hours| {
            Duration::from_secs(hours.saturating_mul(3600))
        });
    let options = encryption.map(|encryption| Options {
        encryption,
        idempotency_window: cli.idempotency_window,
        keep_history: cli.keep_history,
        allow_shared_folder: cli.allow_shared_folder,
        tombstone_retention,
        auto_compact: false,
        ..Options::default()
    });
    match options.and_then(|options| run(cli.command, &options)) {
        Ok(code) => code,
        Err(e) if is_broken_pipe(&*e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sessionlog: {e}");
            let mut source = std::error::Error::source(&*e);
            while let Some(cause) = source {
                eprintln!("  caused by: {cause}");
                source = cause.source();
            }
            ExitCode::from(2)
        }
    }
}

fn is_broken_pipe(e: &(dyn std::error::Error + 'static)) -> bool {
    e.downcast_ref::<std::io::Error>()
        .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
}

fn run(command: Command, options: &Options) -> CliResult<ExitCode> {
    match command {
        Command::Keygen => outln!("{}", *EncryptionKey::generate()?.to_hex()),
        #[cfg(feature = "replication")]
        Command::Backup { dir, url } => replica::backup(&dir, &url, options)?,
        #[cfg(feature = "replication")]
        Command::Restore {
            url,
            dir,
            at,
            take_over,
        } => replica::restore(&url, &dir, at, take_over, options)?,
        Command::Demo { dir } => demo(dir, options)?,
        Command::Ls {
            dir,
            json,
            archived,
        } => print_sessions(&read_only(&dir, options)?, json, archived)?,
        Command::Archive { dir, key } => return set_archived(&dir, &key, true, options),
        Command::Unarchive { dir, key } => return set_archived(&dir, &key, false, options),
        Command::Show {
            dir,
            key,
            tail,
            json,
        } => show(&read_only(&dir, options)?, &dir, &key, tail, json)?,
        Command::Search {
            dir,
            words,
            limit,
            session,
            sessions: true,
            json,
        } => {
            if session.is_some() {
                return Err("--session lists messages: leave out --sessions".into());
            }
            search(
                &read_only(&dir, options)?,
                &words,
                limit.unwrap_or(50),
                json,
            )?
        }
        Command::Search {
            dir,
            words,
            limit,
            session,
            sessions: false,
            json,
        } => {
            let mut query = MessageQuery::new(words.join(" "));
            query.limit = limit.unwrap_or(MESSAGE_LIMIT_DEFAULT);
            query.session = session;
            search_messages(&read_only(&dir, options)?, &query, json)?
        }
        Command::Reindex { dir } => {
            let store = existing(&dir, |d| open_store(d, options))?;
            store.reindex()?;
            outln!("reindexed {} session(s)", store.list_sessions().len());
            store.close()?;
        }
        Command::Replay {
            dir,
            session,
            since,
            until,
            json,
        } => {
            let (from_seq, from_time) = Position::split(since);
            let (to_seq, to_time) = Position::split(until);
            let filter = EventFilter {
                session,
                from_seq,
                to_seq,
                from_time,
                to_time,
            };
            replay(&read_only(&dir, options)?, filter, json)?;
        }
        Command::At {
            dir,
            key,
            seq,
            time,
            json,
        } => at(&read_only(&dir, options)?, &key, seq, time, json)?,
        Command::Verify { dir, root } => return verify(&dir, root.as_deref(), options),
        Command::Stats { dir, json } => stats(&read_only(&dir, options)?, json)?,
        Command::Compact { dir, key } => compact(&dir, key, options)?,
        Command::Export {
            dir,
            session,
            format,
        } => export(&read_only(&dir, options)?, session, format)?,
        Command::Import {
            dir,
            from_jsonl,
            from_sqlite,
        } => {
            if let Some(from) = from_jsonl {
                return import::import_jsonl(&dir, &from, options);
            }
            if let Some(from) = from_sqlite {
                return import_sqlite(&dir, &from, options);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `show`: a session's messages, or its last `tail` ones.
fn show(store: &LogStore, dir: &Path, key: &str, tail: Option<usize>, json: bool) -> CliResult {
    if !store.session_exists(key) {
        return Err(format!("no session {key:?} in {}", dir.display()).into());
    }
    let messages = match tail {
        Some(n) => store.read_tail(key, n)?,
        None => store.read_messages(key)?,
    };
    for m in messages {
        print_message(&m, json)?;
    }
    Ok(())
}

/// `at`: session `key` right after the event `seq`, or at `time`.
fn at(
    store: &LogStore,
    key: &str,
    seq: Option<u64>,
    time: Option<chrono::DateTime<chrono::Utc>>,
    json: bool,
) -> CliResult {
    let seq = match (seq, time) {
        (Some(seq), _) => Some(seq),
        (None, Some(time)) => last_seq_until(store, key, time)?,
        (None, None) => return Err("give --seq or --time".into()),
    };
    let state = match seq {
        Some(seq) => store.load_at(key, seq)?,
        None => None,
    };
    let Some(state) = state else {
        return Err(format!(
            "session {key:?} did not exist then (a deleted session's history goes when \
             it is reclaimed)"
        )
        .into());
    };
    let meta = &state.metadata;
    if json {
        outln!(
            "{}",
            json!({"key": meta.key, "seq": seq, "name": meta.name, "agent_alias": meta.agent_alias,
                "channel_id": meta.channel_id, "room_id": meta.room_id, "sender_id": meta.sender_id,
                "state": state.state.state, "turn_id": state.state.turn_id,
                "created_at": meta.created_at.to_rfc3339(),
                "last_activity": meta.last_activity.to_rfc3339(),
                "messages": meta.message_count})
        );
    } else {
        outln!(
            "{} after event {}: {} message(s), name {:?}, state {}",
            meta.key,
            seq.unwrap_or_default(),
            meta.message_count,
            meta.name.as_deref().unwrap_or(""),
            state.state.state
        );
    }
    for m in state.messages {
        print_message(&m, json)?;
    }
    Ok(())
}

/// The sequence number of session `key`'s last event written at or before `time`, if any.
fn last_seq_until(
    store: &LogStore,
    key: &str,
    time: chrono::DateTime<chrono::Utc>,
) -> CliResult<Option<u64>> {
    let filter = EventFilter {
        to_time: Some(time),
        ..EventFilter::session(key)
    };
    let mut last = None;
    for event in store.events(filter)? {
        last = Some(event?.seq);
    }
    Ok(last)
}

/// `compact`: compacts session `key`, or every session, and prints the bytes reclaimed.
fn compact(dir: &Path, key: Option<String>, options: &Options) -> CliResult {
    let store = existing(dir, |d| open_store(d, options))?;
    let keys = session_keys(&store, key)?;
    let before: u64 = store.stats().iter().map(|s| s.dead_bytes).sum();
    let bar = progress(keys.len(), "compacting");
    for key in &keys {
        store.compact_session(key)?;
        bar.inc(1);
    }
    bar.finish_and_clear();
    let after: u64 = store.stats().iter().map(|s| s.dead_bytes).sum();
    outln!(
        "compacted {} session(s), reclaimed {} bytes",
        keys.len(),
        before.saturating_sub(after)
    );
    store.close()?;
    Ok(())
}

fn print_message(m: &TimestampedMessage, json: bool) -> CliResult {
    let at = m.created_at.map(|t| t.to_rfc3339()).unwrap_or_default();
    if json {
        let line = json!({"role": m.message.role, "content": m.message.content, "created_at": at});
        outln!("{line}");
    } else {
        outln!("{at}  {:<9} {}", m.message.role, m.message.content);
    }
    Ok(())
}

/// One line per event; with `json`, the event's fields as one JSON object.
fn replay(store: &LogStore, filter: EventFilter, json: bool) -> CliResult {
    for event in store.events(filter)? {
        let event = event?;
        if json {
            let mut line = serde_json::to_value(&event.kind)?;
            if let Some(fields) = line.as_object_mut() {
                fields.insert("seq".into(), json!(event.seq));
                fields.insert("time".into(), json!(event.time.to_rfc3339()));
                fields.insert("session".into(), json!(event.session));
            }
            outln!("{line}");
        } else {
            outln!(
                "{:>8}  {}  {}  {}",
                event.seq,
                event
                    .time
                    .to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
                event.session,
                summary(&event.kind)
            );
        }
    }
    Ok(())
}

/// An event in a few words, for the text output of `replay`.
fn summary(kind: &EventKind) -> String {
    let quote = |text: &str| {
        let mut short: String = text.chars().take(60).collect();
        if short.len() < text.len() {
            short.push('…');
        }
        format!("{short:?}")
    };
    let message = |m: &ChatMessage| format!("{} {}", m.role, quote(&m.content));
    let option = |value: &Option<String>| value.as_deref().map_or("-".to_owned(), quote);
    match kind {
        EventKind::Append { message: m } => format!("append {}", message(m)),
        EventKind::AppendBatch { messages } => {
            let each: Vec<String> = messages.iter().map(message).collect();
            format!("append_batch [{}]", each.join(", "))
        }
        EventKind::AppendOnce {
            message: m,
            message_id,
        } => format!("append_once {} id {}", message(m), quote(message_id)),
        EventKind::AppendBatchOnce { messages, batch_id } => {
            let each: Vec<String> = messages.iter().map(message).collect();
            format!(
                "append_batch_once [{}] id {}",
                each.join(", "),
                quote(batch_id)
            )
        }
        EventKind::Archive => "archive".into(),
        EventKind::Unarchive => "unarchive".into(),
        EventKind::UpdateLast { old, new } => {
            format!("update_last {} (was {})", message(new), quote(&old.content))
        }
        EventKind::RemoveLast { removed } => format!("remove_last {}", message(removed)),
        EventKind::Clear { removed } => format!("clear ({removed} messages)"),
        EventKind::Delete => "delete".into(),
        EventKind::UndoClear => "undo_clear".into(),
        EventKind::Restore => "restore".into(),
        EventKind::Trimmed { rule, removed } => {
            format!("retention ({rule:?}) dropped the {removed} oldest messages")
        }
        EventKind::Expired { rule, removed } => {
            format!("retention ({rule:?}) deleted the session ({removed} messages)")
        }
        EventKind::Name { name } => format!("name {}", option(name)),
        EventKind::Alias { alias } => format!("alias {}", option(alias)),
        EventKind::Context {
            channel_id,
            room_id,
            sender_id,
        } => format!(
            "context channel {} room {} sender {}",
            option(channel_id),
            option(room_id),
            option(sender_id)
        ),
        EventKind::State { state, turn_id } => format!("state {state} turn {}", option(turn_id)),
        EventKind::Compaction { messages } => format!("compaction ({messages} live messages)"),
        EventKind::Restated { message: m } => format!("restated {}", message(m)),
        EventKind::Erased {
            session_id,
            whole_session: true,
        } => format!("erased session #{session_id:x}"),
        EventKind::Erased {
            session_id,
            whole_session: false,
        } => format!("erased the history of session #{session_id:x} before its compaction"),
        EventKind::Gap { from, to } => {
            format!("numbers {from} to {to} name no event (a crash took them, or they were unused)")
        }
        other => format!("{other:?}"),
    }
}

#[cfg(feature = "sqlite")]
fn import_sqlite(dir: &Path, from: &Path, options: &Options) -> CliResult<ExitCode> {
    import::import_sqlite(dir, from, options)
}

#[cfg(not(feature = "sqlite"))]
fn import_sqlite(_dir: &Path, _from: &Path, _options: &Options) -> CliResult<ExitCode> {
    Err("this sessionlog was built without SQLite import; build it with `--features sqlite`".into())
}

/// A progress bar on standard error when it is a terminal; a hidden one otherwise.
fn progress(len: usize, what: &'static str) -> indicatif::ProgressBar {
    if !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(len as u64);
    if let Ok(style) = indicatif::ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} {eta}")
    {
        bar.set_style(style);
    }
    bar.set_message(what);
    bar
}

/// The file every store's folder holds from its first open on (`docs/FORMAT.md`, "The LOCK
/// file and the sequence floor").
const STORE_LOCK_FILE: &str = "LOCK";

/// Opens an existing store's folder (never creating one by mistake, nor making a store of a
/// folder that is not one).
fn existing(
    dir: &Path,
    open: impl FnOnce(&Path) -> sessionlog::Result<LogStore>,
) -> CliResult<LogStore> {
    match std::fs::metadata(dir) {
        Ok(meta) if meta.is_dir() => {}
        Ok(_) => return Err(format!("{} is not a folder", dir.display()).into()),
        Err(e) => return Err(format!("{}: {e}", dir.display()).into()),
    }
    // Every store has its LOCK file from its first open on (a restore writes one too).
    if std::fs::symlink_metadata(dir.join(STORE_LOCK_FILE)).is_err() {
        return Err(format!(
            "{} is not a sessionlog store (it has no {} file); check the path",
            dir.display(),
            STORE_LOCK_FILE
        )
        .into());
    }
    Ok(open(dir)?)
}

/// Opens the store in `dir` read-only, and prints what its open found.
fn read_only(dir: &Path, options: &Options) -> CliResult<LogStore> {
    let store = existing(dir, |d| LogStore::open_read_only_with(d, options.clone()))?;
    note_findings(&store);
    Ok(store)
}

fn demo(dir: PathBuf, options: &Options) -> CliResult {
    let keys = ["telegram_alice", "discord.clamps/room-7/bob", "cli:local"];
    {
        let store = open_store(&dir, options)?;
        for key in keys {
            store.delete_session(key)?; // the demo starts over each run
        }
        let alice = keys[0];
        store.set_session_name(alice, "weekend-trip")?;
        store.set_session_agent_alias(alice, "planner")?;
        store.set_session_context(
            alice,
            SessionContext {
                channel_id: Some("telegram.main"),
                room_id: None,
                sender_id: Some("alice"),
            },
        )?;
        store.append(alice, &ChatMessage::system("You plan trips."))?;
        store.append(alice, &ChatMessage::user("Find me a cabin near the lake."))?;
        store.set_session_state(alice, "running", Some("turn-1"))?;
        // Stream the reply into the last message, as an agent does while tokens arrive.
        store.append(alice, &ChatMessage::assistant(""))?;
        let reply = "Three cabins are free this weekend: Birch, Pine and Heron.";
        let mut streamed = String::new();
        for word in reply.split_inclusive(' ') {
            streamed.push_str(word);
            store.update_last(alice, &ChatMessage::assistant(streamed.clone()))?;
        }
        store.set_session_state(alice, "idle", None)?;

        let bob = keys[1];
        store.append(bob, &ChatMessage::user("what's the build status?"))?;
        store.append(bob, &ChatMessage::assistant("checking..."))?;
        store.remove_last(bob)?; // a failed turn, rolled back
        store.append(bob, &ChatMessage::assistant("All green."))?;

        let local = keys[2];
        store.append(local, &ChatMessage::user("scratch"))?;
        store.clear_messages(local)?;
        outln!(
            "wrote {} sessions to {} ({} update_last calls streamed the reply)",
            keys.len(),
            dir.display(),
            reply.split_inclusive(' ').count()
        );
        store.close()?;
    }
    // Reopen: everything below is read back from the store on disk.
    let store = open_store(&dir, options)?;
    outln!("\nreopened {}:\n", dir.display());
    print_sessions(&store, false, false)?;
    for key in keys {
        outln!("\n{key}:");
        for m in store.read_messages(key)? {
            print_message(&m, false)?;
        }
    }
    outln!("\nthe event log (sessionlog replay {}):\n", dir.display());
    replay(&store, EventFilter::all(), false)?;
    Ok(())
}
