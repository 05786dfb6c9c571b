//! Guards `tiermesh sub --save`: what tiermesh's own encoders produce, written by
//! `Mp4Writer`, is an MP4 that ffprobe reads with the right codec, size and exact frame
//! count, that ffmpeg decodes without a single error, that tiermesh reads back byte for
//! byte, and that still plays when the recording process dies before `finish`.

mod media_common;

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use bytes::Bytes;
use media_common::{decode_errors, have_ffmpeg, probe};
use tiermesh_codec::media::output::{AudioTrack, Mp4Writer, Tracks, VideoTrack};
use tiermesh_codec::media::{Error, MediaSample, SampleKind, input};
use tiermesh_codec::test_pattern::{Generator, Tone};
use tiermesh_codec::{Codec, av1, h264, opus};

const FPS: u64 = 30;

fn frame_time(i: u64) -> Duration {
    Duration::from_nanos(i * 1_000_000_000 / FPS)
}

/// One encoded video frame: payload, key flag, record.
type Frame = (Vec<u8>, bool, Option<Vec<u8>>);

fn h264_frames(width: usize, height: usize, count: u32, gop: u32) -> Result<Vec<Frame>> {
    let g = Generator::new(width, height, FPS as f64)?;
    let mut enc = h264::Encoder::new(h264::EncoderConfig {
        width,
        height,
        fps: FPS as f32,
        bitrate: 400_000,
    })?;
    (0..count)
        .map(|i| {
            let p = enc.encode(&g.next_frame(i), i % gop == 0)?;
            Ok((p.data, p.key, p.config))
        })
        .collect()
}

fn av1_frames(width: usize, height: usize, count: u32, gop: u32) -> Result<Vec<Frame>> {
    let g = Generator::new(width, height, FPS as f64)?;
    let mut enc = av1::Encoder::new(av1::EncoderConfig {
        width,
        height,
        fps: FPS as f32,
        bitrate: 300_000,
        speed: av1::DEFAULT_SPEED,
    })?;
    let mut out = Vec::new();
    for i in 0..count {
        for p in enc.send(&g.next_frame(i), i % gop == 0, i)? {
            out.push((p.data, p.key, p.config));
        }
    }
    for p in enc.flush()? {
        out.push((p.data, p.key, p.config));
    }
    Ok(out)
}

fn opus_packets(count: usize) -> Result<Vec<Vec<u8>>> {
    let mut tone = Tone::new(opus::SAMPLE_RATE, 1)?;
    let mut enc = opus::Encoder::new(opus::EncoderConfig::default())?;
    (0..count).map(|_| Ok(enc.encode(&tone.next_frame())?)).collect()
}

fn read_back(path: &Path) -> Result<Vec<MediaSample>> {
    let mut src = input::open(path)?.into_encoded().context("encoded")?;
    let mut out = Vec::new();
    for _ in 0..100_000 {
        match src.next_sample()? {
            Some(s) => out.push(s),
            None => return Ok(out),
        }
    }
    anyhow::bail!("did not end")
}

fn video_track(codec: Codec, frames: &[Frame], width: u32, height: u32) -> Result<VideoTrack> {
    let config =
        frames.first().and_then(|f| f.2.clone()).context("first frame carries the record")?;
    Ok(VideoTrack::new(codec, width, height, config))
}

/// Checks ffprobe's view of the only video stream and that ffmpeg decodes it cleanly.
fn check_playable(path: &Path, codec: &str, width: u64, height: u64, frames: u64) -> Result<()> {
    let streams = probe(path)?;
    let v = streams.iter().find(|s| s.codec_type == "video").context("no video stream")?;
    assert_eq!(v.codec_name, codec);
    assert_eq!((v.width, v.height), (Some(width), Some(height)));
    assert_eq!(v.packets, frames, "packets ffprobe reads");
    assert_eq!(v.frames, frames, "frames ffprobe decodes");
    let errors = decode_errors(path)?;
    assert!(errors.is_empty(), "ffmpeg decode errors:\n{errors}");
    Ok(())
}

#[test]
fn h264_recording_plays_and_reads_back_byte_for_byte() -> Result<()> {
    if !have_ffmpeg("h264_recording_plays_and_reads_back_byte_for_byte") {
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("h264.mp4");
    let frames = h264_frames(320, 180, 45, 15)?;
    let mut w =
        Mp4Writer::create(&path, Tracks::video(video_track(Codec::H264, &frames, 320, 180)?))?;
    for (i, (data, key, _)) in frames.iter().enumerate() {
        w.write_video(data, frame_time(i as u64), *key)?;
    }
    let stats = w.finish()?;
    assert_eq!((stats.fragments, stats.video_samples), (3, 45), "one fragment per group");
    check_playable(&path, "h264", 320, 180, 45)?;

    let back = read_back(&path)?;
    assert_eq!(back.len(), 45);
    for (i, (s, (data, key, config))) in back.iter().zip(&frames).enumerate() {
        assert_eq!(&s.data[..], &data[..], "sample {i} payload");
        assert_eq!(s.is_key(), *key, "sample {i} key flag");
        let SampleKind::Video { codec, width, height, config: back_config, .. } = &s.kind else {
            anyhow::bail!("sample {i} is not video")
        };
        assert_eq!((*codec, *width, *height), (Codec::H264, 320, 180));
        if *key {
            assert_eq!(back_config.as_deref(), config.as_deref(), "sample {i} avcC");
        }
        let drift = s.pts.abs_diff(frame_time(i as u64));
        assert!(drift < Duration::from_micros(20), "sample {i} at {:?}", s.pts);
    }

    // The same frames handed over in Annex B (as `.h264` files hold them) make the same file.
    let annexb_path = dir.path().join("annexb.mp4");
    let mut w = Mp4Writer::create(
        &annexb_path,
        Tracks::video(video_track(Codec::H264, &frames, 320, 180)?),
    )?;
    for (i, (data, key, config)) in frames.iter().enumerate() {
        w.write_video(&h264::to_annexb(data, config.as_deref())?, frame_time(i as u64), *key)?;
    }
    w.finish()?;
    assert_eq!(std::fs::read(&annexb_path)?, std::fs::read(&path)?);
    Ok(())
}

#[test]
fn av1_recording_plays_in_ffmpeg() -> Result<()> {
    if !have_ffmpeg("av1_recording_plays_in_ffmpeg") {
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("av1.mp4");
    // rav1e is the slowest part of the suite: a few small frames make three groups.
    let frames = av1_frames(160, 96, 9, 3)?;
    assert_eq!(frames.len(), 9);
    let mut w =
        Mp4Writer::create(&path, Tracks::video(video_track(Codec::Av1, &frames, 160, 96)?))?;
    for (i, (data, key, _)) in frames.iter().enumerate() {
        w.write_video(data, frame_time(i as u64), *key)?;
    }
    let stats = w.finish()?;
    assert_eq!((stats.fragments, stats.video_samples), (3, 9));
    check_playable(&path, "av1", 160, 96, 9)?;

    let back = read_back(&path)?;
    let keys: Vec<usize> =
        back.iter().enumerate().filter(|(_, s)| s.is_key()).map(|(i, _)| i).collect();
    assert_eq!(keys, vec![0, 3, 6]);
    let mut dec = av1::Decoder::new()?;
    let mut pictures = 0;
    for s in &back {
        if dec.decode(&s.data)?.is_some() {
            pictures += 1;
        }
    }
    assert_eq!(pictures, 9, "every sample read back decodes with dav1d");
    Ok(())
}

#[test]
fn h264_with_opus_audio_plays_in_ffmpeg() -> Result<()> {
    if !have_ffmpeg("h264_with_opus_audio_plays_in_ffmpeg") {
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("av.mp4");
    let frames = h264_frames(160, 96, 60, 30)?;
    let packets = opus_packets(100)?;
    let tracks = Tracks::video(video_track(Codec::H264, &frames, 160, 96)?)
        .with_audio(AudioTrack::opus(48_000, 1));
    let mut w = Mp4Writer::create(&path, tracks)?;
    // Timestamps as a subscriber sees them: wall-clock capture times (2026-01-01T00:00:00Z
    // onwards); the file starts at 0 all the same.
    let epoch = Duration::from_secs(1_767_225_600);
    let audio_time = |n: usize| epoch + Duration::from_millis(20 * n as u64);
    // Interleaved as they would arrive: everything up to each video frame's time.
    let mut next_audio = 0;
    for (i, (data, key, _)) in frames.iter().enumerate() {
        let t = epoch + frame_time(i as u64);
        while next_audio < packets.len() && audio_time(next_audio) <= t {
            w.write_audio(&packets[next_audio], audio_time(next_audio))?;
            next_audio += 1;
        }
        w.write_video(data, t, *key)?;
    }
    for (n, p) in packets.iter().enumerate().skip(next_audio) {
        w.write_audio(p, audio_time(n))?;
    }
    let stats = w.finish()?;
    assert_eq!((stats.video_samples, stats.audio_samples), (60, 100));
    check_playable(&path, "h264", 160, 96, 60)?;
    let streams = probe(&path)?;
    let a = streams.iter().find(|s| s.codec_type == "audio").context("no audio stream")?;
    assert_eq!((a.codec_name.as_str(), a.packets), ("opus", 100));

    let back = read_back(&path)?;
    let audio: Vec<&MediaSample> = back.iter().filter(|s| !s.is_video()).collect();
    assert_eq!(audio.len(), 100);
    for (n, (s, p)) in audio.iter().zip(&packets).enumerate() {
        assert_eq!(&s.data[..], &p[..], "packet {n}");
        assert_eq!(s.pts, Duration::from_millis(20 * n as u64), "packet {n} time");
        assert_eq!(s.duration, Duration::from_millis(20));
    }
    Ok(())
}

#[test]
fn audio_only_recording_plays_in_ffmpeg() -> Result<()> {
    if !have_ffmpeg("audio_only_recording_plays_in_ffmpeg") {
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("audio.mp4");
    let packets = opus_packets(150)?;
    let mut w = Mp4Writer::create(&path, Tracks::audio(AudioTrack::opus(48_000, 1)))?;
    for (n, p) in packets.iter().enumerate() {
        w.write_audio(p, Duration::from_millis(20 * n as u64))?;
    }
    let stats = w.finish()?;
    // 3 s of audio in fragments of at most 2 s.
    assert_eq!((stats.fragments, stats.audio_samples), (2, 150));
    let streams = probe(&path)?;
    assert_eq!(streams.len(), 1);
    assert_eq!((streams[0].codec_name.as_str(), streams[0].packets), ("opus", 150));
    let errors = decode_errors(&path)?;
    assert!(errors.is_empty(), "ffmpeg decode errors:\n{errors}");
    Ok(())
}

#[test]
fn a_recording_whose_process_dies_still_plays() -> Result<()> {
    if !have_ffmpeg("a_recording_whose_process_dies_still_plays") {
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("live.mp4");
    let frames = h264_frames(160, 96, 50, 15)?;
    let mut w =
        Mp4Writer::create(&path, Tracks::video(video_track(Codec::H264, &frames, 160, 96)?))?;
    for (i, (data, key, _)) in frames.iter().enumerate() {
        w.write_video(data, frame_time(i as u64), *key)?;
    }
    // What is on disk now is what a killed process leaves: the groups closed so far.
    let crashed = dir.path().join("crashed.mp4");
    std::fs::copy(&path, &crashed)?;
    check_playable(&crashed, "h264", 160, 96, 45)?;
    assert_eq!(read_back(&crashed)?.len(), 45);

    // Killed in the middle of writing a fragment: tiermesh still reads the closed groups
    // and the samples of the torn one that made it to disk.
    let bytes = std::fs::read(&crashed)?;
    let torn = dir.path().join("torn.mp4");
    std::fs::write(&torn, &bytes[..bytes.len() - 200])?;
    let n = read_back(&torn)?.len();
    assert!((31..45).contains(&n), "{n} samples from the torn file");

    // Dropping the writer (an error path) still writes the rest.
    drop(w);
    check_playable(&path, "h264", 160, 96, 50)?;
    Ok(())
}

#[test]
fn bad_tracks_and_payloads_are_clear_errors() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("bad.mp4");
    let named = |e: Error, expect: &str| {
        let text = e.to_string();
        assert!(text.contains(&path.display().to_string()), "{text:?} does not name the file");
        assert!(text.contains(expect), "{text:?} does not say {expect:?}");
    };
    named(
        Mp4Writer::create(&path, Tracks::default()).unwrap_err(),
        "needs a video or an audio track",
    );
    let garbage = VideoTrack::new(Codec::H264, 320, 180, Bytes::from_static(&[1, 2]));
    named(Mp4Writer::create(&path, Tracks::video(garbage)).unwrap_err(), "configuration record");
    let odd = VideoTrack::new(Codec::Av1, 0, 180, Bytes::from_static(&[0x81, 0, 0, 0]));
    named(Mp4Writer::create(&path, Tracks::video(odd)).unwrap_err(), "video size");
    named(
        Mp4Writer::create(&path, Tracks::audio(AudioTrack::opus(48_000, 6))).unwrap_err(),
        "6 channels",
    );

    let frames = h264_frames(160, 96, 1, 1)?;
    let mut w =
        Mp4Writer::create(&path, Tracks::video(video_track(Codec::H264, &frames, 160, 96)?))?;
    named(w.write_audio(&[1, 2, 3], Duration::ZERO).unwrap_err(), "no audio track");
    named(w.write_video(&[9, 9, 9], Duration::ZERO, true).unwrap_err(), "neither");
    w.write_video(&frames[0].0, Duration::ZERO, true)?;
    ensure!(w.finish()?.video_samples == 1);
    Ok(())
}

#[test]
fn ffmpeg_media_remuxed_through_tiermesh_plays() -> Result<()> {
    // `pub --input` reads a file, `sub --save` writes what arrives: AV1 + Opus from an
    // ffmpeg MP4 through tiermesh's reader and writer must stay exact and playable.
    if !have_ffmpeg("ffmpeg_media_remuxed_through_tiermesh_plays") {
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let source = dir.path().join("source.mp4");
    media_common::make(
        &[media_common::testsrc(160, 96, 25, 1.0), media_common::sine(1.0)],
        &[
            "-c:v",
            "libaom-av1",
            "-cpu-used",
            "8",
            "-usage",
            "realtime",
            "-g",
            "10",
            "-c:a",
            "libopus",
            "-ac",
            "1",
        ],
        &source,
    )?;
    let samples = read_back(&source)?;
    let info = input::open(&source)?.info().clone();
    let v = info.video.context("video")?;
    let a = info.audio.context("audio")?;
    let tracks =
        Tracks::video(VideoTrack::new(Codec::Av1, v.width, v.height, v.config.context("av1C")?))
            .with_audio(AudioTrack::opus(a.sample_rate, a.channels));
    let out = dir.path().join("copy.mp4");
    let mut w = Mp4Writer::create(&out, tracks)?;
    for s in &samples {
        match s.kind {
            SampleKind::Video { key, .. } => w.write_video(&s.data, s.pts, key)?,
            SampleKind::Audio { .. } => w.write_audio(&s.data, s.pts)?,
        }
    }
    w.finish()?;
    check_playable(&out, "av1", 160, 96, 25)?;
    let streams = probe(&out)?;
    let opus = streams.iter().find(|s| s.codec_name == "opus").context("opus stream")?;
    assert_eq!(opus.packets, a.packets);
    let copy = read_back(&out)?;
    assert_eq!(copy.len(), samples.len());
    let payloads = |v: &[MediaSample]| -> Vec<Bytes> { v.iter().map(|s| s.data.clone()).collect() };
    let (mut a_in, mut a_out) = (payloads(&samples), payloads(&copy));
    a_in.sort();
    a_out.sort();
    assert_eq!(a_in, a_out, "every payload survives the copy");
    Ok(())
}

#[test]
fn b_frame_video_keeps_its_display_times() -> Result<()> {
    // H.264 with B-frames (x264's default) arrives in decode order with presentation times
    // that jump back; the recording must show every frame at its own time.
    if !have_ffmpeg("b_frame_video_keeps_its_display_times") {
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let source = dir.path().join("bframes.mp4");
    media_common::make(
        &[media_common::testsrc(160, 96, 25, 1.0)],
        &["-c:v", "libx264", "-bf", "2", "-g", "10", "-sc_threshold", "0"],
        &source,
    )?;
    let samples = read_back(&source)?;
    assert!(samples.windows(2).any(|w| w[1].pts < w[0].pts), "the source reorders frames");
    let v = input::open(&source)?.info().video.clone().context("video")?;
    let track = VideoTrack::new(Codec::H264, v.width, v.height, v.config.context("avcC")?);
    let out = dir.path().join("copy.mp4");
    let mut w = Mp4Writer::create(&out, Tracks::video(track))?;
    for s in &samples {
        w.write_video(&s.data, s.pts, s.is_key())?;
    }
    w.finish()?;
    check_playable(&out, "h264", 160, 96, 25)?;
    let copy = read_back(&out)?;
    let times = |v: &[MediaSample]| v.iter().map(|s| s.pts).collect::<Vec<_>>();
    assert_eq!(times(&copy), times(&samples), "every frame keeps its presentation time");
    Ok(())
}

#[test]
fn av1_tier_switch_mid_recording_still_decodes() -> Result<()> {
    // A subscriber moved down the ladder: AV1 key frames carry their sequence header in
    // band, so one file can hold both sizes.
    if !have_ffmpeg("av1_tier_switch_mid_recording_still_decodes") {
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("switch.mp4");
    let high = av1_frames(160, 96, 4, 4)?;
    let low = av1_frames(96, 64, 4, 4)?;
    let mut w = Mp4Writer::create(&path, Tracks::video(video_track(Codec::Av1, &high, 160, 96)?))?;
    for (i, (data, key, _)) in high.iter().chain(&low).enumerate() {
        w.write_video(data, frame_time(i as u64), *key)?;
    }
    w.finish()?;
    let streams = probe(&path)?;
    assert_eq!(streams[0].frames, 8, "ffmpeg decodes every frame of both tiers");
    let errors = decode_errors(&path)?;
    assert!(errors.is_empty(), "ffmpeg decode errors:\n{errors}");
    let mut dec = av1::Decoder::new()?;
    let sizes: Vec<(usize, usize)> = read_back(&path)?
        .iter()
        .filter_map(|s| dec.decode(&s.data).ok().flatten())
        .map(|p| (p.width, p.height))
        .collect();
    assert_eq!(sizes, [vec![(160, 96); 4], vec![(96, 64); 4]].concat());
    Ok(())
}
