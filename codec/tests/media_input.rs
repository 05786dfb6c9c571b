//! Guards `tiermesh pub --input`: every input format made by ffmpeg from `testsrc2` opens
//! with the right codec, size, frame rate, frame count and key frames, its samples decode
//! with tiermesh's own decoders, `--loop` keeps time going, and damaged files give an error
//! naming the file instead of a panic.

mod media_common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use media_common::{have_ffmpeg, make, sine, testsrc};
use tiermesh_codec::Codec;
use tiermesh_codec::media::input::{self, Config, Input};
use tiermesh_codec::media::{Error, Format, MediaSample, SampleKind, Source};
use tiermesh_codec::{av1, h264, opus};

fn all_samples(source: &mut dyn Source) -> Result<Vec<MediaSample>> {
    let mut out = Vec::new();
    // Bounded: no test file has anywhere near this many samples.
    for _ in 0..10_000 {
        match source.next_sample()? {
            Some(s) => out.push(s),
            None => return Ok(out),
        }
    }
    anyhow::bail!("source did not end")
}

fn video(samples: &[MediaSample]) -> Vec<&MediaSample> {
    samples.iter().filter(|s| s.is_video()).collect()
}

fn key_indices(samples: &[&MediaSample]) -> Vec<usize> {
    samples.iter().enumerate().filter(|(_, s)| s.is_key()).map(|(i, _)| i).collect()
}

fn encoded(path: &Path) -> Result<Box<dyn Source>> {
    input::open(path)?.into_encoded().context("expected an encoded source")
}

/// Checks that every video sample decodes to a picture of the expected size.
fn decode_video(samples: &[&MediaSample], width: usize, height: usize) -> Result<usize> {
    let mut h264_dec = None;
    let mut av1_dec = None;
    let mut pictures = 0;
    for (i, s) in samples.iter().enumerate() {
        let SampleKind::Video { codec, config, .. } = &s.kind else { continue };
        let picture = match codec {
            Codec::H264 => {
                let d = match &mut h264_dec {
                    Some(d) => d,
                    None => h264_dec.insert(h264::Decoder::new()?),
                };
                d.decode(&s.data, config.as_deref()).with_context(|| format!("h264 sample {i}"))?
            }
            Codec::Av1 => {
                let d = match &mut av1_dec {
                    Some(d) => d,
                    None => av1_dec.insert(av1::Decoder::new()?),
                };
                d.decode(&s.data).with_context(|| format!("av1 sample {i}"))?
            }
        };
        if let Some(p) = picture {
            ensure!(
                (p.width, p.height) == (width, height),
                "sample {i} decoded to {}x{}",
                p.width,
                p.height
            );
            pictures += 1;
        }
    }
    Ok(pictures)
}

#[test]
fn y4m_from_ffmpeg_yields_every_picture() -> Result<()> {
    if !have_ffmpeg("y4m_from_ffmpeg_yields_every_picture") {
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("in.y4m");
    make(&[testsrc(160, 96, 25, 1.0)], &["-pix_fmt", "yuv420p"], &path)?;
    let Input::Raw(mut src) = input::open(&path)? else { anyhow::bail!("Y4M should be raw") };
    let info = src.info().clone();
    assert_eq!(info.format, Format::Y4m);
    let v = info.video.clone().context("video info")?;
    assert_eq!((v.width, v.height, v.frames, v.codec), (160, 96, 25, None));
    assert!((v.fps - 25.0).abs() < 1e-9, "{}", v.fps);
    assert_eq!(info.duration, Duration::from_secs(1));
    let mut frames = Vec::new();
    while let Some(f) = src.next_frame()? {
        frames.push(f);
        ensure!(frames.len() <= 25, "more frames than the file has");
    }
    assert_eq!(frames.len(), 25);
    for (i, f) in frames.iter().enumerate() {
        assert_eq!(f.pts, Duration::from_millis(40 * i as u64));
        assert_eq!(f.duration, Duration::from_millis(40));
        assert_eq!((f.picture.width, f.picture.height), (160, 96));
        f.picture.validate()?;
    }
    // testsrc2 moves: consecutive pictures differ, and a rewind starts over.
    assert_ne!(frames[0].picture, frames[1].picture);
    src.rewind()?;
    assert_eq!(src.next_frame()?.context("first frame again")?, frames[0]);
    Ok(())
}

#[test]
fn ivf_av1_from_ffmpeg_has_key_frames_and_decodes() -> Result<()> {
    if !have_ffmpeg("ivf_av1_from_ffmpeg_has_key_frames_and_decodes") {
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("in.ivf");
    make(
        &[testsrc(160, 96, 25, 1.0)],
        &[
            "-c:v",
            "libaom-av1",
            "-cpu-used",
            "8",
            "-usage",
            "realtime",
            "-g",
            "10",
            "-keyint_min",
            "10",
        ],
        &path,
    )?;
    let mut src = encoded(&path)?;
    let info = src.info().clone();
    let v = info.video.clone().context("video info")?;
    assert_eq!(info.format, Format::Ivf);
    assert_eq!((v.codec, v.width, v.height, v.frames), (Some(Codec::Av1), 160, 96, 25));
    assert!((v.fps - 25.0).abs() < 0.01, "{}", v.fps);
    assert!(
        v.codec_string.as_deref().is_some_and(|c| c.starts_with("av01.0.")),
        "{:?}",
        v.codec_string
    );
    let samples = all_samples(src.as_mut())?;
    let vs = video(&samples);
    assert_eq!(vs.len(), 25);
    assert_eq!(key_indices(&vs), vec![0, 10, 20]);
    for s in &vs {
        let SampleKind::Video { key, config, .. } = &s.kind else { unreachable!() };
        assert_eq!(*key, config.is_some(), "key frames and only they carry av1C");
    }
    assert_eq!(vs[24].pts, Duration::from_millis(960));
    assert_eq!(decode_video(&vs, 160, 96)?, 25);
    Ok(())
}

#[test]
fn annexb_h264_from_ffmpeg_splits_access_units_and_reads_the_sps() -> Result<()> {
    if !have_ffmpeg("annexb_h264_from_ffmpeg_splits_access_units_and_reads_the_sps") {
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("in.h264");
    // 160x90 is coded as 160x96 with 6 lines cropped: the size must come out cropped.
    make(
        &[testsrc(160, 90, 25, 1.0)],
        &[
            "-c:v",
            "libx264",
            "-profile:v",
            "baseline",
            "-g",
            "10",
            "-sc_threshold",
            "0",
            "-f",
            "h264",
        ],
        &path,
    )?;
    let mut src = encoded(&path)?;
    let info = src.info().clone();
    let v = info.video.clone().context("video info")?;
    assert_eq!(info.format, Format::AnnexB);
    assert_eq!((v.codec, v.width, v.height, v.frames), (Some(Codec::H264), 160, 90, 25));
    assert!((v.fps - 25.0).abs() < 1e-9, "frame rate from the VUI: {}", v.fps);
    assert!(
        v.codec_string.as_deref().is_some_and(|c| c.starts_with("avc1.42")),
        "{:?}",
        v.codec_string
    );
    let samples = all_samples(src.as_mut())?;
    let vs = video(&samples);
    assert_eq!(vs.len(), 25);
    assert_eq!(key_indices(&vs), vec![0, 10, 20]);
    assert_eq!(vs[5].pts, Duration::from_millis(200));
    assert_eq!(decode_video(&vs, 160, 90)?, 25);
    Ok(())
}

#[test]
fn annexb_without_vui_timing_uses_the_configured_rate() -> Result<()> {
    // OpenH264's stream carries no VUI timing: the frame rate comes from the flag.
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("openh264.264");
    let generator = tiermesh_codec::test_pattern::Generator::new(160, 96, 30.0)?;
    let mut enc = h264::Encoder::new(h264::EncoderConfig {
        width: 160,
        height: 96,
        fps: 30.0,
        bitrate: 300_000,
    })?;
    let mut stream = Vec::new();
    for i in 0..12 {
        let p = enc.encode(&generator.next_frame(i), i % 6 == 0)?;
        stream.extend(h264::to_annexb(&p.data, p.config.as_deref())?);
    }
    std::fs::write(&path, &stream)?;
    let mut src = input::open_with(&path, &Config::default().default_fps(12.5))?
        .into_encoded()
        .context("encoded")?;
    let v = src.info().video.clone().context("video")?;
    assert_eq!((v.width, v.height, v.frames), (160, 96, 12));
    assert!((v.fps - 12.5).abs() < 1e-9, "{}", v.fps);
    let samples = all_samples(src.as_mut())?;
    assert_eq!(key_indices(&video(&samples)), vec![0, 6]);
    assert_eq!(samples[1].pts, Duration::from_millis(80));
    Ok(())
}

fn check_mp4(path: &Path, codec: Codec, codec_prefix: &str) -> Result<()> {
    let mut src = encoded(path)?;
    let info = src.info().clone();
    assert_eq!(info.format, Format::Mp4);
    let v = info.video.clone().context("video info")?;
    assert_eq!((v.codec, v.width, v.height, v.frames), (Some(codec), 160, 96, 25));
    assert!((v.fps - 25.0).abs() < 0.01, "{}", v.fps);
    assert!(
        v.codec_string.as_deref().is_some_and(|c| c.starts_with(codec_prefix)),
        "{:?}",
        v.codec_string
    );
    let a = info.audio.clone().context("audio info")?;
    assert_eq!((a.sample_rate, a.channels), (48_000, 1));
    let probed = media_common::probe(path)?;
    let opus_packets =
        probed.iter().find(|s| s.codec_name == "opus").context("ffprobe sees opus")?.packets;
    assert_eq!(a.packets, opus_packets);

    let samples = all_samples(src.as_mut())?;
    let vs = video(&samples);
    assert_eq!(vs.len(), 25);
    assert_eq!(key_indices(&vs), vec![0, 10, 20]);
    assert_eq!(decode_video(&vs, 160, 96)?, 25);
    let audio: Vec<&MediaSample> = samples.iter().filter(|s| !s.is_video()).collect();
    assert_eq!(audio.len() as u64, opus_packets);
    // Samples come interleaved by time, not track by track.
    let first_audio = samples.iter().position(|s| !s.is_video()).context("audio")?;
    assert!(first_audio < 5, "audio starts at sample {first_audio}");
    let mut dec = opus::Decoder::new(1)?;
    for (i, s) in audio.iter().enumerate() {
        let pcm = dec.decode(&s.data).with_context(|| format!("opus packet {i}"))?;
        ensure!(!pcm.samples.is_empty(), "opus packet {i} decoded to nothing");
    }
    for w in audio.windows(2) {
        ensure!(w[1].pts > w[0].pts, "audio times increase");
    }
    Ok(())
}

#[test]
fn mp4_h264_opus_from_ffmpeg() -> Result<()> {
    if !have_ffmpeg("mp4_h264_opus_from_ffmpeg") {
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("in.mp4");
    make(
        &[testsrc(160, 96, 25, 1.0), sine(1.0)],
        &[
            "-c:v",
            "libx264",
            "-profile:v",
            "baseline",
            "-g",
            "10",
            "-sc_threshold",
            "0",
            "-c:a",
            "libopus",
            "-ac",
            "1",
        ],
        &path,
    )?;
    check_mp4(&path, Codec::H264, "avc1.42")
}

#[test]
fn mp4_av1_opus_from_ffmpeg() -> Result<()> {
    if !have_ffmpeg("mp4_av1_opus_from_ffmpeg") {
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("in.mp4");
    make(
        &[testsrc(160, 96, 25, 1.0), sine(1.0)],
        &[
            "-c:v",
            "libaom-av1",
            "-cpu-used",
            "8",
            "-usage",
            "realtime",
            "-g",
            "10",
            "-keyint_min",
            "10",
            "-c:a",
            "libopus",
            "-ac",
            "1",
        ],
        &path,
    )?;
    check_mp4(&path, Codec::Av1, "av01.0.")
}

#[test]
fn looped_input_keeps_time_going() -> Result<()> {
    if !have_ffmpeg("looped_input_keeps_time_going") {
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("in.ivf");
    make(
        &[testsrc(160, 96, 25, 0.4)],
        &["-c:v", "libaom-av1", "-cpu-used", "8", "-usage", "realtime"],
        &path,
    )?;
    let mut src = input::open(&path)?.looped().into_encoded().context("encoded")?;
    let mut last = None;
    for i in 0..35u64 {
        let s = src.next_sample()?.context("a loop never ends")?;
        // 10 frames per pass at 25 fps: frame i is at i * 40 ms across passes.
        assert_eq!(s.pts, Duration::from_millis(40 * i), "sample {i}");
        assert_eq!(s.is_key(), i % 10 == 0, "sample {i} starts a pass: key frame");
        if let Some(l) = last {
            assert!(s.pts > l);
        }
        last = Some(s.pts);
    }
    Ok(())
}

#[test]
fn format_comes_from_the_signature_not_the_name() -> Result<()> {
    if !have_ffmpeg("format_comes_from_the_signature_not_the_name") {
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("clip.bin");
    make(&[testsrc(160, 96, 25, 0.2)], &["-c:v", "libx264", "-f", "mp4"], &path)?;
    assert_eq!(input::detect(&path)?, Format::Mp4);
    assert_eq!(input::open(&path)?.info().video.as_ref().map(|v| v.frames), Some(5));
    Ok(())
}

/// The error must name the file; it must not be a panic (the test would abort).
fn assert_error_names(result: Result<Input, Error>, path: &Path, expect: &str) {
    match result {
        Ok(i) => panic!("{} opened: {i:?}", path.display()),
        Err(e) => {
            let text = e.to_string();
            assert!(
                text.contains(&path.display().to_string()),
                "error {text:?} does not name the file"
            );
            assert!(text.contains(expect), "error {text:?} does not say {expect:?}");
        }
    }
}

#[test]
fn garbage_and_empty_files_are_clear_errors() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let write = |name: &str, bytes: &[u8]| -> Result<PathBuf> {
        let p = dir.path().join(name);
        std::fs::write(&p, bytes)?;
        Ok(p)
    };
    let missing = dir.path().join("missing.mp4");
    assert_error_names(input::open(&missing), &missing, "No such file");
    let empty = write("empty.ivf", b"")?;
    assert_error_names(input::open(&empty), &empty, "empty");
    let text = write("notes.txt", b"hello, this is not video")?;
    assert_error_names(input::open(&text), &text, "unknown format");
    let fake_ivf = write("fake.ivf", b"hello, this is not video")?;
    assert_error_names(input::open(&fake_ivf), &fake_ivf, "DKIF");
    let fake_mp4 = write("fake.mp4", &[0, 0, 0, 8, b'f', b't', b'y', b'p', 0xff, 0xff])?;
    assert_error_names(input::open(&fake_mp4), &fake_mp4, "malformed MP4");
    let huge = write("huge.mp4", &[0xff, 0xff, 0xff, 0xff, b'm', b'o', b'o', b'v', 1, 2, 3])?;
    assert_error_names(input::open(&huge), &huge, "claims");
    let y4m_444 = write("x.y4m", b"YUV4MPEG2 W16 H16 F25:1 C444\nFRAME\n")?;
    assert_error_names(input::open(&y4m_444), &y4m_444, "C444");
    let y4m_odd = write("odd.y4m", b"YUV4MPEG2 W15 H16\n")?;
    assert_error_names(input::open(&y4m_odd), &y4m_odd, "unsupported");
    let av1_in_ivf =
        write("vp8.ivf", b"DKIF\0\0\x20\0VP80\xa0\0\x60\0\x19\0\0\0\x01\0\0\0\x01\0\0\0\0\0\0\0")?;
    assert_error_names(input::open(&av1_in_ivf), &av1_in_ivf, "only AV1");
    let no_start = write("x.h264", &[0x42; 64])?;
    assert_error_names(input::open(&no_start), &no_start, "start code");
    // Start codes but no picture.
    let sei_only = write("sei.h264", &[0, 0, 0, 1, 0x06, 5, 1, 0x80, 0, 0, 1, 0x09, 0xf0])?;
    assert_error_names(input::open(&sei_only), &sei_only, "no picture");
    Ok(())
}

#[test]
fn truncated_files_are_errors_or_shorter_never_panics() -> Result<()> {
    if !have_ffmpeg("truncated_files_are_errors_or_shorter_never_panics") {
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let y4m = dir.path().join("t.y4m");
    make(&[testsrc(64, 64, 25, 0.2)], &["-pix_fmt", "yuv420p"], &y4m)?;
    let ivf = dir.path().join("t.ivf");
    make(
        &[testsrc(160, 96, 25, 0.4)],
        &["-c:v", "libaom-av1", "-cpu-used", "8", "-usage", "realtime"],
        &ivf,
    )?;
    let h264 = dir.path().join("t.h264");
    make(&[testsrc(160, 96, 25, 0.4)], &["-c:v", "libx264", "-f", "h264"], &h264)?;
    let mp4 = dir.path().join("t.mp4");
    make(&[testsrc(160, 96, 25, 0.4), sine(0.4)], &["-c:v", "libx264", "-c:a", "libopus"], &mp4)?;

    // Specific messages for the cuts a user meets: a frame cut in the middle, an
    // unfinished MP4 (ffmpeg writes its moov last).
    for (path, cut_from_end, expect) in
        [(&y4m, 100, "frame 4"), (&ivf, 10, "remain"), (&mp4, 100, "moov")]
    {
        let bytes = std::fs::read(path)?;
        let cut = dir.path().join(format!("cut-{}", path.file_name().unwrap().to_string_lossy()));
        std::fs::write(&cut, &bytes[..bytes.len() - cut_from_end])?;
        assert_error_names(input::open(&cut), &cut, expect);
    }

    // Every cut of every file: an error, or a shorter file that reads to its end.
    let mut errors = 0;
    let mut opened = 0;
    for path in [&y4m, &ivf, &h264, &mp4] {
        let bytes = std::fs::read(path)?;
        let cut = dir.path().join(format!("any-{}", path.file_name().unwrap().to_string_lossy()));
        let step = (bytes.len() / 97).max(1);
        for len in (0..bytes.len()).step_by(step) {
            std::fs::write(&cut, &bytes[..len])?;
            match input::open(&cut) {
                Err(e) => {
                    assert!(e.to_string().contains(&cut.display().to_string()), "{e}");
                    errors += 1;
                }
                Ok(Input::Encoded(mut s)) => {
                    opened += 1;
                    // Reading may still find damage; it must say so, not panic.
                    while let Ok(Some(_)) = s.next_sample() {}
                }
                Ok(Input::Raw(mut s)) => {
                    opened += 1;
                    while let Ok(Some(_)) = s.next_frame() {}
                }
            }
        }
    }
    assert!(errors > 100, "{errors} errors, {opened} opened");
    Ok(())
}

#[test]
fn corrupted_bytes_never_panic() -> Result<()> {
    if !have_ffmpeg("corrupted_bytes_never_panic") {
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let sources = [("c.ivf", "libaom-av1"), ("c.h264", "libx264"), ("c.mp4", "libx264")];
    for (name, codec) in sources {
        let path = dir.path().join(name);
        let mut opts = vec!["-c:v", codec];
        if codec == "libaom-av1" {
            opts.extend(["-cpu-used", "8", "-usage", "realtime"]);
        }
        make(&[testsrc(160, 96, 25, 0.2)], &opts, &path)?;
        let clean = std::fs::read(&path)?;
        // A deterministic walk over byte positions, flipping bits.
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        for round in 0..60 {
            let mut bytes = clean.clone();
            for _ in 0..4 {
                state = state
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                let at = (state >> 33) as usize % bytes.len();
                bytes[at] ^= (state >> 24) as u8 | 1;
            }
            let bad = dir.path().join(format!("bad-{round}-{name}"));
            std::fs::write(&bad, &bytes)?;
            if let Ok(Input::Encoded(mut s)) = input::open(&bad) {
                for _ in 0..1000 {
                    match s.next_sample() {
                        Ok(Some(_)) => {}
                        Ok(None) => break,
                        Err(e) => {
                            assert!(e.to_string().contains(&bad.display().to_string()), "{e}");
                            break;
                        }
                    }
                }
            }
            std::fs::remove_file(&bad)?;
        }
    }
    Ok(())
}

#[test]
fn mp4_with_b_frames_gives_presentation_times_in_decode_order() -> Result<()> {
    if !have_ffmpeg("mp4_with_b_frames_gives_presentation_times_in_decode_order") {
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("bframes.mp4");
    // x264's default (High profile, B-frames): decode order differs from display order and
    // the file has an edit list for the reordering delay.
    make(&[testsrc(160, 96, 25, 1.0)], &["-c:v", "libx264", "-bf", "2", "-g", "25"], &path)?;
    let mut src = encoded(&path)?;
    let samples = all_samples(src.as_mut())?;
    assert_eq!(samples.len(), 25);
    let pts: Vec<Duration> = samples.iter().map(|s| s.pts).collect();
    assert!(
        pts.windows(2).any(|w| w[1] < w[0]),
        "B-frames come before the frame they follow: {pts:?}"
    );
    let mut shown = pts.clone();
    shown.sort();
    let expected: Vec<Duration> = (0..25).map(|i| Duration::from_millis(40 * i)).collect();
    assert_eq!(shown, expected, "presentation times are the display times from 0");
    assert!(samples[0].is_key());
    Ok(())
}

#[test]
fn damaged_recordings_never_panic() -> Result<()> {
    // Recordings tiermesh wrote itself (fragmented MP4) with bytes flipped and cut.
    use tiermesh_codec::media::output::{Mp4Writer, Tracks, VideoTrack};
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("rec.mp4");
    let generator = tiermesh_codec::test_pattern::Generator::new(96, 64, 30.0)?;
    let mut enc = h264::Encoder::new(h264::EncoderConfig {
        width: 96,
        height: 64,
        fps: 30.0,
        bitrate: 200_000,
    })?;
    let mut w = None;
    for i in 0..20 {
        let p = enc.encode(&generator.next_frame(i), i % 5 == 0)?;
        let writer = match &mut w {
            Some(w) => w,
            None => {
                let config = p.config.clone().context("first frame has avcC")?;
                let track = VideoTrack::new(Codec::H264, 96, 64, config);
                w.insert(Mp4Writer::create(&path, Tracks::video(track))?)
            }
        };
        writer.write_video(&p.data, Duration::from_millis(33 * u64::from(i)), p.key)?;
    }
    w.context("writer")?.finish()?;
    let clean = std::fs::read(&path)?;
    let mut state: u64 = 0x2545_f491_4f6c_dd1d;
    for round in 0..200 {
        let mut bytes = clean.clone();
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let at = (state % bytes.len() as u64) as usize;
        if round % 2 == 0 {
            bytes[at] ^= (state >> 40) as u8 | 1;
        } else {
            bytes.truncate(at);
        }
        let bad = dir.path().join("bad.mp4");
        std::fs::write(&bad, &bytes)?;
        match input::open(&bad) {
            Err(e) => assert!(e.to_string().contains(&bad.display().to_string()), "{e}"),
            Ok(i) => {
                let mut s = i.into_encoded().context("encoded")?;
                for _ in 0..100 {
                    match s.next_sample() {
                        Ok(Some(_)) => {}
                        Ok(None) | Err(_) => break,
                    }
                }
            }
        }
    }
    Ok(())
}

#[test]
fn looped_y4m_repeats_pictures_with_increasing_times() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("two.y4m");
    let mut bytes = b"YUV4MPEG2 W4 H2 F10:1 Ip A1:1 C420jpeg\n".to_vec();
    for shade in [10u8, 20] {
        bytes.extend_from_slice(b"FRAME\n");
        bytes.extend(std::iter::repeat_n(shade, 4 * 2 + 2 * 2));
    }
    std::fs::write(&path, &bytes)?;
    let Input::Raw(mut src) = input::open(&path)?.looped() else { anyhow::bail!("raw") };
    for i in 0..5u64 {
        let f = src.next_frame()?.context("a loop never ends")?;
        assert_eq!(f.pts, Duration::from_millis(100 * i));
        assert_eq!(f.picture.y[0], if i % 2 == 0 { 10 } else { 20 });
    }
    Ok(())
}

#[test]
fn annexb_stream_that_changes_size_reports_each_part() -> Result<()> {
    // Two streams back to back (as a camera that renegotiated, or `cat a.h264 b.h264`):
    // the second IDR brings a new SPS, and its samples carry the new size and avcC.
    if !have_ffmpeg("annexb_stream_that_changes_size_reports_each_part") {
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let (a, b) = (dir.path().join("a.h264"), dir.path().join("b.h264"));
    let opts = [
        "-c:v",
        "libx264",
        "-profile:v",
        "baseline",
        "-g",
        "5",
        "-sc_threshold",
        "0",
        "-f",
        "h264",
    ];
    make(&[testsrc(160, 96, 25, 0.4)], &opts, &a)?;
    make(&[testsrc(320, 180, 25, 0.4)], &opts, &b)?;
    let joined = dir.path().join("joined.h264");
    std::fs::write(&joined, [std::fs::read(&a)?, std::fs::read(&b)?].concat())?;
    let mut src = encoded(&joined)?;
    let samples = all_samples(src.as_mut())?;
    assert_eq!(samples.len(), 20);
    let sizes: Vec<(u32, u32)> = samples
        .iter()
        .map(|s| match s.kind {
            SampleKind::Video { width, height, .. } => (width, height),
            SampleKind::Audio { .. } => (0, 0),
        })
        .collect();
    assert!(sizes[..10].iter().all(|&s| s == (160, 96)), "{sizes:?}");
    assert!(sizes[10..].iter().all(|&s| s == (320, 180)), "{sizes:?}");
    let configs: Vec<_> = samples
        .iter()
        .filter_map(|s| match &s.kind {
            SampleKind::Video { config: Some(c), .. } => Some(c.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(configs.len(), 4, "one avcC per IDR");
    assert_eq!(configs[0], configs[1]);
    assert_ne!(configs[1], configs[2], "the new SPS makes a new avcC");
    Ok(())
}
