//! The envelope every frame travels in, and decoding a frame into a typed
//! message in two steps (envelope first, then the payload for its `type`) so
//! a bad payload can be reported against the kind it claimed to be.

use serde::{Deserialize, Serialize};

use crate::messages::Message;

/// One WebSocket text frame as it appears on the wire:
/// `{"type": "<kind>", "id": "<ULID, optional>", "payload": {…}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    /// The message kind, e.g. `hello`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Correlates an RPC reply with its request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The kind-specific body; absent and `null` both mean "no fields".
    #[serde(default)]
    pub payload: serde_json::Value,
}

/// A decoded frame: the typed message and the envelope id it came with.
#[derive(Debug, Clone, PartialEq)]
pub struct Frame {
    /// The envelope id, set on RPC requests and their replies.
    pub id: Option<String>,
    /// The typed message.
    pub message: Message,
}

/// Why a text frame could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The frame is not JSON, or not an object with a string `type`.
    #[error("frame is not a valid envelope: {0}")]
    Envelope(#[source] serde_json::Error),
    /// The envelope is fine but its payload does not fit its `type`.
    #[error("malformed payload for `{kind}`: {source}")]
    Payload {
        /// The kind the envelope claimed.
        kind: &'static str,
        /// What serde disliked, naming the field.
        #[source]
        source: serde_json::Error,
    },
}

impl DecodeError {
    /// The kind the frame claimed, when its envelope could be read.
    pub fn kind(&self) -> Option<&'static str> {
        match self {
            DecodeError::Envelope(_) => None,
            DecodeError::Payload { kind, .. } => Some(kind),
        }
    }
}

impl Frame {
    /// A frame with no envelope id.
    pub fn new(message: impl Into<Message>) -> Self {
        Frame {
            id: None,
            message: message.into(),
        }
    }

    /// A frame carrying an envelope id (an RPC request or reply).
    pub fn with_id(id: impl Into<String>, message: impl Into<Message>) -> Self {
        Frame {
            id: Some(id.into()),
            message: message.into(),
        }
    }

    /// Decodes one text frame. Unknown kinds decode to [`Message::Unknown`]
    /// rather than failing, so older peers tolerate newer ones.
    pub fn decode(text: &str) -> Result<Frame, DecodeError> {
        let envelope: Envelope = serde_json::from_str(text).map_err(DecodeError::Envelope)?;
        Frame::from_envelope(envelope)
    }

    /// Decodes an already-parsed envelope.
    pub fn from_envelope(envelope: Envelope) -> Result<Frame, DecodeError> {
        let message = Message::from_parts(&envelope.kind, envelope.payload)?;
        Ok(Frame {
            id: envelope.id,
            message,
        })
    }

    /// The envelope for this frame.
    pub fn to_envelope(&self) -> Envelope {
        Envelope {
            kind: self.message.kind().to_owned(),
            id: self.id.clone(),
            payload: self.message.payload(),
        }
    }

    /// Encodes this frame as the JSON text sent on the wire.
    pub fn encode(&self) -> String {
        // Serialising a `Value`-backed envelope cannot fail: every map key is
        // a string and there are no non-finite floats we produce ourselves.
        serde_json::to_string(&self.to_envelope()).unwrap_or_else(|_| {
            format!(
                r#"{{"type":"error","payload":{{"code":"internal","message":"could not encode a {} frame"}}}}"#,
                self.message.kind()
            )
        })
    }
}
