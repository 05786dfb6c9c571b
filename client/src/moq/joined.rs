//! A track joined the way a player joins: SUBSCRIBE plus a relative joining FETCH of the
//! current group, read as one sequence.

use tiermesh_proto::types::{FullTrackName, Location};

use super::{
    Connection, Error, FetchReader, ReceivedObject, SubscribeOptions, TrackEvent, TrackReader,
};

/// A joined track: the joining fetch's objects first (from the start of the current group,
/// so a key frame), then the subscription's, each location once and in increasing order.
#[derive(Debug)]
pub struct JoinedTrack {
    fetch: Option<FetchReader>,
    reader: TrackReader,
    last: Option<Location>,
}

impl JoinedTrack {
    /// Subscribes to `track` with `options` and fetches the start of its current group.
    ///
    /// # Errors
    /// The subscription's refusal or a closed session. A refused joining fetch is not an
    /// error: the track then starts at the subscription's first object.
    pub async fn open(
        conn: &Connection,
        track: FullTrackName,
        options: SubscribeOptions,
    ) -> Result<Self, Error> {
        let (reader, fetch) = conn.join(track, options, 0).await?;
        Ok(Self { fetch: fetch.ok(), reader, last: None })
    }

    /// The next object; `None` when the track ended (PUBLISH_DONE or session closed).
    pub async fn next(&mut self) -> Option<ReceivedObject> {
        loop {
            let o = match &mut self.fetch {
                Some(f) => match f.next().await {
                    Some(o) => o,
                    None => {
                        self.fetch = None;
                        continue;
                    }
                },
                None => loop {
                    match self.reader.next().await? {
                        TrackEvent::Object(o) => break o,
                        TrackEvent::Done(_) => return None,
                        TrackEvent::StreamEnd { .. } => {}
                    }
                },
            };
            if self.last.is_some_and(|l| o.location() <= l) {
                continue;
            }
            self.last = Some(o.location());
            return Some(o);
        }
    }
}
