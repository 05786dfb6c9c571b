//! Guards the ladder's pipeline (one worker thread per rung): it makes byte for byte the
//! frames `Ladder::push` makes, every one of which decodes with OpenH264 and with Debian's
//! ffmpeg; a rung nobody wants is not encoded, and a rung wanted again starts with a key
//! frame at the ladder's next group start, with the same group ID as the other rungs.

mod common;

use std::sync::Arc;

use anyhow::{Result, ensure};
use common::{default_rung, ffmpeg_decode, have, pipeline};
use tiermesh_codec::frame::I420;
use tiermesh_codec::ladder::{GroupLength, Pushed};
use tiermesh_codec::test_pattern::{Generator, read_barcode};
use tiermesh_codec::{Codec, EncodedFrame, Ladder, LadderConfig, Rung, av1, h264};

fn sources(n: u32) -> Vec<Arc<I420>> {
    let g = Generator::new(640, 360, 30.0).unwrap().with_noise(4);
    (0..n).map(|i| Arc::new(g.frame(i, common::capture_us(i)))).collect()
}

/// The default ladder's 360p and 180p rungs, and a small AV1 rung (not a rung tiermesh
/// ships: one of the other codec, cheap to encode in a debug build) to check that rungs of
/// both codecs line up.
fn config() -> LadderConfig {
    LadderConfig::default()
        .rungs(vec![
            default_rung("360p"),
            default_rung("180p"),
            Rung::new("90p-av1", 160, 90, 30.0, 60_000, Codec::Av1),
        ])
        .group_length(GroupLength::Frames(10))
}

/// Decodes a rung's frames in order with OpenH264 or dav1d, and the H.264 stream again with
/// ffmpeg; checks that every frame gives a picture of the rung's size showing the source
/// frame's barcode.
fn decode_rung(rung: &Rung, frames: &[&EncodedFrame]) -> Result<()> {
    let mut annexb = Vec::new();
    let mut h = h264::Decoder::new()?;
    let mut a = av1::Decoder::new()?;
    for e in frames {
        let pic = match rung.codec {
            Codec::H264 => {
                annexb.extend(h264::to_annexb(&e.data, e.config.as_deref())?);
                h.decode(&e.data, e.config.as_deref())?
            }
            Codec::Av1 => a.decode(&e.data)?,
        };
        let Some(pic) = pic else { anyhow::bail!("{}: {e:?} gave no picture", rung.name) };
        ensure!((pic.width, pic.height) == (rung.width, rung.height), "{}: size", rung.name);
        ensure!(
            read_barcode(&pic) == Some(e.input_index as u32),
            "{}: barcode of {e:?}",
            rung.name
        );
    }
    if rung.codec == Codec::H264 && have("ffmpeg") {
        let pics = ffmpeg_decode(&annexb, "h264", "h264", rung.width, rung.height)?;
        ensure!(
            pics.len() == frames.len(),
            "{}: ffmpeg decoded {} of {}",
            rung.name,
            pics.len(),
            frames.len()
        );
    }
    Ok(())
}

#[test]
fn the_pipeline_makes_the_ladders_frames_and_every_one_decodes() -> Result<()> {
    let src = sources(30);
    let mut ladder = Ladder::new(config())?;
    let mut expected = Vec::new();
    for (i, f) in src.iter().enumerate() {
        expected.extend(ladder.push(f, common::capture_us(i as u32))?);
    }
    expected.extend(ladder.flush()?);

    let (mut p, out) = pipeline(config())?;
    for (i, f) in src.iter().enumerate() {
        let pushed = p.push(f.clone(), common::capture_us(i as u32))?;
        ensure!(pushed == Pushed { encoding: 3, idle: 0 }, "frame {i}: {pushed:?}");
    }
    p.finish();
    let got = out.lock().unwrap().clone();
    let cfg = config();
    for (r, rung) in cfg.rungs.iter().enumerate() {
        let mine: Vec<&EncodedFrame> = got.iter().filter(|e| e.rung == r).collect();
        let theirs: Vec<&EncodedFrame> = expected.iter().filter(|e| e.rung == r).collect();
        ensure!(mine.len() == 30, "{}: {} frames", rung.name, mine.len());
        ensure!(mine == theirs, "{}: the pipeline's frames differ from the ladder's", rung.name);
        decode_rung(rung, &mine)?;
    }
    Ok(())
}

#[test]
fn an_unwanted_rung_is_idle_and_a_wanted_one_starts_at_the_next_group() -> Result<()> {
    let src = sources(40);
    let (mut p, out) = pipeline(config())?;
    // 180p is unwatched from the start; wanted again at frame 13, it starts at frame 20
    // (the next group). 360p and the AV1 rung stop at frame 33.
    p.set_rung_wanted(1, false)?;
    let mut idle = Vec::new();
    for (i, f) in src.iter().enumerate() {
        if i == 13 {
            p.set_rung_wanted(1, true)?;
        }
        if i == 33 {
            p.set_rung_wanted(0, false)?;
            p.set_rung_wanted(2, false)?;
        }
        idle.push(p.push(f.clone(), common::capture_us(i as u32))?.idle);
    }
    p.finish();
    ensure!(idle[..20].iter().all(|&n| n == 1), "idle rungs {idle:?}");
    ensure!(idle[20..33].iter().all(|&n| n == 0), "idle rungs {idle:?}");
    ensure!(idle[33..].iter().all(|&n| n == 2), "idle rungs {idle:?}");
    let got = out.lock().unwrap().clone();
    let cfg = config();
    let inputs = |r: usize| -> Vec<u64> {
        let mut v: Vec<u64> = got.iter().filter(|e| e.rung == r).map(|e| e.input_index).collect();
        v.sort_unstable();
        v
    };
    ensure!(inputs(0) == (0..33).collect::<Vec<_>>(), "360p: {:?}", inputs(0));
    ensure!(inputs(1) == (20..40).collect::<Vec<_>>(), "180p: {:?}", inputs(1));
    ensure!(inputs(2) == (0..33).collect::<Vec<_>>(), "AV1: {:?}", inputs(2));
    let first_180 = got.iter().find(|e| e.rung == 1 && e.input_index == 20).unwrap();
    ensure!(
        first_180.key_frame && first_180.group_id == 2 && first_180.object_id == 0,
        "180p starts with {first_180:?}"
    );
    let same_360 = got.iter().find(|e| e.rung == 0 && e.input_index == 20).unwrap();
    ensure!(same_360.key_frame && same_360.group_id == 2, "360p at frame 20: {same_360:?}");
    for (r, rung) in cfg.rungs.iter().enumerate() {
        let mut mine: Vec<&EncodedFrame> = got.iter().filter(|e| e.rung == r).collect();
        mine.sort_by_key(|e| e.input_index);
        decode_rung(rung, &mine)?;
    }
    Ok(())
}
