//! The camera the ingest tests feed: a 720p30 test pattern with noise in H.264 at 4 Mbit/s
//! (far above the ladder's top rung, as a camera uplink would be), a key frame every
//! second, and a tone in Opus, written as one MP4 file.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use tiermesh_codec::media::output::{AudioTrack, Mp4Writer, Tracks, VideoTrack};
use tiermesh_codec::{Codec, h264, opus, test_pattern};

/// Writes `frames` frames of the source, with the pattern's noise at `noise`, to `path`.
pub fn make_source(path: &Path, frames: u32, noise: u8) -> Result<()> {
    let pattern = test_pattern::Generator::new(1280, 720, 30.0)?.with_noise(noise);
    let mut video = h264::Encoder::new(h264::EncoderConfig {
        width: 1280,
        height: 720,
        fps: 30.0,
        bitrate: 4_000_000,
    })?;
    let mut tone = test_pattern::Tone::new(opus::SAMPLE_RATE, 1)?;
    let mut audio = opus::Encoder::new(opus::EncoderConfig::default())?;
    let mut writer: Option<Mp4Writer> = None;
    let mut audio_us = 0u64;
    for i in 0..frames {
        let pts_us = u64::from(i) * 1_000_000 / 30;
        let packet = video.encode(&pattern.next_frame(i), i % 30 == 0)?;
        if writer.is_none() {
            let config = packet.config.clone().context("the first frame has no avcC")?;
            let tracks = Tracks::video(VideoTrack::new(Codec::H264, 1280, 720, config))
                .with_audio(AudioTrack::opus(opus::SAMPLE_RATE, 1));
            writer = Some(Mp4Writer::create(path, tracks)?);
        }
        let w = writer.as_mut().context("writer")?;
        w.write_video(&packet.data, Duration::from_micros(pts_us), packet.key)?;
        while audio_us <= pts_us {
            w.write_audio(&audio.encode(&tone.next_frame())?, Duration::from_micros(audio_us))?;
            audio_us += opus::FRAME_US;
        }
    }
    writer.context("no frames")?.finish()?;
    Ok(())
}
