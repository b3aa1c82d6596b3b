//! The message type agents store.

use serde::{Deserialize, Serialize};

/// One chat message: a role (`system`, `user`, `assistant`, `tool`, or any other string) and
/// its content. Serialises to JSON as `{"role": .., "content": ..}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// Who spoke.
    pub role: String,
    /// What was said.
    pub content: String,
}

impl ChatMessage {
    /// A message with the given role and content.
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> ChatMessage {
        ChatMessage {
            role: role.into(),
            content: content.into(),
        }
    }

    /// A `system` message.
    pub fn system(content: impl Into<String>) -> ChatMessage {
        ChatMessage::new("system", content)
    }

    /// A `user` message.
    pub fn user(content: impl Into<String>) -> ChatMessage {
        ChatMessage::new("user", content)
    }

    /// An `assistant` message.
    pub fn assistant(content: impl Into<String>) -> ChatMessage {
        ChatMessage::new("assistant", content)
    }

    /// A `tool` message.
    pub fn tool(content: impl Into<String>) -> ChatMessage {
        ChatMessage::new("tool", content)
    }
}
