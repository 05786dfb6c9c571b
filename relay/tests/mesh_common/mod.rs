//! Shared by the mesh tests (`tests/mesh_links.rs`, `tests/mesh_drain.rs`): node
//! certificates from a mesh CA, a subscription that waits for the route, and a publisher
//! that writes one object per group every 10 ms.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tiermesh_client::moq::{self, SubscribeOptions, TrackReader, TrackWriter};
use tiermesh_proto::data::ObjectStatus;
use tiermesh_relay::RelayHandle;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::common::*;

/// A node certificate for `name` from `ca`, saved in `root/name`.
pub fn node_dir(ca: &tiermesh_certs::ca::Ca, root: &Path, name: &str) -> PathBuf {
    let dir = root.join(name);
    ca.issue_node(name, &["127.0.0.1".to_owned()]).unwrap().save(&dir).unwrap();
    dir
}

/// Subscribes at `relay` until the mesh has a route for the track (bounded by `within`).
pub async fn subscribe_when_routed(relay: &RelayHandle, conn: &moq::Connection) -> TrackReader {
    let _ = relay;
    within("routed subscribe", async {
        loop {
            match conn.subscribe(track("video"), SubscribeOptions::default()).await {
                Ok(r) => return r,
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    })
    .await
}

/// One object per group every 10 ms (at most 10 s) on `first` and on every writer the
/// publisher gets later (each SUBSCRIBE the relay sends, a re-routed one included), until
/// the sender is used; the task hands the publisher back.
pub fn publish_every_10ms(
    mut publisher: Publisher,
    first: TrackWriter,
) -> (oneshot::Sender<()>, JoinHandle<Publisher>) {
    let (stop_tx, mut stop_rx) = oneshot::channel::<()>();
    let mut writers = vec![first];
    let task = tokio::spawn(async move {
        for g in 0..1000u64 {
            while let Ok(w) = publisher.writers.try_recv() {
                writers.push(w);
            }
            for w in writers.iter().filter(|w| !w.is_closed()) {
                let mut s = w.open_subgroup(g, 0, None);
                let _ = s.write(0, &ext(g, 0), ObjectStatus::Normal, payload(g, 0));
                s.finish();
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(10)) => {}
                _ = &mut stop_rx => break,
            }
        }
        publisher
    });
    (stop_tx, task)
}
