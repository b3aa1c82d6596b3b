//! The `sessionlog` command: a demo of the store, and a look into a store's folder.

use std::path::PathBuf;
use std::process::ExitCode;

use std::io::Write;

use clap::{Parser, Subcommand};
use sessionlog::{ChatMessage, LogStore, SessionBackend, SessionContext};

/// Writes a line to standard output; a closed pipe ends the command instead of panicking.
macro_rules! outln {
    ($($arg:tt)*) => {
        writeln!(std::io::stdout(), $($arg)*)?
    };
}

#[derive(Parser)]
#[command(name = "sessionlog", version, about = "Look into a sessionlog store")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Build a small store in DIR (creating it), stream a reply, reopen it and print it.
    Demo {
        /// The store's folder.
        dir: PathBuf,
    },
    /// List the sessions of the store in DIR with their metadata.
    Ls {
        /// The store's folder.
        dir: PathBuf,
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
    },
    /// Compact one session, or every session.
    Compact {
        /// The store's folder.
        dir: PathBuf,
        /// The session key (all sessions if omitted).
        key: Option<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
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

type CliResult = Result<(), Box<dyn std::error::Error>>;

fn run(command: Command) -> CliResult {
    match command {
        Command::Demo { dir } => demo(dir),
        Command::Ls { dir } => {
            let store = open(&dir)?;
            print_sessions(&store)?;
            Ok(())
        }
        Command::Show { dir, key, tail } => {
            let store = open(&dir)?;
            if !store.session_exists(&key) {
                return Err(format!("no session {key:?} in {}", dir.display()).into());
            }
            let messages = match tail {
                Some(n) => store.read_tail(&key, n)?,
                None => store.read_messages(&key)?,
            };
            for m in messages {
                let at = m.created_at.map(|t| t.to_rfc3339()).unwrap_or_default();
                outln!("{at}  {:<9} {}", m.message.role, m.message.content);
            }
            Ok(())
        }
        Command::Compact { dir, key } => {
            let store = open(&dir)?;
            let keys = match key {
                Some(key) => vec![key],
                None => store.list_sessions(),
            };
            for key in &keys {
                store.compact_session(key)?;
            }
            outln!("compacted {} session(s)", keys.len());
            Ok(())
        }
    }
}

fn open(dir: &PathBuf) -> Result<LogStore, Box<dyn std::error::Error>> {
    if !dir.is_dir() {
        return Err(format!("{} is not a folder", dir.display()).into());
    }
    let store = LogStore::open(dir)?;
    for finding in &store.recovery_report().findings {
        eprintln!("recovery: {finding:?}");
    }
    Ok(store)
}

fn print_sessions(store: &LogStore) -> CliResult {
    outln!(
        "{:<28} {:<22} {:>5}  {:<20} {:<20} {:<8} alias",
        "KEY",
        "NAME",
        "MSGS",
        "CREATED",
        "LAST ACTIVITY",
        "STATE"
    );
    for meta in store.list_sessions_with_metadata() {
        let state = store
            .get_session_state(&meta.key)
            .ok()
            .flatten()
            .map(|s| s.state)
            .unwrap_or_default();
        outln!(
            "{:<28} {:<22} {:>5}  {:<20} {:<20} {:<8} {}",
            meta.key,
            meta.name.unwrap_or_default(),
            meta.message_count,
            meta.created_at.format("%Y-%m-%d %H:%M:%S"),
            meta.last_activity.format("%Y-%m-%d %H:%M:%S"),
            state,
            meta.agent_alias.unwrap_or_default()
        );
    }
    Ok(())
}

fn demo(dir: PathBuf) -> CliResult {
    let keys = ["telegram_alice", "discord.clamps/room-7/bob", "cli:local"];
    {
        let store = LogStore::open(&dir)?;
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
        store.compact_session(alice)?;
        outln!(
            "wrote {} sessions to {} ({} update_last calls streamed the reply)",
            keys.len(),
            dir.display(),
            reply.split_inclusive(' ').count()
        );
    }
    // Reopen: everything below is rebuilt from the segments on disk.
    let store = LogStore::open(&dir)?;
    outln!("\nreopened {}:\n", dir.display());
    print_sessions(&store)?;
    for key in keys {
        outln!("\n{key}:");
        for m in store.read_messages(key)? {
            let at = m.created_at.map(|t| t.to_rfc3339()).unwrap_or_default();
            outln!("  {at}  {:<9} {}", m.message.role, m.message.content);
        }
    }
    Ok(())
}
