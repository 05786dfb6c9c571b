//! Errors of the MoQT layer.

use tiermesh_proto::message::RequestErrorCode;

use super::CloseReason;

/// Why a MoQT operation failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// The transport could not connect or failed.
    #[error("transport: {0}")]
    Transport(String),
    /// The session state machine refused the call (not set up, GOAWAY received, request
    /// limit reached, unknown request, ...). Nothing was sent.
    #[error("refused by the session: {0}")]
    Session(#[from] tiermesh_proto::session::Error),
    /// The peer answered the request with REQUEST_ERROR.
    #[error("request refused by the peer ({code:?}): {reason}")]
    Rejected {
        /// The draft's error code.
        code: RequestErrorCode,
        /// The peer's reason phrase.
        reason: String,
        /// The Retry Interval: 0 means do not retry, else milliseconds plus one.
        retry_interval: u64,
    },
    /// The session is closed.
    #[error("session closed: {0}")]
    Closed(CloseReason),
    /// An object could not be written: the caller broke a draft rule (object IDs not
    /// increasing, content on a status object, ...).
    #[error("invalid object: {0}")]
    InvalidObject(#[from] tiermesh_proto::data::WriteError),
    /// The subscription or stream this call refers to has ended.
    #[error("the subscription or stream has ended")]
    Ended,
    /// The SETUP exchange did not begin in time (no control stream).
    #[error("no control stream within {0:?}")]
    SetupTimeout(std::time::Duration),
}

impl From<crate::transport::Error> for Error {
    fn from(e: crate::transport::Error) -> Self {
        Error::Transport(e.to_string())
    }
}
