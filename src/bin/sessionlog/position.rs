//! A point in the log as the command line names it.

/// A point in the log: a sequence number or a time.
#[derive(Debug, Clone, Copy)]
pub(super) enum Position {
    Seq(u64),
    Time(chrono::DateTime<chrono::Utc>),
}

impl std::str::FromStr for Position {
    type Err = String;

    fn from_str(text: &str) -> Result<Position, String> {
        if let Ok(seq) = text.parse() {
            return Ok(Position::Seq(seq));
        }
        chrono::DateTime::parse_from_rfc3339(text)
            .map(|t| Position::Time(t.to_utc()))
            .map_err(|e| format!("{text:?} is neither a sequence number nor an RFC 3339 time: {e}"))
    }
}

impl Position {
    /// A bound of `replay` as the event filter's sequence number and time: one of them, or
    /// neither.
    pub(super) fn split(
        position: Option<Position>,
    ) -> (Option<u64>, Option<chrono::DateTime<chrono::Utc>>) {
        match position {
            Some(Position::Seq(seq)) => (Some(seq), None),
            Some(Position::Time(time)) => (None, Some(time)),
            None => (None, None),
        }
    }
}
