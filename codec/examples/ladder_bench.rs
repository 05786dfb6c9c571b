//! Benchmarks the tier ladder against Debian's ffmpeg in one run.
//!
//! `cargo run --release -p tiermesh-codec --example ladder_bench [-- FRAMES]`
//!
//! Source: the 720p30 test pattern with noise. Each contender encodes the same rungs at the
//! same bit rates with one-second groups; speed is source frames per second of wall time
//! and CPU milliseconds per source frame (all threads); quality is the mean PSNR (Y, U, V)
//! of every decoded frame against the scaled source. tiermesh's time includes scaling from
//! 720p; ffmpeg is handed the rungs already scaled (it only encodes).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail, ensure};
use tiermesh_codec::frame::{I420, psnr};
use tiermesh_codec::scale::Scaler;
use tiermesh_codec::test_pattern::Generator;
use tiermesh_codec::{Codec, Ladder, LadderConfig, av1, h264};

mod common;
use common::cpu_ms;

struct Row {
    name: String,
    rungs: String,
    fps: f64,
    cpu_ms_per_frame: f64,
    psnr: Vec<(String, f64, f64)>,
}

fn mean_psnr(refs: &[I420], got: &[I420]) -> Result<f64> {
    ensure!(refs.len() == got.len(), "{} decoded frames for {} sources", got.len(), refs.len());
    let mut sum = 0.0;
    for (a, b) in refs.iter().zip(got) {
        sum += psnr(a, b)?.min(99.0);
    }
    Ok(sum / refs.len() as f64)
}

fn run_ladder(
    cfg: LadderConfig,
    name: &str,
    sources: &[I420],
    scaled: &[(usize, Vec<I420>)],
) -> Result<Row> {
    let mut ladder = Ladder::new(cfg.clone())?;
    let mut out = Vec::new();
    let cpu0 = cpu_ms()?;
    let t0 = Instant::now();
    for (i, f) in sources.iter().enumerate() {
        out.extend(ladder.push(f, i as u64 * 33_333)?);
    }
    out.extend(ladder.flush()?);
    let wall = t0.elapsed().as_secs_f64();
    let cpu = cpu_ms()? - cpu0;
    let mut psnrs = Vec::new();
    for (i, r) in cfg.rungs.iter().enumerate() {
        let frames: Vec<_> = out.iter().filter(|e| e.rung == i).collect();
        let bytes: usize = frames.iter().map(|e| e.data.len()).sum();
        let mut decoded = Vec::new();
        match r.codec {
            Codec::H264 => {
                let mut d = h264::Decoder::new()?;
                for e in &frames {
                    decoded.push(d.decode(&e.data, e.config.as_deref())?.context("h264 picture")?);
                }
            }
            Codec::Av1 => {
                let mut d = av1::Decoder::new()?;
                for e in &frames {
                    decoded.push(d.decode(&e.data)?.context("av1 picture")?);
                }
            }
        }
        let refs = &scaled.iter().find(|(h, _)| *h == r.height).context("scaled source")?.1;
        let kbps = bytes as f64 * 8.0 / (sources.len() as f64 / 30.0) / 1000.0;
        psnrs.push((r.name.clone(), mean_psnr(refs, &decoded)?, kbps));
    }
    Ok(Row {
        name: name.into(),
        rungs: rung_list(&cfg),
        fps: sources.len() as f64 / wall,
        cpu_ms_per_frame: cpu / sources.len() as f64,
        psnr: psnrs,
    })
}

fn rung_list(cfg: &LadderConfig) -> String {
    cfg.rungs.iter().map(|r| r.name.as_str()).collect::<Vec<_>>().join("+")
}

fn write_yuv(path: &Path, frames: &[I420]) -> Result<()> {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
    for p in frames {
        f.write_all(&p.y)?;
        f.write_all(&p.u)?;
        f.write_all(&p.v)?;
    }
    Ok(())
}

fn read_yuv(path: &Path, w: usize, h: usize) -> Result<Vec<I420>> {
    let data = std::fs::read(path)?;
    let len = w * h * 3 / 2;
    ensure!(data.len() % len == 0, "{} is not whole frames", path.display());
    data.chunks(len)
        .map(|c| {
            let (y, rest) = c.split_at(w * h);
            let (u, v) = rest.split_at(w * h / 4);
            Ok(I420::from_planes(w, h, [y, u, v], [w, w / 2, w / 2])?)
        })
        .collect()
}

/// A ladder's rungs as ffmpeg is handed them: (name, width, height, bit rate).
fn ffmpeg_rungs(cfg: &LadderConfig) -> Vec<(String, usize, usize, u32)> {
    cfg.rungs.iter().map(|r| (r.name.clone(), r.width, r.height, r.bitrate)).collect()
}

/// One ffmpeg run encoding every rung from its pre-scaled raw file; returns its CPU time.
fn run_ffmpeg(
    name: &str,
    rungs: &[(String, usize, usize, u32)],
    encoder_args: &dyn Fn(u32) -> Vec<String>,
    dir: &Path,
    scaled: &[(usize, Vec<I420>)],
    frames: usize,
) -> Result<Row> {
    let mut args: Vec<String> = vec!["-nostdin".into(), "-y".into(), "-v".into(), "error".into()];
    for (label, w, h, _) in rungs {
        args.extend(
            ["-f", "rawvideo", "-pix_fmt", "yuv420p", "-s", &format!("{w}x{h}"), "-r", "30", "-i"]
                .iter()
                .map(|s| s.to_string()),
        );
        args.push(dir.join(format!("src-{label}.yuv")).display().to_string());
    }
    for (i, (label, _, _, bps)) in rungs.iter().enumerate() {
        args.extend(["-map".to_string(), format!("{i}:v")]);
        args.extend(encoder_args(*bps));
        args.extend([
            "-f".into(),
            "matroska".into(),
            dir.join(format!("{name}-{label}.mkv")).display().to_string(),
        ]);
    }
    let t0 = Instant::now();
    let out =
        Command::new("/usr/bin/time").args(["-f", "%U %S"]).arg("ffmpeg").args(&args).output()?;
    let wall = t0.elapsed().as_secs_f64();
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        bail!("ffmpeg {name} failed: {stderr}");
    }
    let times: Vec<f64> = stderr
        .lines()
        .last()
        .unwrap_or("")
        .split_whitespace()
        .filter_map(|s| s.parse().ok())
        .collect();
    ensure!(times.len() == 2, "no CPU times from /usr/bin/time: {stderr}");
    let cpu = (times[0] + times[1]) * 1000.0;
    let mut psnrs = Vec::new();
    for (label, w, h, _) in rungs {
        let enc = dir.join(format!("{name}-{label}.mkv"));
        let raw = dir.join(format!("{name}-{label}.yuv"));
        let st = Command::new("ffmpeg")
            .args(["-nostdin", "-y", "-v", "error", "-i"])
            .arg(&enc)
            .args(["-f", "rawvideo", "-pix_fmt", "yuv420p"])
            .arg(&raw)
            .status()?;
        ensure!(st.success(), "decoding {}", enc.display());
        let decoded = read_yuv(&raw, *w, *h)?;
        let refs = &scaled.iter().find(|(hh, _)| hh == h).context("scaled")?.1;
        let bytes = std::fs::metadata(&enc)?.len();
        let kbps = bytes as f64 * 8.0 / (frames as f64 / 30.0) / 1000.0;
        psnrs.push((label.clone(), mean_psnr(refs, &decoded)?, kbps));
    }
    Ok(Row {
        name: name.into(),
        rungs: rungs.iter().map(|r| r.0.as_str()).collect::<Vec<_>>().join("+"),
        fps: frames as f64 / wall,
        cpu_ms_per_frame: cpu / frames as f64,
        psnr: psnrs,
    })
}

fn print_rows(rows: &[Row]) {
    println!();
    println!("| encoder | rungs | fps | CPU ms/frame | per rung: PSNR dB @ kbit/s |");
    println!("|---|---|---:|---:|---|");
    for r in rows {
        let q: Vec<String> =
            r.psnr.iter().map(|(n, p, k)| format!("{n} {p:.1} @ {k:.0}")).collect();
        println!(
            "| {} | {} | {:.1} | {:.1} | {} |",
            r.name,
            r.rungs,
            r.fps,
            r.cpu_ms_per_frame,
            q.join(", ")
        );
    }
}

fn ffmpeg_has(encoder: &str) -> bool {
    Command::new("ffmpeg").args(["-hide_banner", "-encoders"]).output().is_ok_and(|o| {
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .any(|l| l.split_whitespace().nth(1) == Some(encoder))
    })
}

fn main() -> Result<()> {
    let frames: usize = std::env::args().nth(1).map(|s| s.parse()).transpose()?.unwrap_or(150);
    let av1_speed: u8 =
        std::env::args().nth(2).map(|s| s.parse()).transpose()?.unwrap_or(av1::DEFAULT_SPEED);
    let only_av1 = std::env::args().nth(3).is_some_and(|s| s == "av1-only");
    let g = Generator::new(1280, 720, 30.0)?.with_noise(4);
    let sources: Vec<I420> = (0..frames as u32).map(|i| g.next_frame(i)).collect();
    let mut scaler = Scaler::new();
    let mut scaled = Vec::new();
    for (w, h) in [(1280, 720), (640, 360), (320, 180)] {
        let s: Vec<I420> =
            sources.iter().map(|f| scaler.scale(f, w, h)).collect::<Result<_, _>>()?;
        scaled.push((h, s));
    }
    println!("source: {frames} frames of 1280x720 test pattern with noise, 30 fps, 1 s groups");

    let mut rows = Vec::new();
    let av1_cfg = LadderConfig::av1_low().av1_speed(av1_speed);
    let av1_name = format!("tiermesh AV1 (rav1e speed {av1_speed})");
    if only_av1 {
        let row = run_ladder(av1_cfg, &av1_name, &sources, &scaled)?;
        print_rows(&[row]);
        return Ok(());
    }
    rows.push(run_ladder(LadderConfig::default(), "tiermesh H.264 (OpenH264)", &sources, &scaled)?);
    rows.push(run_ladder(av1_cfg, &av1_name, &sources, &scaled)?);
    rows.push(run_ladder(
        LadderConfig::default().parallel(false),
        "tiermesh H.264, one thread",
        &sources,
        &scaled,
    )?);

    let dir: PathBuf =
        std::env::temp_dir().join(format!("tiermesh-ladder-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    // ffmpeg encodes the very rungs the tiermesh ladders above encoded, at their rates.
    let h264_rungs = ffmpeg_rungs(&LadderConfig::default());
    let av1_rungs = ffmpeg_rungs(&LadderConfig::av1_low());
    for (label, _, h, _) in &h264_rungs {
        write_yuv(
            &dir.join(format!("src-{label}.yuv")),
            &scaled.iter().find(|(hh, _)| hh == h).context("s")?.1,
        )?;
    }
    if ffmpeg_has("libx264") {
        let x264 = |bps: u32| -> Vec<String> {
            let k = format!("{}k", bps / 1000);
            [
                "-c:v",
                "libx264",
                "-preset",
                "veryfast",
                "-tune",
                "zerolatency",
                "-threads",
                "1",
                "-g",
                "30",
                "-b:v",
                &k,
                "-maxrate",
                &k,
                "-bufsize",
                &k,
            ]
            .iter()
            .map(|s| s.to_string())
            .collect()
        };
        rows.push(run_ffmpeg(
            "ffmpeg libx264 veryfast",
            &h264_rungs,
            &x264,
            &dir,
            &scaled,
            frames,
        )?);
    }
    if ffmpeg_has("libsvtav1") {
        let svt = |bps: u32| -> Vec<String> {
            let k = format!("{}k", bps / 1000);
            [
                "-c:v",
                "libsvtav1",
                "-preset",
                "10",
                "-g",
                "30",
                "-b:v",
                &k,
                "-svtav1-params",
                "pred-struct=1:lp=1",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect()
        };
        match run_ffmpeg("ffmpeg libsvtav1 preset 10", &av1_rungs, &svt, &dir, &scaled, frames) {
            Ok(r) => rows.push(r),
            Err(e) => println!("libsvtav1 run failed: {e:#}"),
        }
    }
    let _ = std::fs::remove_dir_all(&dir);

    print_rows(&rows);
    Ok(())
}
