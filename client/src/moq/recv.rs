//! Tasks that read the transport: incoming data streams, datagrams, the control stream and
//! peer-opened bidirectional streams. They feed the driver through [`Input`]s and hand
//! objects straight to the subscription they belong to.

use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;

use tiermesh_proto::TerminationCode;
use tiermesh_proto::data::{
    Error as DataError, FetchItem, FetchReader, Object, ReaderConfig, StreamKind, SubgroupReader,
};
use tiermesh_proto::session::Stream;
use tiermesh_proto::types::{RequestId, TrackAlias};

use super::track::{FetchEvent, FetchInput, ReceivedObject, Sink, TrackEvent};
use crate::transport::{self, RecvStream, SendStream};

/// Largest chunk read at once.
const READ_CHUNK: usize = 64 * 1024;

/// How long the end of the peer's control stream waits for the session's close before it
/// counts as a protocol violation: WebTransport closes the QUIC connection after its close
/// capsule is acknowledged, or after at least 100 ms.
const CONTROL_END_GRACE: std::time::Duration = std::time::Duration::from_secs(1);

/// What the I/O tasks tell the driver.
#[derive(Debug)]
pub(crate) enum Input {
    /// Bytes of the control stream.
    Control(Bytes),
    /// The control stream ended (FIN or error).
    ControlEnded,
    /// Bytes of a SUBSCRIBE_NAMESPACE stream.
    NsBytes { stream: Stream, data: Bytes, fin: bool },
    /// A SUBSCRIBE_NAMESPACE stream was reset.
    NsReset { stream: Stream },
    /// The peer opened a bidirectional stream (a SUBSCRIBE_NAMESPACE); its writer.
    PeerBi { key: u64, tx: mpsc::UnboundedSender<(Vec<u8>, bool)> },
    /// A subgroup stream's header: which subscription does the alias belong to?
    DataStream { alias: TrackAlias, reply: oneshot::Sender<Option<Sink>> },
    /// A fetch stream's header: which fetch?
    FetchStream {
        request_id: RequestId,
        reply: oneshot::Sender<Option<mpsc::UnboundedSender<FetchInput>>>,
    },
    /// A fetch stream ended with FIN.
    FetchFinished { request_id: RequestId },
    /// A data stream was reset before its header said which subscription or fetch it was
    /// for (QUIC drops a reset stream's unread data).
    AnonymousReset,
    /// A datagram.
    Datagram(Bytes),
    /// Data-plane input broke a rule that closes the session.
    Violation { code: TerminationCode, reason: &'static str },
    /// The transport ended.
    TransportClosed(transport::CloseReason),
}

pub(crate) type Inputs = mpsc::UnboundedSender<Input>;

/// Reads everything the peer sends outside data streams, in one future: the control
/// stream, datagrams, the peer's new unidirectional streams (each read in its own task,
/// aborted with this future) and bidirectional streams (SUBSCRIBE_NAMESPACE exchanges),
/// and the end of the transport. One future rather than one each: every connection, idle
/// or not, would otherwise carry five futures with a copy of the transport session each.
///
/// Each source stops on its own when it fails (a WebTransport datagram of another session
/// stops the datagram reader); the future ends with the transport, aborting the stream
/// tasks it started.
pub(crate) async fn io(session: Arc<transport::Session>, mut control: RecvStream, inputs: Inputs) {
    let mut streams = JoinSet::new();
    let mut bi_key = 0u64;
    let (mut control_open, mut datagrams_open, mut uni_open, mut bi_open) =
        (true, true, true, true);
    loop {
        // Every branch is cancel-safe (quinn's reads and accepts take nothing until they
        // resolve), so the futures made afresh at each turn lose nothing. The end of the
        // transport goes first: when the peer's close arrives with the end of its control
        // stream, the driver must learn of the close before it sees the control stream end
        // (which on its own is a protocol violation). Datagrams go last, so that a flood of
        // them cannot hold up the control plane.
        tokio::select! {
            biased;
            reason = session.closed() => {
                let _ = inputs.send(Input::TransportClosed(reason));
                return;
            }
            r = control.read_chunk(READ_CHUNK), if control_open => match r {
                Ok(Some(b)) => {
                    if inputs.send(Input::Control(b)).is_err() {
                        return;
                    }
                }
                _ => {
                    // A peer closing the session ends its control stream too, and its
                    // close may be read a moment later (WebTransport's close capsule is
                    // read by another task, and QUIC's CONNECTION_CLOSE follows it): the
                    // close is awaited briefly so that it is not taken for a control stream
                    // ended on its own, a protocol violation.
                    control_open = false;
                    match tokio::time::timeout(CONTROL_END_GRACE, session.closed()).await {
                        Ok(reason) => {
                            let _ = inputs.send(Input::TransportClosed(reason));
                            return;
                        }
                        Err(_) => {
                            let _ = inputs.send(Input::ControlEnded);
                        }
                    }
                }
            },
            r = session.accept_bi(), if bi_open => match r {
                Ok((send, recv)) => {
                    while streams.try_join_next().is_some() {}
                    bi_key += 1;
                    let (tx, rx) = mpsc::unbounded_channel();
                    if inputs.send(Input::PeerBi { key: bi_key, tx }).is_err() {
                        return;
                    }
                    streams.spawn(ns_stream(Stream::Peer(bi_key), send, recv, rx, inputs.clone()));
                }
                Err(_) => bi_open = false,
            },
            r = session.accept_uni(), if uni_open => match r {
                Ok(stream) => {
                    while streams.try_join_next().is_some() {}
                    streams.spawn(data_stream(stream, inputs.clone()));
                }
                Err(_) => uni_open = false,
            },
            r = session.read_datagram(), if datagrams_open => match r {
                Ok(d) => {
                    if inputs.send(Input::Datagram(d)).is_err() {
                        return;
                    }
                }
                Err(_) => datagrams_open = false,
            },
        }
    }
}

/// Writes the control stream.
pub(crate) async fn control_writer(mut send: SendStream, mut rx: mpsc::UnboundedReceiver<Vec<u8>>) {
    while let Some(data) = rx.recv().await {
        if send.write_all(&data).await.is_err() {
            return;
        }
    }
}

/// Opens this endpoint's SUBSCRIBE_NAMESPACE stream, then runs it.
pub(crate) async fn open_ns_stream(
    session: transport::Session,
    stream: Stream,
    rx: mpsc::UnboundedReceiver<(Vec<u8>, bool)>,
    inputs: Inputs,
) {
    match session.open_bi().await {
        Ok((send, recv)) => ns_stream(stream, send, recv, rx, inputs).await,
        Err(_) => {
            let _ = inputs.send(Input::NsReset { stream });
        }
    }
}

async fn ns_stream(
    stream: Stream,
    mut send: SendStream,
    mut recv: RecvStream,
    mut rx: mpsc::UnboundedReceiver<(Vec<u8>, bool)>,
    inputs: Inputs,
) {
    // Control messages, above every media stream (see `driver::start`).
    let _ = send.set_priority(i32::MAX);
    let write = async {
        while let Some((data, fin)) = rx.recv().await {
            if !data.is_empty() && send.write_all(&data).await.is_err() {
                return;
            }
            if fin {
                let _ = send.finish();
                return;
            }
        }
    };
    let read = async {
        loop {
            match recv.read_chunk(READ_CHUNK).await {
                Ok(Some(data)) => {
                    let _ = inputs.send(Input::NsBytes { stream, data, fin: false });
                }
                Ok(None) => {
                    let _ = inputs.send(Input::NsBytes { stream, data: Bytes::new(), fin: true });
                    return;
                }
                Err(_) => {
                    let _ = inputs.send(Input::NsReset { stream });
                    return;
                }
            }
        }
    };
    tokio::join!(write, read);
}

/// Reads one data stream: subgroup or fetch, told apart by its first varint.
async fn data_stream(mut recv: RecvStream, inputs: Inputs) {
    let mut first = BytesMut::new();
    let kind = loop {
        match StreamKind::peek(&first) {
            Ok(k) => break k,
            Err(DataError::Short) => {}
            Err(e) => return report(&inputs, &e, &mut recv),
        }
        match recv.read_chunk(READ_CHUNK).await {
            Ok(Some(b)) => first.extend_from_slice(&b),
            Err(transport::Error::Reset { .. }) => {
                let _ = inputs.send(Input::AnonymousReset);
                return;
            }
            _ => return,
        }
    };
    match kind {
        StreamKind::Subgroup(_) => subgroup(recv, first.freeze(), inputs).await,
        StreamKind::Fetch => fetch(recv, first.freeze(), inputs).await,
    }
}

/// A data-plane error: a session error goes to the driver, anything else stops the stream.
fn report(inputs: &Inputs, e: &DataError, recv: &mut RecvStream) {
    match e {
        DataError::Session { code, reason } => {
            let _ = inputs.send(Input::Violation { code: *code, reason });
        }
        DataError::TooLarge { .. } => {
            let _ = inputs.send(Input::Violation {
                code: TerminationCode::ProtocolViolation,
                reason: "object larger than accepted",
            });
        }
        DataError::MalformedTrack { reason } => {
            tracing::warn!(reason, "malformed track: stream dropped");
            let _ = recv.stop(0);
        }
        DataError::Short => {}
    }
}

async fn subgroup(mut recv: RecvStream, first: Bytes, inputs: Inputs) {
    let mut reader = SubgroupReader::new(ReaderConfig::default());
    reader.handle_bytes(&first);
    let mut sink: Option<Sink> = None;
    let mut fin = false;
    loop {
        if sink.is_none()
            && let Some(h) = reader.header()
        {
            let (reply, rx) = oneshot::channel();
            if inputs.send(Input::DataStream { alias: h.track_alias, reply }).is_err() {
                return;
            }
            match rx.await {
                Ok(Some(s)) => sink = Some(s),
                _ => {
                    // Unknown or ended subscription: not wanted.
                    let _ = recv.stop(0);
                    return;
                }
            }
        }
        if let (Some(s), Some(header)) = (&sink, reader.header().copied()) {
            while let Some(r) = reader.poll_object() {
                match r {
                    Ok(o) => {
                        let sg = reader.subgroup_id().unwrap_or(0);
                        let obj = Object::from_subgroup(&header, sg, o, s.default_priority);
                        let e = TrackEvent::Object(ReceivedObject::new(obj, Instant::now()));
                        if s.tx.send(e).is_err() {
                            let _ = recv.stop(0);
                            return;
                        }
                    }
                    Err(e) => return report(&inputs, &e, &mut recv),
                }
            }
            if fin || reader.is_finished() {
                let _ = s.tx.send(TrackEvent::StreamEnd {
                    group_id: header.group_id,
                    subgroup_id: reader.subgroup_id().unwrap_or(0),
                    reset: None,
                });
                return;
            }
        } else if fin {
            return;
        }
        match recv.read_chunk(READ_CHUNK).await {
            Ok(Some(b)) => reader.handle_bytes(&b),
            Ok(None) => {
                reader.handle_fin();
                fin = true;
            }
            Err(e) => {
                if let (Some(s), Some(h)) = (&sink, reader.header()) {
                    let code = match e {
                        transport::Error::Reset { code } => Some(code),
                        _ => None,
                    };
                    if code.is_some() {
                        let _ = s.tx.send(TrackEvent::StreamEnd {
                            group_id: h.group_id,
                            subgroup_id: reader.subgroup_id().unwrap_or(0),
                            reset: code,
                        });
                    }
                }
                return;
            }
        }
    }
}

async fn fetch(mut recv: RecvStream, first: Bytes, inputs: Inputs) {
    let mut reader = FetchReader::new(ReaderConfig::default());
    reader.handle_bytes(&first);
    let mut sink: Option<mpsc::UnboundedSender<FetchInput>> = None;
    let mut request = None;
    let mut fin = false;
    loop {
        if sink.is_none()
            && let Some(h) = reader.header()
        {
            let (reply, rx) = oneshot::channel();
            request = Some(h.request_id);
            if inputs.send(Input::FetchStream { request_id: h.request_id, reply }).is_err() {
                return;
            }
            match rx.await {
                Ok(Some(s)) => sink = Some(s),
                _ => {
                    let _ = recv.stop(0);
                    return;
                }
            }
        }
        if let Some(s) = &sink {
            while let Some(r) = reader.poll_object() {
                match r {
                    Ok(FetchItem::Object(o)) => {
                        let obj = ReceivedObject::new(Object::from_fetch(o), Instant::now());
                        if s.send(FetchInput::Event(FetchEvent::Object(obj))).is_err() {
                            let _ = recv.stop(0);
                            return;
                        }
                    }
                    Ok(FetchItem::EndOfRange(r)) => {
                        if s.send(FetchInput::Event(FetchEvent::EndOfRange(r))).is_err() {
                            let _ = recv.stop(0);
                            return;
                        }
                    }
                    Err(e) => return report(&inputs, &e, &mut recv),
                }
            }
        }
        if fin {
            // Only a FIN ends a fetch whole (or with its last range unknown, as marked); a
            // reader whose sender goes without it reads the end as failed.
            if let Some(s) = &sink {
                let _ = s.send(FetchInput::Fin);
            }
            if let Some(request_id) = request {
                let _ = inputs.send(Input::FetchFinished { request_id });
            }
            return;
        }
        match recv.read_chunk(READ_CHUNK).await {
            Ok(Some(b)) => reader.handle_bytes(&b),
            Ok(None) => {
                reader.handle_fin();
                fin = true;
            }
            Err(e) => {
                // A RESET_STREAM ends the fetch as a FIN does (draft-16, Fetch State
                // Management): its state goes too (the reader has seen the end already, its
                // sender being dropped). Before the whole header arrived it is not known
                // which fetch ended.
                match request {
                    Some(request_id) => {
                        let _ = inputs.send(Input::FetchFinished { request_id });
                    }
                    None if matches!(e, transport::Error::Reset { .. }) => {
                        let _ = inputs.send(Input::AnonymousReset);
                    }
                    None => {}
                }
                return;
            }
        }
    }
}
