//! Guards the default H.264 ladder (720p/360p/180p): every frame of every rung decodes with
//! OpenH264's decoder and, independently, with Debian's ffmpeg; the barcode in the decoded
//! pixels equals the source frame index; quality stays above 30 dB PSNR on a noisy source;
//! key frames of all rungs fall on the same source frames; the catalog names the codecs.

mod common;

use anyhow::{Context, Result, ensure};
use common::{check_rung, ffmpeg_decode, have, run_ladder, sources};
use tiermesh_codec::h264;
use tiermesh_codec::test_pattern::read_barcode;
use tiermesh_codec::{Codec, Ladder, LadderConfig};

const FRAMES: u32 = 60;

#[test]
fn default_h264_ladder_decodes_every_frame_of_every_rung() -> Result<()> {
    let cfg = LadderConfig::default();
    assert_eq!(
        cfg.rungs.iter().map(|r| (r.height, r.bitrate, r.codec)).collect::<Vec<_>>(),
        vec![
            (720, 1_500_000, Codec::H264),
            (360, 550_000, Codec::H264),
            (180, 150_000, Codec::H264)
        ]
    );
    let mut ladder = Ladder::new(cfg.clone())?;
    let sources = sources(FRAMES);
    let out = run_ladder(&mut ladder, &sources)?;

    let mut keys = Vec::new();
    for (i, frames) in out.iter().enumerate() {
        let mut dec = h264::Decoder::new()?;
        let report = check_rung(&sources, &cfg, i, frames, FRAMES as usize, 30.0, |e| {
            Ok(dec.decode(&e.data, e.config.as_deref())?)
        })?;
        let kbps = report.bytes as f64 * 8.0 / (f64::from(FRAMES) / 30.0) / 1000.0;
        println!(
            "{}: {} frames, PSNR min {:.1} mean {:.1} dB, {kbps:.0} kbit/s, key frames at {:?}",
            cfg.rungs[i].name, report.frames, report.min_psnr, report.mean_psnr, report.key_inputs
        );
        // Rate control holds the rung near its target (key frames every second included).
        let target = f64::from(cfg.rungs[i].bitrate) / 1000.0;
        ensure!(
            kbps < target * 1.25,
            "{}: {kbps:.0} kbit/s against {target:.0}",
            cfg.rungs[i].name
        );
        keys.push(report.key_inputs);

        // The catalog's codec string is the one the stream's avcC names.
        let first_config = frames[0].config.as_deref().context("first frame carries avcC")?;
        let codec = h264::codec_string(first_config)?;
        ensure!(codec.starts_with("avc1.") && codec.len() == 11, "codec string {codec}");
        ensure!(
            ladder.codec_string(i) == Some(codec.as_str()),
            "catalog codec {:?} vs {codec}",
            ladder.codec_string(i)
        );

        if have("ffmpeg") {
            let mut annexb = Vec::new();
            for e in frames {
                annexb.extend(h264::to_annexb(&e.data, e.config.as_deref())?);
            }
            let (w, h) = (cfg.rungs[i].width, cfg.rungs[i].height);
            let pictures = ffmpeg_decode(&annexb, "h264", "h264", w, h)?;
            ensure!(pictures.len() == FRAMES as usize, "ffmpeg decoded {} frames", pictures.len());
            for (n, p) in pictures.iter().enumerate() {
                ensure!(
                    read_barcode(p) == Some(n as u32),
                    "ffmpeg picture {n} of {}",
                    cfg.rungs[i].name
                );
            }
        } else {
            println!("ffmpeg not installed: independent decode skipped");
        }
    }
    // Group N of every tier covers the same media time: 1 s groups at 30 fps.
    ensure!(keys.iter().all(|k| k == &vec![0, 30]), "key frames per rung: {keys:?}");

    let catalog = ladder.catalog(Some("clinic/room-42/dr-lee"), Some(1));
    let json = catalog.to_json();
    for (i, t) in catalog.tracks.iter().enumerate() {
        ensure!(t.alt_group == Some(1) && t.packaging == "loc", "track {t:?}");
        ensure!(t.codec.as_deref() == ladder.codec_string(i), "track codec");
        ensure!(
            t.width == Some(cfg.rungs[i].width as u32)
                && t.bitrate == Some(u64::from(cfg.rungs[i].bitrate))
        );
    }
    ensure!(json.contains("\"video/180p\"") && json.contains("\"altGroup\":1"), "{json}");
    Ok(())
}
