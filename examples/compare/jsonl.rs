//! The JSONL store as agent runtimes run it today: one file per session, one JSON line per
//! message, appends open the file in append mode, `update_last` / `remove_last` rewrite the
//! file through a temporary file and a rename. Written for this comparison.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use chrono::Utc;
use sessionlog::{ChatMessage, SessionBackend, SessionMetadata};

/// A folder of `<key>.jsonl` files.
pub struct JsonlStore {
    dir: PathBuf,
    fsync: bool,
}

impl JsonlStore {
    /// A store in `dir`; with `fsync`, every append and rewrite is synced.
    pub fn open(dir: &Path, fsync: bool) -> JsonlStore {
        std::fs::create_dir_all(dir).unwrap();
        JsonlStore {
            dir: dir.to_owned(),
            fsync,
        }
    }

    fn path(&self, key: &str) -> PathBuf {
        // The lossy file names the JSONL stores use today.
        let safe: String = key
            .chars()
            .map(|c| {
                if c.is_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        self.dir.join(format!("{safe}.jsonl"))
    }

    fn rewrite(&self, key: &str, messages: &[ChatMessage]) -> std::io::Result<()> {
        let path = self.path(key);
        let tmp = path.with_extension("jsonl.tmp");
        let mut file = File::create(&tmp)?;
        let mut text = String::new();
        for m in messages {
            text.push_str(&serde_json::to_string(m).unwrap());
            text.push('\n');
        }
        file.write_all(text.as_bytes())?;
        if self.fsync {
            file.sync_data()?;
        }
        std::fs::rename(tmp, path)
    }
}

impl SessionBackend for JsonlStore {
    fn load(&self, session_key: &str) -> Vec<ChatMessage> {
        let Ok(file) = File::open(self.path(session_key)) else {
            return Vec::new();
        };
        BufReader::new(file)
            .lines()
            .map_while(Result::ok)
            .filter_map(|line| serde_json::from_str(&line).ok())
            .collect()
    }

    fn append(&self, session_key: &str, message: &ChatMessage) -> std::io::Result<()> {
        let mut line = serde_json::to_string(message).unwrap();
        line.push('\n');
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.path(session_key))?;
        file.write_all(line.as_bytes())?;
        if self.fsync {
            file.sync_data()?;
        }
        Ok(())
    }

    fn remove_last(&self, session_key: &str) -> std::io::Result<bool> {
        let mut messages = self.load(session_key);
        if messages.pop().is_none() {
            return Ok(false);
        }
        self.rewrite(session_key, &messages)?;
        Ok(true)
    }

    fn update_last(&self, session_key: &str, message: &ChatMessage) -> std::io::Result<bool> {
        let mut messages = self.load(session_key);
        let Some(last) = messages.last_mut() else {
            return Ok(false);
        };
        *last = message.clone();
        self.rewrite(session_key, &messages)?;
        Ok(true)
    }

    fn list_sessions(&self) -> Vec<String> {
        std::fs::read_dir(&self.dir)
            .map(|entries| {
                entries
                    .filter_map(Result::ok)
                    .filter_map(|e| {
                        e.file_name()
                            .to_str()
                            .and_then(|n| n.strip_suffix(".jsonl"))
                            .map(str::to_owned)
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    fn list_sessions_with_metadata(&self) -> Vec<SessionMetadata> {
        // What the JSONL stores do: stat each file and count its lines.
        self.list_sessions()
            .into_iter()
            .map(|key| {
                let path = self.path(&key);
                let modified = std::fs::metadata(&path)
                    .and_then(|m| m.modified())
                    .map(chrono::DateTime::<Utc>::from)
                    .unwrap_or_default();
                let count = File::open(&path)
                    .map(|f| BufReader::new(f).lines().count())
                    .unwrap_or(0);
                SessionMetadata {
                    key,
                    name: None,
                    created_at: modified,
                    last_activity: modified,
                    message_count: count,
                    agent_alias: None,
                    channel_id: None,
                    room_id: None,
                    sender_id: None,
                }
            })
            .collect()
    }
}
