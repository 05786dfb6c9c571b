//! Real media through real processes, checked by ffprobe: `tiermesh relay --ingest` makes
//! the ladder of a one-tier `tiermesh pub --input FILE` sent to `<broadcast>/source`;
//! `tiermesh pub --input FILE --ladder` makes it at the publisher; `tiermesh pub
//! --test-pattern --codec av1` sends AV1 rungs. In each case `tiermesh sub --decode --save`
//! decodes every tier without an error or a freeze and writes an MP4 that ffprobe reads with
//! the expected codec, size and frame count.
//!
//! The input file is made by Debian's ffmpeg (`testsrc2` + `sine`, H.264 baseline and Opus,
//! 640x360, 3 s); without ffmpeg the tests print `SKIPPED` and pass, except under CI.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use tiermesh_tests::{Proc, Relay, start_pub};

/// A scratch folder removed at the end.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Result<Self> {
        let dir = std::env::temp_dir().join(format!("tiermesh-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        Ok(Self(dir))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Each test encodes a ladder in real time (the relay's ingest, `pub --ladder`, rav1e in a
/// debug build); two at once on a two-core machine starve the encoders, which then drop
/// frames (seen: AV1 360p with 57 of some 110 frames and 3-4 freezes in 1 of 3 runs of this
/// file on an idle machine, 3 of 3 whole when run alone). The tests take turns.
fn one_encoder_at_a_time() -> MutexGuard<'static, ()> {
    static TURN: Mutex<()> = Mutex::new(());
    TURN.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// True if ffmpeg and ffprobe run; under CI their absence fails the test.
fn have_ffmpeg() -> bool {
    let ok = ["ffmpeg", "ffprobe"]
        .iter()
        .all(|t| Command::new(t).arg("-version").output().is_ok_and(|o| o.status.success()));
    if !ok {
        assert!(std::env::var_os("CI").is_none(), "ffmpeg/ffprobe are missing");
        eprintln!("SKIPPED: ffmpeg/ffprobe are missing");
    }
    ok
}

/// A 640x360 30 fps H.264 (baseline, a key frame every second, no B-frames) + Opus MP4.
fn camera_file(dir: &Path) -> Result<PathBuf> {
    let path = dir.join("camera.mp4");
    let out = Command::new("ffmpeg")
        .args([
            "-v",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=640x360:rate=30:duration=3",
        ])
        .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000:duration=3"])
        .args(["-c:v", "libx264", "-profile:v", "baseline", "-g", "30", "-bf", "0"])
        .args(["-pix_fmt", "yuv420p", "-b:v", "1500k", "-c:a", "libopus", "-ac", "1"])
        .arg(&path)
        .output()
        .context("running ffmpeg")?;
    ensure!(out.status.success(), "ffmpeg: {}", String::from_utf8_lossy(&out.stderr));
    Ok(path)
}

/// `codec_name,width,height,nb_read_frames` of the video stream of `file`.
fn ffprobe(file: &Path) -> Result<String> {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", "v:0", "-count_frames", "-show_entries"])
        .args(["stream=codec_name,width,height,nb_read_frames", "-of", "csv=p=0"])
        .arg(file)
        .output()
        .context("running ffprobe")?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// Runs `tiermesh sub URL --decode --json --save FILE --track TIER` for each tier at once,
/// and checks each report and each file: decoded without errors or freezes, the audio too
/// when `audio`, and ffprobe sees `codec` at the tier's size with every saved frame.
fn check_tiers(
    relay: &Relay,
    broadcast: &str,
    tiers: &[(&str, u32, u32)],
    codec: &str,
    audio: bool,
    dir: &Path,
) -> Result<()> {
    let mut subs = Vec::new();
    for (tier, _, _) in tiers {
        let file =
            dir.join(format!("{}-{}.mp4", broadcast.replace('/', "-"), tier.replace('/', "-")));
        let mut args = vec![
            "sub".to_owned(),
            relay.url("moqt", broadcast),
            "--decode".to_owned(),
            "--json".to_owned(),
            "--track".to_owned(),
            (*tier).to_owned(),
            "--duration".to_owned(),
            "4s".to_owned(),
            "--save".to_owned(),
            file.display().to_string(),
        ];
        args.extend(relay.pin());
        subs.push((Proc::tiermesh(&format!("sub-{tier}"), &args)?, file));
    }
    for ((mut p, file), (tier, w, h)) in subs.into_iter().zip(tiers) {
        let status = p.wait_exit(Duration::from_secs(60))?;
        let out = p.stdout();
        let line = out.lines().find(|l| l.starts_with('{')).with_context(|| p.dump())?;
        ensure!(status.success(), "sub {tier} failed: {}", p.dump());
        let r: serde_json::Value = serde_json::from_str(line)?;
        let n = |k: &str| r[k].as_u64().unwrap_or(0);
        eprintln!("{broadcast} {tier}: {r}");
        assert_eq!(n("decode_errors"), 0, "{tier}: {r}");
        // 4 s at 30 fps; the first group may be joined mid-way, and the relay's ingest
        // starts a rung at the group after its first viewer. An encoder (the relay's
        // ingest, `pub --ladder`, rav1e at `pub --codec av1`) drops a frame rather than fall
        // behind when the shared machine is overloaded: two short stops (a freeze is a gap
        // of over 100 ms) in 4 s are tolerated, a viewer would notice more than a stutter.
        // AV1 is held to the same bounds as H.264 (seen: 114 frames, no freeze, on both
        // tiers while the two other tests of this file ran beside it).
        assert!(n("frames_decoded") >= 50, "{tier}: {r}");
        assert!(n("freezes") <= 2, "{tier}: {r}");
        if audio {
            assert!(n("audio_decoded") >= 100, "{tier}: audio {r}");
            assert_eq!(n("audio_errors"), 0, "{tier}: audio {r}");
        }
        let prefix = if codec == "av1" { "av01." } else { "avc1." };
        assert!(r["codec"].as_str().unwrap_or("").starts_with(prefix), "{tier}: {r}");
        assert_eq!(
            ffprobe(&file)?,
            format!("{codec},{w},{h},{}", n("saved_video")),
            "{tier}: ffprobe of {}",
            file.display()
        );
    }
    Ok(())
}

#[test]
fn relay_ingest_makes_the_ladder_of_a_one_tier_publisher() -> Result<()> {
    let _turn = one_encoder_at_a_time();
    if !have_ffmpeg() {
        return Ok(());
    }
    let dir = Scratch::new("ingest-cli")?;
    let input = camera_file(&dir.0)?;
    let relay = Relay::start(&["--ingest", "--public", "clinic", "--public-publish", "clinic"])?;
    let mut extra = vec!["--input".to_owned(), input.display().to_string(), "--loop".to_owned()];
    extra.extend(relay.pin());
    let _publisher = start_pub("pub", &relay.url("moqt", "clinic/ingest/source"), &extra)?;
    relay.proc.wait_line(Duration::from_secs(60), |l| {
        l.text.contains("publishing the ladder") && l.text.contains("clinic-ingest")
    })?;
    // A 360p source: the default ladder's 720p rung is left out (never upscaled).
    check_tiers(
        &relay,
        "clinic/ingest",
        &[("video/360p", 640, 360), ("video/180p", 320, 180)],
        "h264",
        true,
        &dir.0,
    )
}

#[test]
fn pub_input_with_ladder_through_a_relay_saves_playable_tiers() -> Result<()> {
    let _turn = one_encoder_at_a_time();
    if !have_ffmpeg() {
        return Ok(());
    }
    let dir = Scratch::new("pub-ladder")?;
    let input = camera_file(&dir.0)?;
    let relay = Relay::start(&["--public", "clinic", "--public-publish", "clinic"])?;
    let mut extra = vec![
        "--input".to_owned(),
        input.display().to_string(),
        "--loop".to_owned(),
        "--ladder".to_owned(),
    ];
    extra.extend(relay.pin());
    let _publisher = start_pub("pub", &relay.url("moqt", "clinic/ladder"), &extra)?;
    check_tiers(
        &relay,
        "clinic/ladder",
        &[("video/360p", 640, 360), ("video/180p", 320, 180)],
        "h264",
        true,
        &dir.0,
    )
}

#[test]
fn pub_test_pattern_in_av1_through_a_relay_saves_playable_tiers() -> Result<()> {
    let _turn = one_encoder_at_a_time();
    if !have_ffmpeg() {
        return Ok(());
    }
    let dir = Scratch::new("pub-av1")?;
    let relay = Relay::start(&["--public", "clinic", "--public-publish", "clinic"])?;
    let mut extra = vec!["--test-pattern".to_owned(), "--codec".to_owned(), "av1".to_owned()];
    extra.extend(relay.pin());
    let _publisher = start_pub("pub", &relay.url("moqt", "clinic/av1"), &extra)?;
    check_tiers(
        &relay,
        "clinic/av1",
        &[("video/360p", 640, 360), ("video/180p", 320, 180)],
        "av1",
        true,
        &dir.0,
    )
}
