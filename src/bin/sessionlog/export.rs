//! `sessionlog export`: a store's messages as JSON lines, one JSON document per session, or
//! Markdown people can read.

use std::io::Write;

use serde_json::json;
use sessionlog::{LogStore, SessionBackend, SessionMetadata, TimestampedMessage};

use super::{progress, session_keys, CliResult};

/// What `export` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum ExportFormat {
    /// One JSON line per message: session, role, content, created_at.
    Jsonl,
    /// One JSON document (a line) per session: its metadata and its messages.
    Json,
    /// A heading per session with its metadata, then each message under its role and time.
    Markdown,
}

/// `export`: the messages of session `session`, or of every session, in `format`.
pub(crate) fn export(store: &LogStore, session: Option<String>, format: ExportFormat) -> CliResult {
    let keys = session_keys(store, session)?;
    let bar = progress(keys.len(), "exporting");
    for key in keys {
        let messages = store.read_messages(&key)?;
        match format {
            ExportFormat::Jsonl => {
                for m in &messages {
                    let mut line = message_json(m);
                    line["session"] = json!(key);
                    outln!("{line}");
                }
            }
            ExportFormat::Json => outln!("{}", session_json(store, &key, &messages)),
            ExportFormat::Markdown => outln!("{}", markdown(store, &key, &messages)),
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok(())
}

/// A message as JSON: role, content, created_at.
fn message_json(m: &TimestampedMessage) -> serde_json::Value {
    let at = m.created_at.map(|t| t.to_rfc3339());
    json!({"role": m.message.role, "content": m.message.content, "created_at": at})
}

/// Session `key` as one JSON document: its metadata and its messages.
fn session_json(store: &LogStore, key: &str, messages: &[TimestampedMessage]) -> serde_json::Value {
    let meta = store.get_session_metadata(key);
    let field = |f: fn(&SessionMetadata) -> Option<String>| meta.as_ref().and_then(f);
    json!({
        "session": key,
        "name": field(|m| m.name.clone()),
        "agent_alias": field(|m| m.agent_alias.clone()),
        "channel_id": field(|m| m.channel_id.clone()),
        "room_id": field(|m| m.room_id.clone()),
        "sender_id": field(|m| m.sender_id.clone()),
        "created_at": field(|m| Some(m.created_at.to_rfc3339())),
        "last_activity": field(|m| Some(m.last_activity.to_rfc3339())),
        "messages": messages.iter().map(message_json).collect::<Vec<_>>(),
    })
}

/// Session `key` as Markdown: a heading, its metadata as a list, then each message under a
/// heading of its role and time, its text fenced (with a fence longer than any run of
/// backticks in it) so that nothing in a message can break the document's structure.
fn markdown(store: &LogStore, key: &str, messages: &[TimestampedMessage]) -> String {
    let mut out = format!("# Session {}\n\n", code_span(key));
    if let Some(meta) = store.get_session_metadata(key) {
        let fields = [
            ("name", meta.name),
            ("agent", meta.agent_alias),
            ("channel", meta.channel_id),
            ("room", meta.room_id),
            ("sender", meta.sender_id),
        ];
        for (label, value) in fields {
            if let Some(value) = value {
                out.push_str(&format!("- {label}: {}\n", one_line(&value)));
            }
        }
        out.push_str(&format!(
            "- created: {}\n- last activity: {}\n- messages: {}\n",
            meta.created_at.to_rfc3339(),
            meta.last_activity.to_rfc3339(),
            meta.message_count
        ));
    }
    for m in messages {
        let at = m.created_at.map(|t| t.to_rfc3339()).unwrap_or_default();
        let fence = "`".repeat(longest_backtick_run(&m.message.content).max(2) + 1);
        out.push_str(&format!(
            "\n## {} · {at}\n\n{fence}\n{}\n{fence}\n",
            one_line(&m.message.role),
            m.message.content
        ));
    }
    out
}

/// The most backticks in a row in `text`.
fn longest_backtick_run(text: &str) -> usize {
    text.split(|c| c != '`').map(str::len).max().unwrap_or(0)
}

/// `text` on one line, its line breaks shown as `\n`: a name or a role cannot start a heading
/// or a list of its own.
fn one_line(text: &str) -> String {
    text.replace('\r', "\\r").replace('\n', "\\n")
}

/// `text` on one line as a Markdown code span, delimited by more backticks than any run of
/// them inside (and a space on each side where it begins or ends with one, which Markdown
/// strips), so that a key cannot close the span.
fn code_span(text: &str) -> String {
    let line = one_line(text);
    let ticks = "`".repeat(longest_backtick_run(&line) + 1);
    let pad = if line.starts_with('`') || line.ends_with('`') {
        " "
    } else {
        ""
    };
    format!("{ticks}{pad}{line}{pad}{ticks}")
}
