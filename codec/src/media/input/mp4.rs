//! MP4 (ISO base media file format), progressive (`moov` sample tables) or fragmented
//! (`moof`/`trun`, as [`crate::media::Mp4Writer`] writes), with the boxes decoded by the
//! `mp4-atom` crate.
//!
//! The first H.264 (`avc1`/`avc3`) or AV1 (`av01`) track and the first Opus track are read;
//! other tracks (AAC, HEVC, subtitles, ...) are skipped with a log line. Samples of both
//! tracks are merged in decode-time order. H.264 samples leave with 4-byte NAL lengths
//! whatever the file used. A recording cut off in its last fragment (a crashed writer)
//! still opens: the incomplete fragment is dropped.

use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use mp4_atom::{Atom, Codec as Entry, Decode, Encode, Moof, Moov, Trak};

use crate::ladder::Codec;
use crate::media::{
    AudioCodec, AudioInfo, Error, Format, Info, MediaSample, SampleKind, Source, VideoInfo,
    ticks_to_duration,
};
use crate::{av1, h264};

const FORMAT: &str = "MP4";
/// Largest `moov` or `moof` read into memory: far above real files (a `moov` of an hour
/// of 30 fps video is about 1 MiB), small enough that a damaged size cannot exhaust memory.
const MAX_HEADER_BOX: u64 = 64 << 20;
/// Largest sample accepted.
const MAX_SAMPLE: u32 = 64 << 20;
/// Most samples per track accepted (over 9 hours of 30 fps video with 50 fps audio).
const MAX_SAMPLES: usize = 1 << 20;
/// Sample flags bit saying "not a sync sample" (ISO/IEC 14496-12 8.8.3.1).
const NON_SYNC: u32 = 0x0001_0000;

/// What a track carries.
#[derive(Clone, Debug)]
enum Kind {
    Video { codec: Codec, width: u32, height: u32, config: Bytes, length_size: usize },
    Audio { sample_rate: u32, channels: u16 },
}

#[derive(Clone, Copy, Debug)]
struct Sample {
    offset: u64,
    size: u32,
    dts: u64,
    cts: i64,
    duration: u32,
    key: bool,
}

struct Track {
    id: u32,
    kind: Kind,
    timescale: u32,
    /// Media time the edit list starts at (subtracted from every presentation time).
    edit_start: u64,
    samples: Vec<Sample>,
    /// Defaults from `trex` for fragments.
    trex: Option<mp4_atom::Trex>,
    /// Decode time after the last sample indexed (where the next fragment continues).
    next_dts: u64,
}

pub(crate) struct Reader {
    path: PathBuf,
    file: BufReader<File>,
    info: Info,
    tracks: Vec<Track>,
    /// (track, sample) in decode-time order.
    order: Vec<(usize, usize)>,
    next: usize,
}

fn malformed(path: &Path, reason: impl Into<String>) -> Error {
    Error::Malformed { path: path.to_path_buf(), format: FORMAT, reason: reason.into() }
}

fn unsupported(path: &Path, reason: impl Into<String>) -> Error {
    Error::Unsupported { path: path.to_path_buf(), format: FORMAT, reason: reason.into() }
}

/// The four-character code of a sample entry.
fn entry_name(entry: &Entry) -> String {
    if let Entry::Unknown(kind, _) = entry {
        return kind.to_string();
    }
    let mut encoded = Vec::new();
    match entry.encode(&mut encoded) {
        Ok(()) if encoded.len() >= 8 => String::from_utf8_lossy(&encoded[4..8]).into_owned(),
        _ => "unknown".into(),
    }
}

fn record<T: Atom>(atom: &T) -> Option<Bytes> {
    let mut out = Vec::new();
    atom.encode_body(&mut out).ok()?;
    Some(Bytes::from(out))
}

/// The track's kind, or the name of its unsupported codec.
fn track_kind(path: &Path, trak: &Trak) -> Result<Result<Kind, String>, Error> {
    let Some(entry) = trak.mdia.minf.stbl.stsd.codecs.first() else {
        return Ok(Err("no sample entry".into()));
    };
    Ok(Ok(match entry {
        Entry::Avc1(mp4_atom::Avc1 { visual, avcc, .. })
        | Entry::Avc3(mp4_atom::Avc3 { visual, avcc, .. }) => {
            let length_size = usize::from(avcc.length_size);
            if !matches!(length_size, 1 | 2 | 4) {
                return Err(malformed(path, format!("avcC with {length_size}-byte NAL lengths")));
            }
            // Samples leave with 4-byte lengths, so the record says 4 too.
            let mut avcc = avcc.clone();
            avcc.length_size = 4;
            let config =
                record(&avcc).ok_or_else(|| malformed(path, "avcC cannot be re-encoded"))?;
            Kind::Video {
                codec: Codec::H264,
                width: u32::from(visual.width),
                height: u32::from(visual.height),
                config,
                length_size,
            }
        }
        Entry::Av01(av01) => Kind::Video {
            codec: Codec::Av1,
            width: u32::from(av01.visual.width),
            height: u32::from(av01.visual.height),
            config: record(&av01.av1c)
                .ok_or_else(|| malformed(path, "av1C cannot be re-encoded"))?,
            length_size: 0,
        },
        Entry::Opus(opus) => Kind::Audio {
            // Opus always decodes at 48 kHz whatever rate the source had.
            sample_rate: crate::opus::SAMPLE_RATE,
            channels: u16::from(opus.dops.output_channel_count),
        },
        other => return Ok(Err(entry_name(other))),
    }))
}

/// Expands a progressive track's sample tables.
fn progressive_samples(path: &Path, trak: &Trak) -> Result<Vec<Sample>, Error> {
    let stbl = &trak.mdia.minf.stbl;
    let id = trak.tkhd.track_id;
    let bad = |what: String| malformed(path, format!("track {id}: {what}"));
    let sizes: Vec<u32> = match &stbl.stsz.samples {
        mp4_atom::StszSamples::Identical { count, size } => {
            if *count as usize > MAX_SAMPLES {
                return Err(bad(format!("{count} samples")));
            }
            vec![*size; *count as usize]
        }
        mp4_atom::StszSamples::Different { sizes } => sizes.clone(),
    };
    if sizes.len() > MAX_SAMPLES {
        return Err(bad(format!("{} samples", sizes.len())));
    }
    let chunks: Vec<u64> = match (&stbl.stco, &stbl.co64) {
        (Some(stco), _) => stco.entries.iter().map(|&o| u64::from(o)).collect(),
        (None, Some(co64)) => co64.entries.clone(),
        (None, None) => {
            if sizes.is_empty() {
                Vec::new()
            } else {
                return Err(bad("no chunk offsets (stco/co64)".into()));
            }
        }
    };
    // Sample offsets, chunk by chunk.
    let mut offsets = Vec::with_capacity(sizes.len());
    let stsc = &stbl.stsc.entries;
    let mut entry = 0;
    'chunks: for (c, &chunk_offset) in chunks.iter().enumerate() {
        let chunk_number = c as u32 + 1;
        while entry + 1 < stsc.len() && stsc[entry + 1].first_chunk <= chunk_number {
            entry += 1;
        }
        let per_chunk = stsc.get(entry).map_or(0, |e| e.samples_per_chunk);
        let mut offset = chunk_offset;
        for _ in 0..per_chunk {
            let Some(&size) = sizes.get(offsets.len()) else {
                break 'chunks;
            };
            offsets.push(offset);
            offset = offset.saturating_add(u64::from(size));
        }
    }
    if offsets.len() != sizes.len() {
        return Err(bad(format!(
            "chunk table places {} of {} samples",
            offsets.len(),
            sizes.len()
        )));
    }
    let mut durations = Vec::with_capacity(sizes.len());
    for e in &stbl.stts.entries {
        for _ in 0..e.sample_count {
            if durations.len() == sizes.len() {
                break;
            }
            durations.push(e.sample_delta);
        }
    }
    if durations.len() != sizes.len() {
        return Err(bad(format!(
            "time table covers {} of {} samples",
            durations.len(),
            sizes.len()
        )));
    }
    let mut cts = vec![0i64; sizes.len()];
    if let Some(ctts) = &stbl.ctts {
        let mut i = 0;
        for e in &ctts.entries {
            for _ in 0..e.sample_count {
                if i == cts.len() {
                    break;
                }
                cts[i] = e.sample_offset;
                i += 1;
            }
        }
    }
    let sync: Option<std::collections::HashSet<u32>> =
        stbl.stss.as_ref().map(|s| s.entries.iter().copied().collect());
    let mut dts = 0u64;
    let mut out = Vec::with_capacity(sizes.len());
    for i in 0..sizes.len() {
        out.push(Sample {
            offset: offsets[i],
            size: sizes[i],
            dts,
            cts: cts[i],
            duration: durations[i],
            key: sync.as_ref().is_none_or(|s| s.contains(&(i as u32 + 1))),
        });
        dts += u64::from(durations[i]);
    }
    Ok(out)
}

/// Adds the samples of one movie fragment to the tracks.
fn fragment_samples(
    path: &Path,
    moof: &Moof,
    moof_offset: u64,
    tracks: &mut [Track],
) -> Result<(), Error> {
    for traf in &moof.traf {
        let Some(track) = tracks.iter_mut().find(|t| t.id == traf.tfhd.track_id) else {
            continue;
        };
        let trex = track.trex.clone().unwrap_or_default();
        let base = traf.tfhd.base_data_offset.unwrap_or(moof_offset);
        let mut dts = traf.tfdt.as_ref().map_or(track.next_dts, |t| t.base_media_decode_time);
        let mut data = base;
        for trun in &traf.trun {
            if let Some(off) = trun.data_offset {
                data = base.checked_add_signed(i64::from(off)).ok_or_else(|| {
                    malformed(path, format!("fragment at byte {moof_offset}: data offset {off}"))
                })?;
            }
            for e in trun.samples.iter() {
                let duration = e
                    .duration
                    .or(traf.tfhd.default_sample_duration)
                    .unwrap_or(trex.default_sample_duration);
                let size =
                    e.size.or(traf.tfhd.default_sample_size).unwrap_or(trex.default_sample_size);
                let flags =
                    e.flags.or(traf.tfhd.default_sample_flags).unwrap_or(trex.default_sample_flags);
                if track.samples.len() >= MAX_SAMPLES {
                    return Err(malformed(
                        path,
                        format!("track {} has over {MAX_SAMPLES} samples", track.id),
                    ));
                }
                track.samples.push(Sample {
                    offset: data,
                    size,
                    dts,
                    cts: e.cts.unwrap_or(0),
                    duration,
                    key: flags & NON_SYNC == 0,
                });
                data = data.saturating_add(u64::from(size));
                dts = dts.saturating_add(u64::from(duration));
            }
        }
        track.next_dts = dts;
    }
    Ok(())
}

impl Reader {
    pub(crate) fn open(path: &Path) -> Result<Self, Error> {
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        let len = file.metadata().map_err(|e| Error::io(path, e))?.len();
        let mut file = BufReader::new(file);

        let mut moov: Option<Moov> = None;
        let mut moofs: Vec<(u64, Moof)> = Vec::new();
        let mut cut_short = false;
        let mut pos = 0u64;
        while pos < len {
            if len - pos < 8 {
                tracing::warn!(path = %path.display(), pos, "MP4 ends inside a box header; the rest is ignored");
                cut_short = true;
                break;
            }
            file.seek(SeekFrom::Start(pos)).map_err(|e| Error::io(path, e))?;
            let mut head = [0u8; 16];
            file.read_exact(&mut head[..8]).map_err(|e| Error::io(path, e))?;
            let size32 = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
            let kind = [head[4], head[5], head[6], head[7]];
            let name = String::from_utf8_lossy(&kind).into_owned();
            let size = match size32 {
                0 => len - pos,
                1 => {
                    if len - pos < 16 {
                        return Err(malformed(
                            path,
                            format!("box {name:?} at byte {pos} is cut off"),
                        ));
                    }
                    file.read_exact(&mut head[8..16]).map_err(|e| Error::io(path, e))?;
                    let mut b = [0u8; 8];
                    b.copy_from_slice(&head[8..16]);
                    u64::from_be_bytes(b)
                }
                n => u64::from(n),
            };
            let header_len = if size32 == 1 { 16 } else { 8 };
            if size < header_len || !kind.iter().all(|c| c.is_ascii_graphic() || *c == b' ') {
                return Err(malformed(path, format!("box {name:?} at byte {pos} has size {size}")));
            }
            if size > len - pos {
                if &kind == b"mdat" || &kind == b"moof" {
                    tracing::warn!(path = %path.display(), pos, "MP4 ends inside its last {name} box; it is ignored");
                    cut_short = true;
                    break;
                }
                return Err(malformed(
                    path,
                    format!(
                        "box {name:?} at byte {pos} claims {size} bytes, only {} remain",
                        len - pos
                    ),
                ));
            }
            if &kind == b"moov" || &kind == b"moof" {
                if size > MAX_HEADER_BOX {
                    return Err(malformed(
                        path,
                        format!("box {name:?} at byte {pos} is {size} bytes"),
                    ));
                }
                let mut buf = vec![0u8; size as usize];
                file.seek(SeekFrom::Start(pos)).map_err(|e| Error::io(path, e))?;
                file.read_exact(&mut buf).map_err(|e| Error::io(path, e))?;
                if size32 == 0 {
                    // Re-state the size so the box decoder sees a complete box.
                    buf[..4].copy_from_slice(&(size as u32).to_be_bytes());
                }
                if &kind == b"moov" {
                    let m = Moov::decode(&mut buf.as_slice())
                        .map_err(|e| malformed(path, format!("moov box at byte {pos}: {e}")))?;
                    if moov.replace(m).is_some() {
                        return Err(malformed(path, "two moov boxes"));
                    }
                } else {
                    let m = Moof::decode(&mut buf.as_slice())
                        .map_err(|e| malformed(path, format!("moof box at byte {pos}: {e}")))?;
                    moofs.push((pos, m));
                }
            }
            pos += size;
        }
        let moov = moov.ok_or_else(|| {
            malformed(
                path,
                "no moov box (a progressive recording that was never finished has none)",
            )
        })?;

        let mut tracks: Vec<Track> = Vec::new();
        let mut skipped = Vec::new();
        for trak in &moov.trak {
            let handler = trak.mdia.hdlr.handler;
            match track_kind(path, trak)? {
                Ok(kind) => {
                    let is_video = matches!(kind, Kind::Video { .. });
                    if tracks.iter().any(|t| matches!(t.kind, Kind::Video { .. }) == is_video) {
                        skipped.push(format!(
                            "a second {} track",
                            if is_video { "video" } else { "audio" }
                        ));
                        continue;
                    }
                    let timescale = trak.mdia.mdhd.timescale;
                    if timescale == 0 {
                        return Err(malformed(
                            path,
                            format!("track {} has timescale 0", trak.tkhd.track_id),
                        ));
                    }
                    let edit_start = trak
                        .edts
                        .as_ref()
                        .and_then(|e| e.elst.as_ref())
                        .and_then(|l| l.entries.iter().find_map(|e| e.media_time))
                        .unwrap_or(0);
                    let trex = moov
                        .mvex
                        .as_ref()
                        .and_then(|m| m.trex.iter().find(|t| t.track_id == trak.tkhd.track_id))
                        .cloned();
                    tracks.push(Track {
                        id: trak.tkhd.track_id,
                        kind,
                        timescale,
                        edit_start,
                        samples: progressive_samples(path, trak)?,
                        trex,
                        next_dts: 0,
                    });
                }
                Err(codec) => skipped.push(format!("{handler} track with codec {codec}")),
            }
        }
        if !skipped.is_empty() {
            tracing::info!(path = %path.display(), ?skipped, "MP4 tracks not read");
        }
        if tracks.is_empty() {
            return Err(unsupported(
                path,
                format!(
                    "no H.264, AV1 or Opus track (found: {})",
                    if skipped.is_empty() { "no tracks".into() } else { skipped.join(", ") }
                ),
            ));
        }
        for t in &mut tracks {
            t.next_dts =
                t.samples.last().map_or(0, |s| s.dts.saturating_add(u64::from(s.duration)));
        }
        for (offset, moof) in &moofs {
            fragment_samples(path, moof, *offset, &mut tracks)?;
        }
        // Samples must lie inside the file; a fragmented file cut short loses its tail.
        for t in &mut tracks {
            if let Some(bad) = t.samples.iter().position(|s| {
                s.size > MAX_SAMPLE || s.offset.saturating_add(u64::from(s.size)) > len
            }) {
                let s = t.samples[bad];
                if cut_short || !moofs.is_empty() {
                    tracing::warn!(path = %path.display(), track = t.id, sample = bad, "sample past the end of a cut-off file; the rest of the track is dropped");
                    t.samples.truncate(bad);
                } else {
                    return Err(malformed(
                        path,
                        format!(
                            "track {} sample {bad} ({} bytes at byte {}) lies past the end of the file ({len} bytes)",
                            t.id, s.size, s.offset
                        ),
                    ));
                }
            }
        }

        let mut order: Vec<(usize, usize)> = tracks
            .iter()
            .enumerate()
            .flat_map(|(ti, t)| (0..t.samples.len()).map(move |si| (ti, si)))
            .collect();
        order.sort_by_key(|&(ti, si)| {
            let t = &tracks[ti];
            (ticks_to_duration(t.samples[si].dts, t.timescale), ti)
        });

        let mut info =
            Info { format: Format::Mp4, video: None, audio: None, duration: Duration::ZERO };
        for t in &tracks {
            let span: u64 = t.samples.iter().map(|s| u64::from(s.duration)).sum();
            let span = ticks_to_duration(span, t.timescale);
            info.duration = info.duration.max(span);
            let count = t.samples.len() as u64;
            match &t.kind {
                Kind::Video { codec, width, height, config, .. } => {
                    let codec_string = match codec {
                        Codec::H264 => h264::codec_string(config).ok(),
                        Codec::Av1 => av1::codec_string(config).ok(),
                    };
                    info.video = Some(VideoInfo {
                        codec: Some(*codec),
                        codec_string,
                        config: Some(config.clone()),
                        width: *width,
                        height: *height,
                        fps: if span.is_zero() { 0.0 } else { count as f64 / span.as_secs_f64() },
                        frames: count,
                    });
                }
                Kind::Audio { sample_rate, channels } => {
                    info.audio = Some(AudioInfo {
                        codec: AudioCodec::Opus,
                        sample_rate: *sample_rate,
                        channels: *channels,
                        packets: count,
                    });
                }
            }
        }
        Ok(Self { path: path.to_path_buf(), file, info, tracks, order, next: 0 })
    }
}

/// Rewrites NAL lengths of `length_size` bytes as 4-byte lengths.
fn to_four_byte_lengths(data: &[u8], length_size: usize) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(data.len() + 16);
    let mut pos = 0;
    while pos < data.len() {
        let len = data
            .get(pos..pos + length_size)?
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        let nal = data.get(pos + length_size..pos + length_size + len)?;
        out.extend_from_slice(&(len as u32).to_be_bytes());
        out.extend_from_slice(nal);
        pos += length_size + len;
    }
    Some(out)
}

impl Source for Reader {
    fn info(&self) -> &Info {
        &self.info
    }

    fn next_sample(&mut self) -> Result<Option<MediaSample>, Error> {
        let Some(&(ti, si)) = self.order.get(self.next) else {
            return Ok(None);
        };
        self.next += 1;
        let t = &self.tracks[ti];
        let s = t.samples[si];
        let path = &self.path;
        let mut data = vec![0u8; s.size as usize];
        self.file.seek(SeekFrom::Start(s.offset)).map_err(|e| Error::io(path, e))?;
        self.file.read_exact(&mut data).map_err(|e| Error::io(path, e))?;
        let pts_ticks = s.dts.saturating_add_signed(s.cts).saturating_sub(t.edit_start);
        let pts = ticks_to_duration(pts_ticks, t.timescale);
        let duration = ticks_to_duration(u64::from(s.duration), t.timescale);
        let kind = match &t.kind {
            Kind::Video { codec, width, height, config, length_size } => {
                if *codec == Codec::H264 && *length_size != 4 {
                    data = to_four_byte_lengths(&data, *length_size).ok_or_else(|| {
                        malformed(
                            path,
                            format!("track {} sample {si}: NAL lengths run past the sample", t.id),
                        )
                    })?;
                }
                SampleKind::Video {
                    codec: *codec,
                    key: s.key,
                    width: *width,
                    height: *height,
                    config: s.key.then(|| config.clone()),
                }
            }
            Kind::Audio { sample_rate, channels } => SampleKind::Audio {
                codec: AudioCodec::Opus,
                sample_rate: *sample_rate,
                channels: *channels,
            },
        };
        Ok(Some(MediaSample { kind, data: Bytes::from(data), pts, duration }))
    }

    fn rewind(&mut self) -> Result<(), Error> {
        self.next = 0;
        Ok(())
    }
}
