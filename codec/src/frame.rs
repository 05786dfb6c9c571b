//! Raw media: planar I420 pictures, PCM audio, and picture comparison (PSNR).

use crate::Error;

/// One 8-bit 4:2:0 picture with tightly packed planes (stride = plane width).
///
/// The chroma planes are `(width + 1) / 2` by `(height + 1) / 2` samples.
#[derive(Clone, PartialEq, Eq)]
pub struct I420 {
    /// Luma width in pixels.
    pub width: usize,
    /// Luma height in pixels.
    pub height: usize,
    /// Luma plane, `width * height` bytes, row after row.
    pub y: Vec<u8>,
    /// Cb plane, `chroma_width() * chroma_height()` bytes.
    pub u: Vec<u8>,
    /// Cr plane, `chroma_width() * chroma_height()` bytes.
    pub v: Vec<u8>,
}

impl std::fmt::Debug for I420 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "I420({}x{})", self.width, self.height)
    }
}

impl I420 {
    /// A mid-grey picture of the given size.
    ///
    /// # Errors
    /// [`Error::InvalidFrame`] if a side is zero or odd (every encoder here needs even sides).
    pub fn new(width: usize, height: usize) -> Result<Self, Error> {
        check_size(width, height)?;
        let (cw, ch) = (width.div_ceil(2), height.div_ceil(2));
        Ok(Self {
            width,
            height,
            y: vec![128; width * height],
            u: vec![128; cw * ch],
            v: vec![128; cw * ch],
        })
    }

    /// Builds a picture from planes with arbitrary strides (as decoders hand them out),
    /// copying only the visible samples.
    ///
    /// # Errors
    /// [`Error::InvalidFrame`] if a plane is shorter than its stride and size imply.
    pub fn from_planes(
        width: usize,
        height: usize,
        planes: [&[u8]; 3],
        strides: [usize; 3],
    ) -> Result<Self, Error> {
        if width == 0 || height == 0 {
            return Err(Error::InvalidFrame(format!("empty picture {width}x{height}")));
        }
        let (cw, ch) = (width.div_ceil(2), height.div_ceil(2));
        let copy = |plane: &[u8], stride: usize, w: usize, h: usize| -> Result<Vec<u8>, Error> {
            if stride < w || plane.len() < stride * (h - 1) + w {
                return Err(Error::InvalidFrame(format!(
                    "plane of {} bytes, stride {stride}, cannot hold {w}x{h}",
                    plane.len()
                )));
            }
            let mut out = Vec::with_capacity(w * h);
            for row in 0..h {
                out.extend_from_slice(&plane[row * stride..row * stride + w]);
            }
            Ok(out)
        };
        Ok(Self {
            width,
            height,
            y: copy(planes[0], strides[0], width, height)?,
            u: copy(planes[1], strides[1], cw, ch)?,
            v: copy(planes[2], strides[2], cw, ch)?,
        })
    }

    /// Width of the chroma planes.
    pub fn chroma_width(&self) -> usize {
        self.width.div_ceil(2)
    }

    /// Height of the chroma planes.
    pub fn chroma_height(&self) -> usize {
        self.height.div_ceil(2)
    }

    /// Checks that the plane sizes match the dimensions.
    ///
    /// # Errors
    /// [`Error::InvalidFrame`] naming the plane that does not fit.
    pub fn validate(&self) -> Result<(), Error> {
        check_size(self.width, self.height)?;
        let c = self.chroma_width() * self.chroma_height();
        if self.y.len() != self.width * self.height || self.u.len() != c || self.v.len() != c {
            return Err(Error::InvalidFrame(format!(
                "{}x{} picture with planes of {}, {}, {} bytes",
                self.width,
                self.height,
                self.y.len(),
                self.u.len(),
                self.v.len()
            )));
        }
        Ok(())
    }
}

fn check_size(width: usize, height: usize) -> Result<(), Error> {
    if width == 0
        || height == 0
        || !width.is_multiple_of(2)
        || !height.is_multiple_of(2)
        || width > 8192
        || height > 8192
    {
        return Err(Error::InvalidFrame(format!(
            "size {width}x{height}: sides must be even and between 2 and 8192"
        )));
    }
    Ok(())
}

/// Interleaved 16-bit PCM audio.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Audio {
    /// Samples, interleaved by channel.
    pub samples: Vec<i16>,
    /// Samples per second per channel (48 000 for everything tiermesh sends).
    pub sample_rate: u32,
    /// Number of interleaved channels (1 or 2).
    pub channels: u16,
}

impl Audio {
    /// Duration in microseconds.
    pub fn duration_us(&self) -> u64 {
        let per_channel = self.samples.len() as u64 / u64::from(self.channels.max(1));
        per_channel * 1_000_000 / u64::from(self.sample_rate.max(1))
    }
}

/// Peak signal-to-noise ratio in dB between two equally sized planes (`f64::INFINITY` if equal).
///
/// # Errors
/// [`Error::InvalidFrame`] if the planes differ in length or are empty.
pub fn psnr_plane(a: &[u8], b: &[u8]) -> Result<f64, Error> {
    if a.len() != b.len() || a.is_empty() {
        return Err(Error::InvalidFrame(format!(
            "cannot compare planes of {} and {} bytes",
            a.len(),
            b.len()
        )));
    }
    let sse: u64 =
        a.iter().zip(b).map(|(&x, &y)| (i64::from(x) - i64::from(y)).unsigned_abs().pow(2)).sum();
    if sse == 0 {
        return Ok(f64::INFINITY);
    }
    let mse = sse as f64 / a.len() as f64;
    Ok(10.0 * (255.0 * 255.0 / mse).log10())
}

/// PSNR in dB over all three planes (weighted by sample count, as ffmpeg's "average").
///
/// # Errors
/// [`Error::InvalidFrame`] if the pictures differ in size.
pub fn psnr(a: &I420, b: &I420) -> Result<f64, Error> {
    if a.width != b.width || a.height != b.height {
        return Err(Error::InvalidFrame(format!(
            "cannot compare {}x{} with {}x{}",
            a.width, a.height, b.width, b.height
        )));
    }
    a.validate()?;
    b.validate()?;
    let sse = |p: &[u8], q: &[u8]| -> u64 {
        p.iter().zip(q).map(|(&x, &y)| (i64::from(x) - i64::from(y)).unsigned_abs().pow(2)).sum()
    };
    let total = sse(&a.y, &b.y) + sse(&a.u, &b.u) + sse(&a.v, &b.v);
    if total == 0 {
        return Ok(f64::INFINITY);
    }
    let n = (a.y.len() + a.u.len() + a.v.len()) as f64;
    Ok(10.0 * (255.0 * 255.0 / (total as f64 / n)).log10())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_planes_drops_stride_padding() {
        let y: Vec<u8> = (0..8 * 2).map(|i| i as u8).collect();
        let u = [1, 2, 0, 0];
        let v = [3, 4, 0, 0];
        let f = I420::from_planes(4, 2, [&y, &u, &v], [8, 4, 4]).unwrap();
        assert_eq!(f.y, vec![0, 1, 2, 3, 8, 9, 10, 11]);
        assert_eq!(f.u, vec![1, 2]);
        assert_eq!(f.v, vec![3, 4]);
    }

    #[test]
    fn psnr_of_identical_is_infinite_and_of_offset_is_finite() {
        let a = I420::new(4, 4).unwrap();
        let mut b = a.clone();
        assert!(psnr(&a, &b).unwrap().is_infinite());
        b.y.iter_mut().for_each(|s| *s += 1);
        let p = psnr(&a, &b).unwrap();
        assert!(p > 48.0 && p < 60.0, "{p}");
    }

    #[test]
    fn odd_or_empty_sizes_are_rejected() {
        assert!(I420::new(0, 2).is_err());
        assert!(I420::new(3, 2).is_err());
    }
}
