//! A raw MoQT control stream, for tests that speak the protocol themselves (messages the
//! client library would not send, streams stopped the moment they open). Shared by the
//! client's and the relay's tests.

#![allow(dead_code)]

use std::time::Duration;

use tiermesh_client::transport::{RecvStream, SendStream, Session};
use tiermesh_proto::message::{ClientSetup, Message, SetupParams};

/// A control stream, written and read message by message.
pub struct RawControl {
    send: SendStream,
    recv: RecvStream,
    buf: Vec<u8>,
}

impl RawControl {
    pub fn new(send: SendStream, recv: RecvStream) -> Self {
        Self { send, recv, buf: Vec::new() }
    }

    /// Opens the control stream on `session` and sends CLIENT_SETUP with `params`.
    pub async fn open(session: &Session, params: SetupParams) -> Self {
        let (send, recv) = within("control stream", session.open_bi()).await.unwrap();
        let mut control = Self::new(send, recv);
        control.write(&[ClientSetup { params }.into()]).await;
        control
    }

    /// Reads the peer's SERVER_SETUP (a failed test on any other message).
    pub async fn server_setup(&mut self) {
        match self.read().await {
            Message::ServerSetup(_) => {}
            other => panic!("SERVER_SETUP expected, got {other:?}"),
        }
    }

    /// [`RawControl::open`], then [`RawControl::server_setup`].
    pub async fn setup(session: &Session, params: SetupParams) -> Self {
        let mut control = Self::open(session, params).await;
        control.server_setup().await;
        control
    }

    /// Writes `messages` in one write.
    pub async fn write(&mut self, messages: &[Message]) {
        let mut bytes = Vec::new();
        for m in messages {
            m.try_encode(&mut bytes).unwrap();
        }
        within("control write", self.send.write_all(&bytes)).await.unwrap();
    }

    /// The next control message from the peer.
    pub async fn read(&mut self) -> Message {
        within("control message", async {
            loop {
                let mut cur = &self.buf[..];
                match Message::decode(&mut cur) {
                    Ok(m) => {
                        let used = self.buf.len() - cur.len();
                        self.buf.drain(..used);
                        return m;
                    }
                    Err(tiermesh_proto::DecodeError::Short) => {}
                    Err(e) => panic!("undecodable control message: {e}"),
                }
                let chunk = self.recv.read_chunk(4096).await.unwrap().expect("control stream open");
                self.buf.extend_from_slice(&chunk);
            }
        })
        .await
    }
}

/// `f`'s output, or a failed test after 10 s.
async fn within<F: std::future::Future>(what: &str, f: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(10), f)
        .await
        .unwrap_or_else(|_| panic!("timed out: {what}"))
}
