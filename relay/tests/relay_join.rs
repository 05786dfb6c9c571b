//! Guards joining: a late subscriber's SUBSCRIBE (Largest Object) plus relative Joining
//! FETCH gets the current group from the relay's cache starting at object 0 (the key
//! frame), then the live objects after it, with nothing missing in between.

mod common;

use common::*;
use tiermesh_client::moq::SubscribeOptions;
use tiermesh_proto::data::ObjectStatus;
use tiermesh_proto::types::Location;

#[tokio::test]
async fn late_joiner_starts_at_the_key_frame_from_the_cache() {
    for scheme in ["moqt", "https"] {
        let mut first = subscribed(config(), "moqt", "video").await;
        write_group(&first.writer, 4, 0..30, false);
        let mut stream = write_group(&first.writer, 5, 0..10, true).unwrap();
        expect_objects(&mut first.reader, 40).await;

        let late = connect(&first.relay, scheme).await;
        let (mut live, fetch) =
            within("join", late.join(track("video"), SubscribeOptions::default(), 0))
                .await
                .unwrap();
        assert_eq!(live.largest(), Some(Location::new(5, 9)));
        let mut fetch = fetch.expect("joining fetch accepted");
        for o in 0..10 {
            let obj = within("cached object", fetch.next()).await.expect("fetch ended early");
            assert_eq!(
                obj.location(),
                Location::new(5, o),
                "starts at object 0 of the current group"
            );
            assert_eq!(obj.payload, payload(5, o));
        }
        assert!(within("fetch end", fetch.next()).await.is_none());
        for o in 10..15 {
            stream.write(o, &ext(5, o), ObjectStatus::Normal, payload(5, o)).unwrap();
        }
        for o in 10..15 {
            let obj = within("live object", live.next_object()).await.unwrap();
            assert_eq!(obj.location(), Location::new(5, o), "live objects follow the cached ones");
        }
        drop(stream);
        first.relay.shutdown().await;
    }
}
