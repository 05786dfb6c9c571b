//! Shared helpers of the media tests: test media made by Debian's ffmpeg, and ffprobe /
//! ffmpeg checks of what tiermesh wrote.

#![allow(dead_code)]

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail, ensure};

/// True if ffmpeg and ffprobe run. Where they do not, a test prints why it is skipped;
/// under CI (`CI` set) their absence is a failure, since CI installs them.
pub fn have_ffmpeg(test: &str) -> bool {
    let ok = ["ffmpeg", "ffprobe"].iter().all(|tool| {
        Command::new(tool).arg("-version").output().map(|o| o.status.success()).unwrap_or(false)
    });
    if !ok {
        assert!(
            std::env::var_os("CI").is_none(),
            "{test}: ffmpeg/ffprobe missing under CI (scripts/setup.sh installs them)"
        );
        eprintln!("SKIPPED {test}: ffmpeg/ffprobe are not installed (apt-get install ffmpeg)");
    }
    ok
}

/// Runs `ffmpeg -v error -y <args>` and fails with its message if it fails.
pub fn ffmpeg(args: &[&str]) -> Result<()> {
    let out = Command::new("ffmpeg")
        .args(["-v", "error", "-y"])
        .args(args)
        .output()
        .context("running ffmpeg")?;
    ensure!(
        out.status.success(),
        "ffmpeg {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// The `testsrc2` pattern as ffmpeg input arguments.
pub fn testsrc(width: u32, height: u32, fps: u32, seconds: f64) -> Vec<String> {
    vec![
        "-f".into(),
        "lavfi".into(),
        "-i".into(),
        format!("testsrc2=size={width}x{height}:rate={fps}:duration={seconds}"),
    ]
}

/// A 440 Hz sine at 48 kHz as ffmpeg input arguments.
pub fn sine(seconds: f64) -> Vec<String> {
    vec![
        "-f".into(),
        "lavfi".into(),
        "-i".into(),
        format!("sine=frequency=440:sample_rate=48000:duration={seconds}"),
    ]
}

/// Builds a file with ffmpeg from input arguments, output options and the output path.
pub fn make(inputs: &[Vec<String>], options: &[&str], out: &Path) -> Result<()> {
    let mut args: Vec<String> = inputs.iter().flatten().cloned().collect();
    args.extend(options.iter().map(|s| s.to_string()));
    args.push(out.to_str().context("path")?.to_string());
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    ffmpeg(&refs)
}

/// One stream as ffprobe sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stream {
    pub codec_type: String,
    pub codec_name: String,
    pub width: Option<u64>,
    pub height: Option<u64>,
    /// Packets read (`-count_packets`).
    pub packets: u64,
    /// Frames decoded (`-count_frames`).
    pub frames: u64,
}

/// The streams of a file: codec, size, packet count and decoded frame count.
pub fn probe(path: &Path) -> Result<Vec<Stream>> {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-count_packets", "-count_frames", "-of", "json", "-show_entries"])
        .arg("stream=codec_type,codec_name,width,height,nb_read_packets,nb_read_frames")
        .arg(path)
        .output()
        .context("running ffprobe")?;
    ensure!(
        out.status.success(),
        "ffprobe failed on {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let streams = json["streams"].as_array().context("no streams array")?;
    let num = |v: &serde_json::Value| -> u64 {
        v.as_u64().or_else(|| v.as_str().and_then(|s| s.parse().ok())).unwrap_or(0)
    };
    Ok(streams
        .iter()
        .map(|s| Stream {
            codec_type: s["codec_type"].as_str().unwrap_or("").to_string(),
            codec_name: s["codec_name"].as_str().unwrap_or("").to_string(),
            width: s["width"].as_u64(),
            height: s["height"].as_u64(),
            packets: num(&s["nb_read_packets"]),
            frames: num(&s["nb_read_frames"]),
        })
        .collect())
}

/// What `ffmpeg -v error -i FILE -f null -` prints: empty when the file decodes cleanly.
pub fn decode_errors(path: &Path) -> Result<String> {
    let out = Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(path)
        .args(["-f", "null", "-"])
        .output()
        .context("running ffmpeg")?;
    let text = String::from_utf8_lossy(&out.stderr).trim().to_string();
    if !out.status.success() && text.is_empty() {
        bail!("ffmpeg failed on {} without a message", path.display());
    }
    Ok(text)
}
