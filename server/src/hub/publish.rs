//! What the hub publishes: one validated event for a topic, and why a
//! publish is refused. The body of `POST /publish` is decoded into these by
//! `api::publish`.

use super::topic::Topic;
use crate::wire::sse::Event;

/// Event types starting with this are the server's own notices.
pub const RESERVED_EVENT_PREFIX: &str = "stentor.";

/// One event to publish, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishRequest {
    pub topic: Topic,
    /// `id` is always `None`: the hub assigns it.
    pub event: Event,
    /// Delivered (live and on replay) only to streams whose token's
    /// `subscribe` selectors cover the topic.
    pub private: bool,
}

/// Why a publish is refused: the HTTP status, the field at fault (when one
/// is), and a sentence for the publisher.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishError {
    pub status: u16,
    pub field: Option<&'static str>,
    pub message: String,
    /// Seconds after which a retry may succeed (429, 503).
    pub retry_after_s: Option<u32>,
}

impl PublishError {
    pub fn new(status: u16, field: Option<&'static str>, message: impl Into<String>) -> Self {
        PublishError {
            status,
            field,
            message: message.into(),
            retry_after_s: (status == 503).then_some(1),
        }
    }

    pub(crate) fn bad(field: &'static str, message: impl Into<String>) -> Self {
        Self::new(400, Some(field), message)
    }

    /// The response body: `{"error":"...","field":"..."}` (`field` only when
    /// one field is at fault).
    pub fn to_json(&self) -> String {
        #[derive(serde::Serialize)]
        struct Body<'a> {
            error: &'a str,
            #[serde(skip_serializing_if = "Option::is_none")]
            field: Option<&'a str>,
        }
        let body = Body {
            error: &self.message,
            field: self.field,
        };
        // Serialising two strings cannot fail; the fallback keeps us panic-free.
        serde_json::to_string(&body)
            .unwrap_or_else(|_| String::from(r#"{"error":"publish refused"}"#))
    }

    /// The same error about element `index` of a batch.
    pub(crate) fn in_element(mut self, index: usize) -> Self {
        self.message = format!("events[{index}]: {}", self.message);
        self
    }
}

impl std::fmt::Display for PublishError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.field {
            Some(field) => write!(f, "{} ({field}): {}", self.status, self.message),
            None => write!(f, "{}: {}", self.status, self.message),
        }
    }
}

impl std::error::Error for PublishError {}
