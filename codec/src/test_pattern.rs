//! A generated source: a moving picture with a visible clock and frame counter, the frame
//! number as a machine-readable barcode, and a tone.
//!
//! The barcode fills the top eighth of the picture: two rows of 24 blocks spanning the full
//! width. The upper row holds the 24-bit frame number, most significant bit first, white
//! for 1 and black for 0; the lower row holds its complement, so a reader can tell a real
//! code from any other picture. Blocks are a twenty-fourth of the width wide and a
//! sixteenth of the height tall (13 x 11 pixels at 320x180), enough to survive scaling and
//! low-rate compression. [`read_barcode`] reads it back from decoded pixels.

use crate::Error;
use crate::frame::{Audio, I420};

/// Number of blocks (and bits) in the barcode.
pub const BARCODE_BITS: u32 = 24;
const WHITE: u8 = 235;
const BLACK: u8 = 16;

/// Draws test pattern pictures of one size.
#[derive(Clone, Debug)]
pub struct Generator {
    width: usize,
    height: usize,
    fps: f64,
    noise: u8,
}

impl Generator {
    /// A generator for `width` x `height` pictures at `fps` frames per second.
    ///
    /// # Errors
    /// [`Error::InvalidFrame`] for an odd or tiny size (below 96x64 the text does not fit),
    /// [`Error::Config`] for a frame rate that is not positive.
    pub fn new(width: usize, height: usize, fps: f64) -> Result<Self, Error> {
        I420::new(width, height)?;
        if width < 96 || height < 64 {
            return Err(Error::InvalidFrame(format!(
                "test pattern needs at least 96x64, got {width}x{height}"
            )));
        }
        if !(fps > 0.0 && fps.is_finite()) {
            return Err(Error::Config(format!("test pattern frame rate {fps}")));
        }
        Ok(Self { width, height, fps, noise: 0 })
    }

    /// Adds pseudo-random noise of up to `amplitude` luma steps to the moving background
    /// (deterministic per frame): the hard case for an encoder.
    pub fn with_noise(mut self, amplitude: u8) -> Self {
        self.noise = amplitude;
        self
    }

    /// Picture number `index`, with the clock showing media time `index / fps`.
    pub fn next_frame(&self, index: u32) -> I420 {
        let media_us = (f64::from(index) * 1_000_000.0 / self.fps) as u64;
        self.frame(index, media_us)
    }

    /// Picture number `index` with the clock showing `clock_us` (microseconds; wall-clock
    /// time since the Unix epoch shows as UTC time of day).
    pub fn frame(&self, index: u32, clock_us: u64) -> I420 {
        let (w, h) = (self.width, self.height);
        // The size was checked in `new`, so the planes are built directly.
        let (cw, ch) = (w.div_ceil(2), h.div_ceil(2));
        let mut f = I420 {
            width: w,
            height: h,
            y: vec![0; w * h],
            u: vec![128; cw * ch],
            v: vec![128; cw * ch],
        };
        let t = index as usize;
        // Background: a diagonal luma ramp scrolling two pixels a frame, slow colour drift.
        for y in 0..h {
            let row = &mut f.y[y * w..(y + 1) * w];
            for (x, s) in row.iter_mut().enumerate() {
                let v = (x + y + 2 * t) % 512;
                let ramp = if v < 256 { v } else { 511 - v };
                *s = (48 + ramp * 150 / 255) as u8;
            }
        }
        for y in 0..ch {
            for x in 0..cw {
                f.u[y * cw + x] = (96 + (x * 64 / cw + t) % 64) as u8;
                f.v[y * cw + x] = (96 + (y * 64 / ch + t / 2) % 64) as u8;
            }
        }
        if self.noise > 0 {
            let amp = u32::from(self.noise);
            let mut state = 0x9e37_79b9_u32 ^ index.wrapping_mul(0x85eb_ca6b) ^ 1;
            for s in f.y.iter_mut() {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                let n = (state % (2 * amp + 1)) as i32 - amp as i32;
                *s = (i32::from(*s) + n).clamp(16, 235) as u8;
            }
        }
        // A bright box bouncing left and right across the middle, crossing the width in 2 s.
        let box_side = h / 5;
        let travel = w - box_side;
        let period = (self.fps * 4.0).max(2.0) as usize;
        let phase = t % period;
        let half = period / 2;
        let pos = if phase < half { phase } else { period - phase };
        let bx = pos * travel / half.max(1);
        let by = h / 2 - box_side / 2;
        fill(&mut f, bx, by, box_side, box_side, 210, 60, 200);

        // Barcode band: the frame number and its complement.
        let row_h = h / 16;
        for bit in 0..BARCODE_BITS as usize {
            let x0 = bit * w / BARCODE_BITS as usize;
            let x1 = (bit + 1) * w / BARCODE_BITS as usize;
            let one = (index >> (BARCODE_BITS as usize - 1 - bit)) & 1 == 1;
            let (top, bottom) = if one { (WHITE, BLACK) } else { (BLACK, WHITE) };
            fill(&mut f, x0, 0, x1 - x0, row_h, top, 128, 128);
            fill(&mut f, x0, row_h, x1 - x0, row_h, bottom, 128, 128);
        }

        // Frame counter and clock, on a dark panel in the lower part.
        let scale = (h / 90).max(1);
        let counter = format!("FRAME {index:06}");
        let secs_of_day = (clock_us / 1_000_000) % 86_400;
        let clock = format!(
            "{:02}:{:02}:{:02}.{:03}",
            secs_of_day / 3600,
            secs_of_day / 60 % 60,
            secs_of_day % 60,
            clock_us / 1000 % 1000
        );
        let line_h = 9 * scale;
        let panel_w = (counter.len().max(clock.len()) * 6 + 2) * scale;
        let panel_y = h - 2 * line_h - 3 * scale;
        let panel_x = scale * 2;
        fill(
            &mut f,
            panel_x,
            panel_y,
            panel_w.min(w - panel_x),
            2 * line_h + 2 * scale,
            BLACK,
            128,
            128,
        );
        draw_text(&mut f, panel_x + scale, panel_y + scale, scale, &counter);
        draw_text(&mut f, panel_x + scale, panel_y + scale + line_h, scale, &clock);
        f
    }
}

/// Fills a rectangle (clipped to the picture) with one colour.
#[allow(clippy::too_many_arguments)]
fn fill(f: &mut I420, x: usize, y: usize, w: usize, h: usize, luma: u8, cb: u8, cr: u8) {
    let x1 = (x + w).min(f.width);
    let y1 = (y + h).min(f.height);
    if x >= x1 || y >= y1 {
        return;
    }
    for row in y..y1 {
        f.y[row * f.width + x..row * f.width + x1].fill(luma);
    }
    let cw = f.chroma_width();
    for row in y / 2..y1.div_ceil(2) {
        f.u[row * cw + x / 2..row * cw + x1.div_ceil(2)].fill(cb);
        f.v[row * cw + x / 2..row * cw + x1.div_ceil(2)].fill(cr);
    }
}

/// 5x7 glyphs, one byte per row, the five low bits left to right.
fn glyph(c: char) -> [u8; 7] {
    match c {
        '0' => [0x0e, 0x11, 0x13, 0x15, 0x19, 0x11, 0x0e],
        '1' => [0x04, 0x0c, 0x04, 0x04, 0x04, 0x04, 0x0e],
        '2' => [0x0e, 0x11, 0x01, 0x02, 0x04, 0x08, 0x1f],
        '3' => [0x1f, 0x02, 0x04, 0x02, 0x01, 0x11, 0x0e],
        '4' => [0x02, 0x06, 0x0a, 0x12, 0x1f, 0x02, 0x02],
        '5' => [0x1f, 0x10, 0x1e, 0x01, 0x01, 0x11, 0x0e],
        '6' => [0x06, 0x08, 0x10, 0x1e, 0x11, 0x11, 0x0e],
        '7' => [0x1f, 0x01, 0x02, 0x04, 0x08, 0x08, 0x08],
        '8' => [0x0e, 0x11, 0x11, 0x0e, 0x11, 0x11, 0x0e],
        '9' => [0x0e, 0x11, 0x11, 0x0f, 0x01, 0x02, 0x0c],
        ':' => [0x00, 0x0c, 0x0c, 0x00, 0x0c, 0x0c, 0x00],
        '.' => [0x00, 0x00, 0x00, 0x00, 0x00, 0x0c, 0x0c],
        'F' => [0x1f, 0x10, 0x10, 0x1e, 0x10, 0x10, 0x10],
        'R' => [0x1e, 0x11, 0x11, 0x1e, 0x14, 0x12, 0x11],
        'A' => [0x0e, 0x11, 0x11, 0x1f, 0x11, 0x11, 0x11],
        'M' => [0x11, 0x1b, 0x15, 0x15, 0x11, 0x11, 0x11],
        'E' => [0x1f, 0x10, 0x10, 0x1e, 0x10, 0x10, 0x1f],
        _ => [0; 7],
    }
}

/// Draws `text` in white, each font pixel `scale` x `scale` picture pixels.
fn draw_text(f: &mut I420, x: usize, y: usize, scale: usize, text: &str) {
    for (i, c) in text.chars().enumerate() {
        let gx = x + i * 6 * scale;
        for (row, bits) in glyph(c).iter().enumerate() {
            for col in 0..5 {
                if bits & (0x10 >> col) != 0 {
                    fill(f, gx + col * scale, y + row * scale, scale, scale, WHITE, 128, 128);
                }
            }
        }
    }
}

/// Reads the frame number from the barcode band of a (decoded, possibly scaled) picture.
/// Returns `None` when any block pair lacks clear contrast: not a test pattern, or damaged.
pub fn read_barcode(frame: &I420) -> Option<u32> {
    let (w, h) = (frame.width, frame.height);
    if w < BARCODE_BITS as usize * 2 || h < 32 || frame.y.len() < w * h {
        return None;
    }
    let row_h = h as f64 / 16.0;
    let mean = |x0: f64, x1: f64, y0: f64, y1: f64| -> f64 {
        // The middle half of the block, away from edges blurred by scaling and coding.
        let (qx, qy) = ((x1 - x0) / 4.0, (y1 - y0) / 4.0);
        let (xa, xb) = ((x0 + qx).ceil() as usize, (x1 - qx).floor() as usize);
        let (ya, yb) = ((y0 + qy).ceil() as usize, (y1 - qy).floor() as usize);
        let (mut sum, mut n) = (0u64, 0u64);
        for y in ya..yb.max(ya + 1).min(h) {
            for x in xa..xb.max(xa + 1).min(w) {
                sum += u64::from(frame.y[y * w + x]);
                n += 1;
            }
        }
        sum as f64 / n.max(1) as f64
    };
    let mut value = 0u32;
    for bit in 0..BARCODE_BITS {
        let x0 = f64::from(bit) * w as f64 / f64::from(BARCODE_BITS);
        let x1 = f64::from(bit + 1) * w as f64 / f64::from(BARCODE_BITS);
        let top = mean(x0, x1, 0.0, row_h);
        let bottom = mean(x0, x1, row_h, 2.0 * row_h);
        // Black and white are 219 steps apart; demand a quarter of that after coding.
        if (top - bottom).abs() < 55.0 {
            return None;
        }
        value = (value << 1) | u32::from(top > bottom);
    }
    Some(value)
}

/// A test tone: 440 Hz, with an 880 Hz beep during the first 100 ms of every second (to
/// check audio/video sync against the picture's clock), as 20 ms frames.
#[derive(Clone, Debug)]
pub struct Tone {
    sample_rate: u32,
    channels: u16,
    position: u64,
}

impl Tone {
    /// A tone at `sample_rate` with `channels` identical channels.
    ///
    /// # Errors
    /// [`Error::Config`] for a sample rate or channel count Opus cannot take.
    pub fn new(sample_rate: u32, channels: u16) -> Result<Self, Error> {
        if ![8000, 12000, 16000, 24000, 48000].contains(&sample_rate)
            || !(1..=2).contains(&channels)
        {
            return Err(Error::Config(format!(
                "tone at {sample_rate} Hz with {channels} channels"
            )));
        }
        Ok(Self { sample_rate, channels, position: 0 })
    }

    /// The next 20 ms of sound.
    pub fn next_frame(&mut self) -> Audio {
        let n = (self.sample_rate / 50) as usize;
        let mut samples = Vec::with_capacity(n * usize::from(self.channels));
        let rate = f64::from(self.sample_rate);
        for i in 0..n as u64 {
            let k = self.position + i;
            let in_second = k % u64::from(self.sample_rate);
            let beep = in_second < u64::from(self.sample_rate / 10);
            let (freq, amp) = if beep { (880.0, 12_000.0) } else { (440.0, 6_000.0) };
            let s = (amp * (2.0 * std::f64::consts::PI * freq * k as f64 / rate).sin()) as i16;
            for _ in 0..self.channels {
                samples.push(s);
            }
        }
        self.position += n as u64;
        Audio { samples, sample_rate: self.sample_rate, channels: self.channels }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scale::scale;

    #[test]
    fn barcode_reads_back_at_every_rung_size() {
        let g = Generator::new(1280, 720, 30.0).unwrap().with_noise(6);
        for index in [0, 1, 2, 29, 30, 1234, 0x00ff_ffff] {
            let f = g.next_frame(index);
            assert_eq!(read_barcode(&f), Some(index));
            for (w, h) in [(640, 360), (320, 180)] {
                assert_eq!(
                    read_barcode(&scale(&f, w, h).unwrap()),
                    Some(index),
                    "{w}x{h} frame {index}"
                );
            }
        }
    }

    #[test]
    fn a_picture_without_barcode_reads_as_none() {
        assert_eq!(read_barcode(&I420::new(320, 180).unwrap()), None);
    }

    #[test]
    fn pictures_move_and_tone_frames_are_20_ms() {
        let g = Generator::new(320, 180, 30.0).unwrap();
        assert_ne!(g.next_frame(1).y, g.next_frame(2).y);
        let mut tone = Tone::new(48_000, 1).unwrap();
        let a = tone.next_frame();
        assert_eq!(a.samples.len(), 960);
        assert_eq!(a.duration_us(), 20_000);
        assert!(a.samples.iter().any(|&s| s > 10_000), "the first frame of a second beeps");
    }
}
