//! Shared helpers of the ladder tests: run a ladder over the test pattern and check what
//! every rung produced by decoding it.

#![allow(dead_code)]

use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result, bail, ensure};
use tiermesh_codec::frame::{I420, psnr};
use tiermesh_codec::ladder::{Pipeline, Sink};
use tiermesh_codec::scale::Scaler;
use tiermesh_codec::test_pattern::{Generator, read_barcode};
use tiermesh_codec::{EncodedFrame, Ladder, LadderConfig, Rung};

/// Capture time of the first frame: a realistic wall-clock value (2026-01-01T00:00:00Z).
pub const EPOCH_US: u64 = 1_767_225_600_000_000;
pub const SOURCE_W: usize = 1280;
pub const SOURCE_H: usize = 720;
pub const FPS: f64 = 30.0;

/// The rung `name` of the default H.264 ladder (`LadderConfig::default()`): a test that
/// needs a realistic rung takes it from there, so it encodes at the rates tiermesh ships.
pub fn default_rung(name: &str) -> Rung {
    LadderConfig::default()
        .rungs
        .into_iter()
        .find(|r| r.name == name)
        .unwrap_or_else(|| panic!("no rung {name} in the default ladder"))
}

/// The rung `name` of the AV1 ladder (`LadderConfig::av1_low()`).
pub fn av1_rung(name: &str) -> Rung {
    LadderConfig::av1_low()
        .rungs
        .into_iter()
        .find(|r| r.name == name)
        .unwrap_or_else(|| panic!("no rung {name} in the AV1 ladder"))
}

pub fn capture_us(index: u32) -> u64 {
    EPOCH_US + (f64::from(index) * 1_000_000.0 / FPS) as u64
}

/// The 720p test pattern with noise, the hard case for the encoders.
pub fn generator() -> Generator {
    Generator::new(SOURCE_W, SOURCE_H, FPS).expect("generator").with_noise(4)
}

/// The first `frames` source pictures (generated once: the pattern is slow in a debug build).
pub fn sources(frames: u32) -> Vec<I420> {
    let g = generator();
    (0..frames).map(|i| g.frame(i, capture_us(i))).collect()
}

/// Pushes the source frames through a ladder and returns what each rung produced,
/// in output order, after flushing.
pub fn run_ladder(ladder: &mut Ladder, sources: &[I420]) -> Result<Vec<Vec<EncodedFrame>>> {
    let mut per_rung = vec![Vec::new(); ladder.rungs().len()];
    for (i, f) in sources.iter().enumerate() {
        let i = i as u32;
        for e in ladder.push(f, capture_us(i)).context("push")? {
            per_rung[e.rung].push(e);
        }
    }
    for e in ladder.flush()? {
        per_rung[e.rung].push(e);
    }
    Ok(per_rung)
}

/// What decoding one rung showed.
#[derive(Debug)]
pub struct RungReport {
    pub frames: usize,
    pub min_psnr: f64,
    pub mean_psnr: f64,
    pub key_inputs: Vec<u64>,
    pub bytes: usize,
}

/// Decodes every frame of one rung with `decode`, and checks: one decoded picture per
/// encoded frame, the rung's size, the barcode equal to the input index, PSNR against the
/// scaled source at least `min_psnr` dB, input order and capture times preserved.
pub fn check_rung(
    sources: &[I420],
    cfg: &LadderConfig,
    rung: usize,
    frames: &[EncodedFrame],
    expected_frames: usize,
    min_psnr: f64,
    mut decode: impl FnMut(&EncodedFrame) -> Result<Option<I420>>,
) -> Result<RungReport> {
    let r = &cfg.rungs[rung];
    ensure!(
        frames.len() == expected_frames,
        "{}: {} frames, expected {expected_frames}",
        r.name,
        frames.len()
    );
    let mut scaler = Scaler::new();
    let (mut min, mut sum) = (f64::INFINITY, 0.0);
    let mut key_inputs = Vec::new();
    let mut bytes = 0;
    for (n, e) in frames.iter().enumerate() {
        ensure!(e.track_name == format!("video/{}", r.name), "track name {}", e.track_name);
        ensure!(
            e.input_index == n as u64,
            "{}: frame {n} has input index {}",
            r.name,
            e.input_index
        );
        ensure!(e.capture_us == capture_us(n as u32), "{}: capture time of frame {n}", r.name);
        ensure!(
            e.key_frame == e.config.is_some(),
            "{}: config record must come with key frames",
            r.name
        );
        ensure!(e.key_frame == (e.object_id == 0), "{}: key frames open groups (object 0)", r.name);
        if e.key_frame {
            key_inputs.push(e.input_index);
        }
        bytes += e.data.len();
        let pic = decode(e)?.with_context(|| format!("{}: frame {n} gave no picture", r.name))?;
        ensure!(
            (pic.width, pic.height) == (r.width, r.height),
            "{}: decoded {}x{}",
            r.name,
            pic.width,
            pic.height
        );
        let code = read_barcode(&pic);
        ensure!(code == Some(n as u32), "{}: frame {n} shows barcode {code:?}", r.name);
        let source = scaler.scale(&sources[n], r.width, r.height)?;
        let p = psnr(&source, &pic)?;
        min = min.min(p);
        sum += p;
    }
    let mean = sum / frames.len() as f64;
    ensure!(min >= min_psnr, "{}: PSNR fell to {min:.2} dB (mean {mean:.2})", r.name);
    Ok(RungReport { frames: frames.len(), min_psnr: min, mean_psnr: mean, key_inputs, bytes })
}

pub fn have(tool: &str) -> bool {
    Command::new(tool)
        .arg("-version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Decodes a whole elementary stream with Debian's ffmpeg (`format` is `h264` or `obu`,
/// `decoder` an ffmpeg decoder name) and returns the pictures. Fails on any message ffmpeg
/// prints at error level.
pub fn ffmpeg_decode(
    stream: &[u8],
    format: &str,
    decoder: &str,
    width: usize,
    height: usize,
) -> Result<Vec<I420>> {
    let dir = tempdir()?;
    let input = dir.join(format!("stream.{format}"));
    std::fs::File::create(&input)?.write_all(stream)?;
    let out = Command::new("ffmpeg")
        .args(["-nostdin", "-v", "error", "-c:v", decoder, "-f", format, "-i"])
        .arg(&input)
        .args(["-f", "rawvideo", "-pix_fmt", "yuv420p", "-"])
        .output()
        .context("running ffmpeg")?;
    let _ = std::fs::remove_dir_all(&dir);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() || !stderr.trim().is_empty() {
        bail!("ffmpeg ({decoder}) failed: {stderr}");
    }
    let frame_len = width * height * 3 / 2;
    ensure!(
        out.stdout.len() % frame_len == 0,
        "ffmpeg output is not whole {width}x{height} frames"
    );
    out.stdout
        .chunks(frame_len)
        .map(|c| {
            let (y, rest) = c.split_at(width * height);
            let (u, v) = rest.split_at(width * height / 4);
            Ok(I420::from_planes(width, height, [y, u, v], [width, width / 2, width / 2])?)
        })
        .collect()
}

fn tempdir() -> Result<std::path::PathBuf> {
    let base = std::env::temp_dir();
    for n in 0..1000u32 {
        let p = base.join(format!("tiermesh-codec-{}-{n}", std::process::id()));
        if std::fs::create_dir(&p).is_ok() {
            return Ok(p);
        }
    }
    bail!("no temporary directory")
}

/// A pipeline (every frame pushed is encoded) whose sink collects what the rungs made, and
/// fails the test on an encoder error.
pub fn pipeline(cfg: LadderConfig) -> Result<(Pipeline, Arc<Mutex<Vec<EncodedFrame>>>)> {
    let out: Arc<Mutex<Vec<EncodedFrame>>> = Arc::default();
    let sink: Sink = {
        let out = out.clone();
        Arc::new(move |r: Result<Vec<EncodedFrame>, tiermesh_codec::Error>| {
            out.lock().unwrap().extend(r.expect("encoding failed"));
        })
    };
    Ok((Ladder::new(cfg)?.into_pipeline(sink)?, out))
}
