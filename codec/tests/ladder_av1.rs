//! Guards the AV1 ladder (360p/180p, rav1e at the shipped speed): every frame of every rung
//! decodes with dav1d and, independently, with libaom through Debian's ffmpeg; the barcode
//! in the decoded pixels equals the source frame index; quality stays above 30 dB PSNR on
//! a noisy source; key frames of both rungs fall on the same source frames.

mod common;

use anyhow::{Context, Result, ensure};
use common::{check_rung, ffmpeg_decode, have, run_ladder, sources};
use tiermesh_codec::av1;
use tiermesh_codec::test_pattern::read_barcode;
use tiermesh_codec::{Codec, Ladder, LadderConfig};

const FRAMES: u32 = 90;

fn ffmpeg_has_decoder(name: &str) -> bool {
    std::process::Command::new("ffmpeg").args(["-hide_banner", "-decoders"]).output().is_ok_and(
        |o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .any(|l| l.split_whitespace().nth(1) == Some(name))
        },
    )
}

#[test]
fn av1_ladder_decodes_every_frame_of_every_rung() -> Result<()> {
    let cfg = LadderConfig::av1_low();
    assert!(cfg.rungs.iter().all(|r| r.codec == Codec::Av1));
    let mut ladder = Ladder::new(cfg.clone())?;
    let sources = sources(FRAMES);
    let out = run_ladder(&mut ladder, &sources)?;

    let mut keys = Vec::new();
    for (i, frames) in out.iter().enumerate() {
        let mut dec = av1::Decoder::new()?;
        let report = check_rung(&sources, &cfg, i, frames, FRAMES as usize, 30.0, |e| {
            Ok(dec.decode(&e.data)?)
        })?;
        let kbps = report.bytes as f64 * 8.0 / (f64::from(FRAMES) / 30.0) / 1000.0;
        println!(
            "{}: {} frames, PSNR min {:.1} mean {:.1} dB, {kbps:.0} kbit/s, key frames at {:?}",
            cfg.rungs[i].name, report.frames, report.min_psnr, report.mean_psnr, report.key_inputs
        );
        let target = f64::from(cfg.rungs[i].bitrate) / 1000.0;
        ensure!(
            kbps < target * 1.25,
            "{}: {kbps:.0} kbit/s against {target:.0}",
            cfg.rungs[i].name
        );
        keys.push(report.key_inputs);

        let first_config = frames[0].config.as_deref().context("first frame carries av1C")?;
        let codec = av1::codec_string(first_config)?;
        ensure!(codec.starts_with("av01.0.") && codec.ends_with(".08"), "codec string {codec}");
        ensure!(
            ladder.codec_string(i) == Some(codec.as_str()),
            "catalog codec {:?} vs {codec}",
            ladder.codec_string(i)
        );

        if have("ffmpeg") && ffmpeg_has_decoder("libaom-av1") {
            let stream: Vec<u8> = frames.iter().flat_map(|e| e.data.iter().copied()).collect();
            let (w, h) = (cfg.rungs[i].width, cfg.rungs[i].height);
            let pictures = ffmpeg_decode(&stream, "obu", "libaom-av1", w, h)?;
            ensure!(pictures.len() == FRAMES as usize, "libaom decoded {} frames", pictures.len());
            for (n, p) in pictures.iter().enumerate() {
                ensure!(
                    read_barcode(p) == Some(n as u32),
                    "libaom picture {n} of {}",
                    cfg.rungs[i].name
                );
            }
        } else {
            println!("ffmpeg with libaom not installed: second decoder skipped");
        }
    }
    ensure!(keys.iter().all(|k| k == &vec![0, 30, 60]), "key frames per rung: {keys:?}");
    Ok(())
}
