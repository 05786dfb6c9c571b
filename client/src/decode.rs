//! The subscriber's media side: what `tiermesh sub --decode` and `--save FILE.mp4` do.
//!
//! [`Receiver`] is sans-IO: it is given the catalog and then every object of the chosen
//! video tier and of the audio track as it arrives. It decodes video (OpenH264 or dav1d,
//! chosen by the catalog's codec string) and audio (Opus), counts decoded frames, decode
//! errors and freezes, and writes what arrived into a fragmented MP4
//! ([`tiermesh_codec::media::output::Mp4Writer`]) once the first key frame is in.
//! [`receive`] drives it over a MoQT connection.
//!
//! A freeze is a gap between two consecutive decoded video frames of more than
//! [`FREEZE_FRAMES`] frame intervals of capture time, or a group that is entered
//! without its key frame (nothing can be shown until the next one).

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use tiermesh_codec::catalog::{Catalog, Track};
use tiermesh_codec::media::output::{AudioTrack, Mp4Writer, Tracks, VideoTrack};
use tiermesh_codec::{Codec, av1, h264, opus};
use tiermesh_proto::catalog::CATALOG_TRACK_NAME;
use tiermesh_proto::loc::LocProperties;
use tiermesh_proto::types::{FullTrackName, TrackName, TrackNamespace};

use crate::moq::{Connection, JoinedTrack, SubscribeOptions};

/// Consecutive decoded frames further apart than this many frame intervals count as a
/// freeze: three frames (100 ms at 30 fps) is where a viewer sees the picture stop.
pub const FREEZE_FRAMES: f64 = 3.0;

/// What the subscriber's decoder saw.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DecodeReport {
    /// The video track decoded (`video/360p`, …), if any.
    pub video_track: Option<String>,
    /// Its codec string from the catalog.
    pub codec: Option<String>,
    /// Video objects received.
    pub video_objects: u64,
    /// Video frames decoded into pictures.
    pub frames_decoded: u64,
    /// Size of the last decoded picture.
    pub last_size: Option<(usize, usize)>,
    /// Video objects the decoder rejected (or that could not be decoded for a missing key
    /// frame).
    pub decode_errors: u64,
    /// Freezes (see the module documentation).
    pub freezes: u64,
    /// Video objects received before the first key frame (a subscription that starts in
    /// the middle of a group): not decodable, not an error.
    pub skipped_before_key: u64,
    /// Audio packets received.
    pub audio_packets: u64,
    /// Audio packets decoded.
    pub audio_decoded: u64,
    /// Audio packets the decoder rejected.
    pub audio_errors: u64,
    /// Video samples written to the MP4 file.
    pub saved_video: u64,
    /// Audio samples written to the MP4 file.
    pub saved_audio: u64,
    /// What went wrong with the session or the file, if anything.
    pub error: Option<String>,
}

impl DecodeReport {
    /// A short human-readable summary, one line per item.
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        if let Some(t) = &self.video_track {
            s.push_str(&format!(
                "video {t} ({}): {} objects, {} frames decoded{}, {} decode errors, {} freezes, {} skipped before the first key frame\n",
                self.codec.as_deref().unwrap_or("?"),
                self.video_objects,
                self.frames_decoded,
                self.last_size.map(|(w, h)| format!(" at {w}x{h}")).unwrap_or_default(),
                self.decode_errors,
                self.freezes,
                self.skipped_before_key
            ));
        }
        s.push_str(&format!(
            "audio: {} packets, {} decoded, {} errors\n",
            self.audio_packets, self.audio_decoded, self.audio_errors
        ));
        if self.saved_video + self.saved_audio > 0 {
            s.push_str(&format!(
                "saved: {} video and {} audio samples\n",
                self.saved_video, self.saved_audio
            ));
        }
        if let Some(e) = &self.error {
            s.push_str(&format!("error: {e}\n"));
        }
        s
    }
}

enum VideoDecoder {
    H264(h264::Decoder),
    Av1(av1::Decoder),
}

/// What to do with the media: decode it, save it, or both.
#[derive(Debug, Clone, Default)]
pub struct ReceiveConfig {
    /// The broadcast.
    pub namespace: TrackNamespace,
    /// The video track to take; `None`: the highest tier of the catalog.
    pub video_track: Option<String>,
    /// Decode video and audio.
    pub decode: bool,
    /// Write what arrived to this MP4 file.
    pub save: Option<PathBuf>,
    /// How long to receive.
    pub duration: Duration,
    /// Access token for the subscriptions.
    pub token: Option<Bytes>,
}

/// Decodes and saves the media of one video tier and the audio of a broadcast.
pub struct Receiver {
    video: Option<Track>,
    codec: Option<Codec>,
    audio: Option<Track>,
    decoder: Option<VideoDecoder>,
    audio_decoder: Option<opus::Decoder>,
    save: Option<PathBuf>,
    writer: Option<Mp4Writer>,
    last_capture: Option<u64>,
    group: Option<u64>,
    waiting_for_key: bool,
    report: DecodeReport,
}

impl std::fmt::Debug for Receiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Receiver").field("report", &self.report).finish_non_exhaustive()
    }
}

/// The codec a WebCodecs codec string names.
pub fn codec_of(codec_string: &str) -> Option<Codec> {
    if codec_string.starts_with("avc1") || codec_string.starts_with("avc3") {
        Some(Codec::H264)
    } else if codec_string.starts_with("av01") {
        Some(Codec::Av1)
    } else {
        None
    }
}

impl Receiver {
    /// A receiver for the broadcast described by `catalog`: its video track `video_track`
    /// (or the highest tier) and its audio.
    ///
    /// # Errors
    /// The named track is not in the catalog or its codec is not H.264 or AV1; a decoder
    /// cannot start.
    pub fn new(
        catalog: &Catalog,
        video_track: Option<&str>,
        decode: bool,
        save: Option<PathBuf>,
    ) -> Result<Self, String> {
        let videos: Vec<&Track> =
            catalog.tracks.iter().filter(|t| t.role.as_deref() == Some("video")).collect();
        let video = match video_track {
            Some(name) => Some(
                catalog
                    .tracks
                    .iter()
                    .find(|t| t.name == name)
                    .ok_or_else(|| format!("the catalog has no track {name}"))?
                    .clone(),
            ),
            None => videos.iter().max_by_key(|t| t.height.unwrap_or(0)).map(|t| (*t).clone()),
        };
        let codec = match &video {
            Some(t) => {
                let s = t.codec.as_deref().unwrap_or("");
                Some(
                    codec_of(s)
                        .ok_or_else(|| format!("{}: codec {s:?} is not H.264 or AV1", t.name))?,
                )
            }
            None => None,
        };
        let audio = catalog
            .tracks
            .iter()
            .find(|t| t.role.as_deref() == Some("audio") && t.codec.as_deref() == Some("opus"))
            .cloned();
        let decoder = match (decode, codec) {
            (true, Some(Codec::H264)) => {
                Some(VideoDecoder::H264(h264::Decoder::new().map_err(|e| e.to_string())?))
            }
            (true, Some(Codec::Av1)) => {
                Some(VideoDecoder::Av1(av1::Decoder::new().map_err(|e| e.to_string())?))
            }
            _ => None,
        };
        let audio_decoder = match (decode, &audio) {
            (true, Some(a)) => {
                let ch = a.channel_config.as_deref().and_then(|c| c.parse().ok()).unwrap_or(1);
                Some(opus::Decoder::new(ch).map_err(|e| e.to_string())?)
            }
            _ => None,
        };
        let report = DecodeReport {
            video_track: video.as_ref().map(|t| t.name.clone()),
            codec: video.as_ref().and_then(|t| t.codec.clone()),
            ..DecodeReport::default()
        };
        Ok(Self {
            video,
            codec,
            audio,
            decoder,
            audio_decoder,
            save,
            writer: None,
            last_capture: None,
            group: None,
            waiting_for_key: true,
            report,
        })
    }

    /// The video track chosen.
    pub fn video_track(&self) -> Option<&str> {
        self.video.as_ref().map(|t| t.name.as_str())
    }

    /// The audio track chosen.
    pub fn audio_track(&self) -> Option<&str> {
        self.audio.as_ref().map(|t| t.name.as_str())
    }

    /// What happened so far.
    pub fn report(&self) -> &DecodeReport {
        &self.report
    }

    fn frame_us(&self) -> f64 {
        let fps = self.video.as_ref().and_then(|t| t.framerate).unwrap_or(30.0);
        1_000_000.0 / fps.max(1.0)
    }

    /// Takes one video object: group `group_id`, LOC properties in `props`.
    pub fn video_object(
        &mut self,
        group_id: u64,
        object_id: u64,
        props: &LocProperties,
        payload: &[u8],
    ) {
        self.report.video_objects += 1;
        let key = object_id == 0;
        if self.group != Some(group_id) {
            if !key && !self.waiting_for_key {
                // Entered a group without its key frame: the picture stops until the next.
                self.report.freezes += 1;
            }
            self.waiting_for_key = !key;
            self.group = Some(group_id);
        }
        if self.waiting_for_key {
            if self.report.frames_decoded + self.report.saved_video == 0 {
                self.report.skipped_before_key += 1;
            } else {
                self.report.decode_errors += u64::from(self.decoder.is_some());
            }
            return;
        }
        let capture = props.capture_timestamp_us().unwrap_or(0);
        if key {
            self.open_writer(props.video_config.clone());
        }
        if let Some(w) = &mut self.writer
            && self.video.is_some()
        {
            match w.write_video(payload, Duration::from_micros(capture), key) {
                Ok(()) => self.report.saved_video += 1,
                Err(e) => self.fail(format!("writing the MP4 file: {e}")),
            }
        }
        let config = props.video_config.clone();
        let decoded = match &mut self.decoder {
            Some(VideoDecoder::H264(d)) => Some(d.decode(payload, config.as_deref())),
            Some(VideoDecoder::Av1(d)) => Some(d.decode(payload)),
            None => None,
        };
        match decoded {
            Some(Ok(Some(picture))) => {
                self.report.frames_decoded += 1;
                self.report.last_size = Some((picture.width, picture.height));
                if let Some(prev) = self.last_capture
                    && capture.saturating_sub(prev) as f64 > FREEZE_FRAMES * self.frame_us()
                {
                    self.report.freezes += 1;
                }
                self.last_capture = Some(capture);
            }
            Some(Ok(None)) | None => {}
            Some(Err(e)) => {
                self.report.decode_errors += 1;
                tracing::debug!(error = %e, group_id, object_id, "decode error");
            }
        }
    }

    /// Takes one audio object.
    pub fn audio_object(&mut self, props: &LocProperties, payload: &[u8]) {
        self.report.audio_packets += 1;
        if self.video.is_none() {
            self.open_writer(None);
        }
        if let Some(w) = &mut self.writer {
            let capture = props.capture_timestamp_us().unwrap_or(0);
            match w.write_audio(payload, Duration::from_micros(capture)) {
                Ok(()) => self.report.saved_audio += 1,
                Err(e) => self.fail(format!("writing the MP4 file: {e}")),
            }
        }
        if let Some(d) = &mut self.audio_decoder {
            match d.decode(payload) {
                Ok(_) => self.report.audio_decoded += 1,
                Err(_) => self.report.audio_errors += 1,
            }
        }
    }

    fn fail(&mut self, e: String) {
        if self.report.error.is_none() {
            self.report.error = Some(e);
        }
        self.save = None;
        self.writer = None;
    }

    fn open_writer(&mut self, config: Option<Bytes>) {
        if self.writer.is_some() {
            return;
        }
        let Some(path) = self.save.clone() else { return };
        let audio = self.audio.as_ref().map(|a| {
            let ch = a.channel_config.as_deref().and_then(|c| c.parse().ok()).unwrap_or(1);
            AudioTrack::opus(opus::SAMPLE_RATE, ch)
        });
        let tracks = match (&self.video, self.codec, config) {
            (Some(v), Some(codec), Some(config)) => {
                let t = Tracks::video(VideoTrack::new(
                    codec,
                    v.width.unwrap_or(0),
                    v.height.unwrap_or(0),
                    config,
                ));
                match audio {
                    Some(a) => t.with_audio(a),
                    None => t,
                }
            }
            (None, _, _) => match audio {
                Some(a) => Tracks::audio(a),
                None => return,
            },
            // A key frame without its decoder configuration record: wait for the next.
            _ => return,
        };
        match Mp4Writer::create(&path, tracks) {
            Ok(w) => self.writer = Some(w),
            Err(e) => self.fail(format!("{}: {e}", path.display())),
        }
    }

    /// Ends the recording and returns the report.
    pub fn finish(mut self) -> DecodeReport {
        if let Some(w) = self.writer.take()
            && let Err(e) = w.finish()
        {
            self.report.error.get_or_insert(format!("finishing the MP4 file: {e}"));
        }
        if self.save.is_some() && self.report.saved_video + self.report.saved_audio == 0 {
            self.report.error.get_or_insert("nothing arrived to save".to_owned());
        }
        self.report
    }
}

fn full(namespace: &TrackNamespace, name: &str) -> FullTrackName {
    FullTrackName {
        namespace: namespace.clone(),
        name: TrackName(Bytes::from(name.as_bytes().to_vec())),
    }
}

/// Subscribes to the catalog of `config.namespace`, then to one video tier and the audio,
/// decoding and saving as asked, for `config.duration`.
pub async fn receive(conn: &Connection, config: ReceiveConfig) -> DecodeReport {
    let deadline = tokio::time::Instant::now() + config.duration;
    let options = || SubscribeOptions {
        filter: Some(tiermesh_proto::types::SubscriptionFilter::LargestObject),
        token: config.token.clone(),
        ..SubscribeOptions::default()
    };
    let failed = |e: String| DecodeReport { error: Some(e), ..DecodeReport::default() };
    let catalog_track = full(&config.namespace, CATALOG_TRACK_NAME);
    let mut catalog_reader = match JoinedTrack::open(conn, catalog_track, options()).await {
        Ok(r) => r,
        Err(e) => return failed(format!("subscribing to the catalog: {e}")),
    };
    let catalog = match tokio::time::timeout_at(deadline, catalog_reader.next()).await {
        Ok(Some(o)) => match Catalog::from_json(&o.payload) {
            Ok(c) => c,
            Err(e) => return failed(format!("bad catalog: {e}")),
        },
        _ => return failed("no catalog arrived".to_owned()),
    };
    let mut rx = match Receiver::new(
        &catalog,
        config.video_track.as_deref(),
        config.decode,
        config.save.clone(),
    ) {
        Ok(r) => r,
        Err(e) => return failed(e),
    };
    let mut video = match rx.video_track().map(|n| full(&config.namespace, n)) {
        Some(t) => match JoinedTrack::open(conn, t, options()).await {
            Ok(r) => Some(r),
            Err(e) => return failed(format!("subscribing to the video: {e}")),
        },
        None => None,
    };
    let mut audio = match rx.audio_track().map(|n| full(&config.namespace, n)) {
        Some(t) => JoinedTrack::open(conn, t, options()).await.ok(),
        None => None,
    };
    let sleep = tokio::time::sleep_until(deadline);
    tokio::pin!(sleep);
    loop {
        tokio::select! {
            () = &mut sleep => break,
            o = async { match &mut video { Some(r) => r.next().await, None => std::future::pending().await } } => {
                let Some(o) = o else { video = None; continue };
                let props = LocProperties::from_extensions(&o.extensions).unwrap_or_default();
                rx.video_object(o.group_id, o.object_id, &props, &o.payload);
            }
            o = async { match &mut audio { Some(r) => r.next().await, None => std::future::pending().await } } => {
                let Some(o) = o else { audio = None; continue };
                let props = LocProperties::from_extensions(&o.extensions).unwrap_or_default();
                rx.audio_object(&props, &o.payload);
            }
        }
        if video.is_none() && audio.is_none() {
            break;
        }
    }
    rx.finish()
}

/// Whether `path` ends in `.mp4` (what `--save` writes).
pub fn is_mp4_path(path: &Path) -> bool {
    path.extension().is_some_and(|e| e.eq_ignore_ascii_case("mp4"))
}
