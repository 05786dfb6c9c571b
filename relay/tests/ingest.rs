//! Relay ingest end to end: a real `tiermesh pub --input FILE` sends one 720p30 H.264 tier
//! (the noisy test pattern) with Opus audio to `clinic/visit/source`; a relay with
//! `[ingest]` (the default ladder) decodes it and publishes `clinic/visit` itself. A
//! subscriber on the client library checks what a player would: the catalog lists every
//! rung with its codec string, size, frame rate, bit rate and one alternate group; every
//! tier decodes with a PSNR of at least 30 dB against the codec-scaled source picture
//! (matched by the barcode frame number); group N starts at the same source frame on every
//! tier, so switching tiers at a group boundary decodes without an error; the audio arrives
//! byte for byte as the publisher sent it; a downstream NEW GROUP REQUEST reaches the
//! ingest through the relay and cuts the running group short (checked on 180p; the ingest's
//! unit test checks that every rung starts the new group at the same frame). While nobody
//! watches, no rung is encoded (the source is still decoded); a tier that gets its first
//! viewer starts with a key frame, and /metrics counts the rung frames left idle.

mod common;
mod source;

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use bytes::Bytes;
use source::make_source;
use tiermesh_client::moq::{
    Connection, JoinedTrack, NamespaceEvent, ReceivedObject, SubscribeOptions,
};
use tiermesh_codec::catalog::Catalog;
use tiermesh_codec::scale::Scaler;
use tiermesh_codec::{I420, frame, h264, test_pattern};
use tiermesh_proto::loc::LocProperties;
use tiermesh_proto::types::{FullTrackName, TrackNamespace};
use tiermesh_relay::ingest::IngestConfig;
use tiermesh_tests::Proc;

/// Noise of the source pattern, in luma steps: the hard case for an encoder.
const NOISE: u8 = 4;
/// Frames in the source file (played in a loop): 3 s at 30 fps, three 1 s groups.
const SOURCE_FRAMES: u32 = 90;
/// How long the subscriber records the ladder.
const RECORD: Duration = Duration::from_secs(3);

/// Opens `name` of `ns` as a player does (SUBSCRIBE plus joining FETCH).
async fn join(conn: &Connection, ns: &TrackNamespace, name: &str) -> Result<JoinedTrack> {
    let track = FullTrackName::new(ns.clone(), name)?;
    Ok(JoinedTrack::open(conn, track, SubscribeOptions::largest_object()).await?)
}

/// Everything that arrives on `track` within `limit`.
async fn record(mut track: JoinedTrack, limit: Duration) -> Vec<ReceivedObject> {
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + limit;
    while let Ok(Some(o)) = tokio::time::timeout_at(deadline, track.next()).await {
        out.push(o);
    }
    out
}

/// One decoded frame of a tier.
#[derive(Debug, Clone, Copy)]
struct Decoded {
    group: u64,
    object: u64,
    barcode: Option<u32>,
}

/// Decodes `objects` (from the first key frame on) with one decoder; the frames and the
/// number of decode errors.
fn decode(
    objects: &[&ReceivedObject],
    mut each: impl FnMut(&Decoded, &I420),
) -> (Vec<Decoded>, u64) {
    let mut decoder = h264::Decoder::new().unwrap();
    let mut out = Vec::new();
    let mut errors = 0;
    let start = objects.iter().position(|o| o.object_id == 0).unwrap_or(objects.len());
    for o in &objects[start..] {
        let props = LocProperties::from_extensions(&o.extensions).unwrap_or_default();
        match decoder.decode(&o.payload, props.video_config.as_deref()) {
            Ok(Some(picture)) => {
                let d = Decoded {
                    group: o.group_id,
                    object: o.object_id,
                    barcode: test_pattern::read_barcode(&picture),
                };
                each(&d, &picture);
                out.push(d);
            }
            Ok(None) => {}
            Err(_) => errors += 1,
        }
    }
    (out, errors)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_makes_a_ladder_that_decodes_on_every_tier_and_switches_at_group_boundaries()
-> Result<()> {
    let dir = tempfile::tempdir()?;
    let source_file = dir.path().join("camera.mp4");
    make_source(&source_file, SOURCE_FRAMES, NOISE)?;

    let mut config = common::config();
    config.ingest = Some(IngestConfig::default());
    let relay = common::relay(config).await;
    let conn = common::connect(&relay, "moqt").await;
    let broadcast = TrackNamespace::from_path("clinic/visit")?;
    let source = TrackNamespace::from_path("clinic/visit/source")?;
    let mut announced =
        conn.subscribe_namespace(TrackNamespace::from_path("clinic")?, None).await?;

    let url = format!("moqt://127.0.0.1:{}/clinic/visit/source", relay.local_addr().port());
    let hash = relay.cert_hash().hex();
    let args = ["pub", &url, "--input", &source_file.display().to_string(), "--loop"];
    let publisher =
        Proc::tiermesh("pub", args.iter().copied().chain(["--tls-cert-hash", hash.as_str()]))?;

    // The ingest announces the broadcast once it has read the source's catalog and built
    // its encoders.
    common::within_for("the ingest to publish clinic/visit", Duration::from_secs(60), async {
        while let Some(e) = announced.next().await {
            if matches!(&e, NamespaceEvent::Added(ns) if *ns == broadcast) {
                return;
            }
        }
        panic!("namespace subscription ended");
    })
    .await;

    // The catalog: every rung of the default ladder, one alternate group, and the audio.
    let mut catalog_track = join(&conn, &broadcast, "catalog").await?;
    let catalog = common::within("catalog", catalog_track.next()).await.context("no catalog")?;
    let catalog = Catalog::from_json(&catalog.payload)?;
    let video: Vec<_> =
        catalog.tracks.iter().filter(|t| t.role.as_deref() == Some("video")).cloned().collect();
    let sizes: Vec<_> = video.iter().map(|t| (t.name.as_str(), t.width, t.height)).collect();
    assert_eq!(
        sizes,
        [
            ("video/720p", Some(1280), Some(720)),
            ("video/360p", Some(640), Some(360)),
            ("video/180p", Some(320), Some(180))
        ],
        "{catalog:?}"
    );
    for t in &video {
        assert!(t.codec.as_deref().unwrap_or("").starts_with("avc1."), "{t:?}");
        assert_eq!(t.framerate, Some(30.0), "{t:?}");
        assert!(t.bitrate.unwrap_or(0) > 0, "{t:?}");
        assert_eq!(t.alt_group, video[0].alt_group, "{t:?}");
        assert!(t.alt_group.is_some(), "{t:?}");
    }
    let audio = catalog.tracks.iter().find(|t| t.role.as_deref() == Some("audio"));
    assert_eq!(audio.map(|a| (a.name.as_str(), a.codec.as_deref())), Some(("audio", Some("opus"))));

    // Nobody watches a tier yet: the source is decoded, but no rung is encoded.
    let idle = common::within_for("15 source frames", Duration::from_secs(30), async {
        let mut tick = tokio::time::interval(Duration::from_millis(50));
        loop {
            tick.tick().await;
            let s = relay.ingest_stats().unwrap();
            if s.frames_encoded >= 15 {
                return s;
            }
        }
    })
    .await;
    assert_eq!(idle.rung_frames_encoded, 0, "rungs encoded with nobody watching: {idle:?}");
    assert!(idle.rung_frames_idle >= 3 * 15, "{idle:?}");

    // Record every tier and the audio of both broadcasts side by side.
    let mut recordings = Vec::new();
    for t in &video {
        recordings.push(record(join(&conn, &broadcast, &t.name).await?, RECORD));
    }
    let audio_out = record(join(&conn, &broadcast, "audio").await?, RECORD);
    let audio_in = record(join(&conn, &source, "audio").await?, RECORD);
    let (tiers, audio_out, audio_in) =
        tokio::join!(futures::future::join_all(recordings), audio_out, audio_in);
    let stats = relay.ingest_stats().context("ingest stats")?;
    eprintln!("ingest: {stats:?}");
    // The same figures are on the relay's /metrics (rendered after the snapshot above, so
    // never smaller).
    let text = relay.metrics().render();
    let decoded: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("tiermesh_ingest_frames_decoded_total "))
        .and_then(|v| v.parse().ok())
        .context("tiermesh_ingest_frames_decoded_total in /metrics")?;
    anyhow::ensure!(
        decoded > 0 && decoded >= stats.frames_decoded,
        "metrics say {decoded} frames decoded, the ingest {}",
        stats.frames_decoded
    );
    let idle_metric: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("tiermesh_ingest_rung_frames_idle_total "))
        .and_then(|v| v.parse().ok())
        .context("tiermesh_ingest_rung_frames_idle_total in /metrics")?;
    ensure!(idle_metric >= idle.rung_frames_idle, "idle rung frames on /metrics: {idle_metric}");
    // Watched, every rung is encoded; each tier's first frame is a key frame.
    ensure!(stats.rung_frames_encoded > idle.rung_frames_encoded, "{stats:?}");
    for (t, objects) in video.iter().zip(&tiers) {
        let first = objects.first().with_context(|| format!("{}: nothing arrived", t.name))?;
        ensure!(first.object_id == 0, "{}: starts at object {}", t.name, first.object_id);
    }

    // A downstream NEW GROUP REQUEST reaches the ingest through the relay, and every rung
    // starts a new group at the next frame: the running group of 180p is cut short.
    let mut low = join(&conn, &broadcast, "video/180p").await?;
    let group = common::within("a 180p group start", async {
        loop {
            let o = low.next().await.expect("180p ended");
            if o.object_id == 0 {
                return o.group_id;
            }
        }
    })
    .await;
    let requested =
        SubscribeOptions { new_group_request: Some(0), ..SubscribeOptions::largest_object() };
    let track = FullTrackName::new(broadcast.clone(), "video/720p")?;
    let _top = conn.subscribe(track, requested).await?;
    let short = common::within_for("a group cut short", Duration::from_secs(5), async {
        // Object 0 of `group` is in; a group ended by the request is shorter than 25 frames
        // (every group of the source is 30).
        let mut count = 1u64;
        let mut current = group;
        loop {
            let o = low.next().await.expect("180p ended");
            if o.group_id != current {
                if count < 25 {
                    return count;
                }
                (current, count) = (o.group_id, 0);
            }
            count += 1;
        }
    })
    .await;
    let requests = relay.ingest_stats().context("ingest stats")?.key_frame_requests;
    eprintln!(
        "a group of {short} frames after NEW GROUP REQUEST; {requests} requests reached the ladder"
    );
    assert!(requests >= 1, "the NEW GROUP REQUEST did not reach the ingest");
    drop(publisher);

    // The audio is passed through: the same objects, byte for byte.
    let sent: BTreeMap<u64, Bytes> =
        audio_in.iter().map(|o| (o.group_id, o.payload.clone())).collect();
    let mut same = 0;
    for o in &audio_out {
        if let Some(p) = sent.get(&o.group_id) {
            assert_eq!(p, &o.payload, "audio group {}", o.group_id);
            same += 1;
        }
    }
    assert!(
        same >= 50,
        "only {same} audio objects matched ({} in, {} out)",
        audio_in.len(),
        audio_out.len()
    );

    // Every tier decodes, at ≥ 30 dB against the source picture scaled by the codec crate.
    let pattern = test_pattern::Generator::new(1280, 720, 30.0)?.with_noise(NOISE);
    let mut scaler = Scaler::new();
    let mut decoded: Vec<Vec<Decoded>> = Vec::new();
    for (t, objects) in video.iter().zip(&tiers) {
        let refs: Vec<&ReceivedObject> = objects.iter().collect();
        let (w, h) = (t.width.unwrap() as usize, t.height.unwrap() as usize);
        let mut psnr = Vec::new();
        let (frames, errors) = decode(&refs, |d, picture| {
            assert_eq!((picture.width, picture.height), (w, h), "{}", t.name);
            // Every third frame: enough samples, less CPU beside the real-time ingest.
            if let Some(n) = d.barcode
                && n % 3 == 0
            {
                let reference = scaler.scale(&pattern.next_frame(n), w, h).unwrap();
                psnr.push(frame::psnr(picture, &reference).unwrap());
            }
        });
        let mean = psnr.iter().sum::<f64>() / psnr.len().max(1) as f64;
        let read = frames.iter().filter(|d| d.barcode.is_some()).count();
        eprintln!(
            "{}: {} objects, {} decoded, {errors} errors, {read} barcodes, PSNR {mean:.1} dB over {} frames",
            t.name,
            objects.len(),
            frames.len(),
            psnr.len()
        );
        assert_eq!(errors, 0, "{}: decode errors", t.name);
        assert!(
            frames.len() >= 45,
            "{}: only {} frames decoded in {RECORD:?}",
            t.name,
            frames.len()
        );
        assert!(
            read * 10 >= frames.len() * 9,
            "{}: barcode read on {read} of {} frames",
            t.name,
            frames.len()
        );
        assert!(psnr.len() >= 10, "{}: {} PSNR samples", t.name, psnr.len());
        assert!(mean >= 30.0, "{}: mean PSNR {mean:.1} dB", t.name);
        decoded.push(frames);
    }

    // Group N starts at the same source frame on every tier.
    let first_of = |frames: &[Decoded], g: u64| {
        frames.iter().find(|d| d.group == g && d.object == 0).and_then(|d| d.barcode)
    };
    let groups: Vec<u64> = decoded[0].iter().filter(|d| d.object == 0).map(|d| d.group).collect();
    let mut aligned = 0;
    for &g in &groups {
        let starts: Vec<Option<u32>> = decoded.iter().map(|f| first_of(f, g)).collect();
        if starts.iter().all(Option::is_some) {
            assert!(starts.windows(2).all(|w| w[0] == w[1]), "group {g} starts at {starts:?}");
            aligned += 1;
        }
    }
    assert!(aligned >= 2, "only {aligned} groups seen on every tier");

    // A player switching tiers at a group boundary, with one decoder: 180p → 720p → 360p.
    let complete: Vec<u64> = groups
        .iter()
        .copied()
        .filter(|&g| tiers.iter().all(|t| t.iter().any(|o| o.group_id == g && o.object_id == 0)))
        .collect();
    ensure!(complete.len() >= 2, "need two groups on every tier, have {complete:?}");
    let (g0, g1) = (complete[0], complete[1]);
    let pick = |tier: usize, g: u64| tiers[tier].iter().filter(move |o| o.group_id == g);
    let switched: Vec<&ReceivedObject> =
        pick(2, g0).chain(pick(0, g1)).chain(pick(1, g1 + 1)).collect();
    let (frames, errors) = decode(&switched, |_, _| {});
    assert_eq!(errors, 0, "decode errors across the tier switches");
    let codes: Vec<u32> = frames.iter().filter_map(|d| d.barcode).collect();
    assert!(frames.len() >= 45, "only {} frames across the switches", frames.len());
    assert!(
        codes.windows(2).all(|w| w[1] > w[0] || w[1] < 5),
        "frames out of order across the switches (the source loops every {SOURCE_FRAMES}): {codes:?}"
    );
    assert_eq!(
        first_of(&frames, g1),
        first_of(&decoded[2], g1),
        "the switch to 720p skipped frames"
    );

    assert!(stats.frames_in > 0 && stats.frames_encoded > 0, "{stats:?}");
    assert_eq!(stats.decode_errors + stats.encode_errors, 0, "{stats:?}");
    relay.shutdown().await;
    Ok(())
}
