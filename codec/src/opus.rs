//! Opus audio through libopus: 48 kHz, 20 ms frames, in-band forward error correction.
//!
//! Each encoded frame is one LOC object (and, per the design, one MoQT group), so a lost
//! object costs 20 ms of sound; in-band FEC lets the receiver rebuild a lost frame from
//! the low-rate copy carried inside the next one ([`Decoder::decode_lost`]).

use ::opus as libopus;

use crate::Error;
use crate::frame::Audio;

/// The one sample rate tiermesh sends.
pub const SAMPLE_RATE: u32 = 48_000;
/// Samples per channel in one 20 ms frame at 48 kHz.
pub const FRAME_SAMPLES: usize = 960;
/// Frame duration in microseconds.
pub const FRAME_US: u64 = 20_000;
/// The largest packet we let libopus write (its own recommended ceiling for one frame).
const MAX_PACKET: usize = 4000;

/// Settings of an Opus encoder.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EncoderConfig {
    /// 1 (mono) or 2 (stereo).
    pub channels: u16,
    /// Target bit rate in bits per second.
    pub bitrate: u32,
    /// Loss the encoder plans for, in percent: libopus spends FEC bits in proportion.
    pub expected_loss_percent: u8,
}

impl Default for EncoderConfig {
    fn default() -> Self {
        // 32 kbit/s mono is clear speech with room for FEC; 10 % loss makes libopus include
        // FEC data in every frame on a link that is actually losing packets.
        Self { channels: 1, bitrate: 32_000, expected_loss_percent: 10 }
    }
}

fn channels(n: u16) -> Result<libopus::Channels, Error> {
    match n {
        1 => Ok(libopus::Channels::Mono),
        2 => Ok(libopus::Channels::Stereo),
        _ => Err(Error::Config(format!("opus takes 1 or 2 channels, not {n}"))),
    }
}

fn enc_err(e: libopus::Error) -> Error {
    Error::Encode { codec: "opus", message: e.to_string() }
}

fn dec_err(e: libopus::Error) -> Error {
    Error::Decode { codec: "opus", message: e.to_string() }
}

/// Opus encoder in VoIP mode with in-band FEC.
pub struct Encoder {
    inner: libopus::Encoder,
    config: EncoderConfig,
}

impl std::fmt::Debug for Encoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("opus::Encoder").field("config", &self.config).finish()
    }
}

impl Encoder {
    /// Creates an encoder.
    ///
    /// # Errors
    /// [`Error::Config`] for a bad channel count or a setting libopus refuses.
    pub fn new(config: EncoderConfig) -> Result<Self, Error> {
        let mut inner = libopus::Encoder::new(
            SAMPLE_RATE,
            channels(config.channels)?,
            libopus::Application::Voip,
        )
        .map_err(enc_err)?;
        inner.set_inband_fec(true).map_err(enc_err)?;
        // In-band FEC exists only in Opus' SILK layer; telling libopus the signal is speech
        // keeps it in SILK/hybrid modes, where every frame carries the previous one's copy.
        inner.set_signal(libopus::Signal::Voice).map_err(enc_err)?;
        inner
            .set_packet_loss_perc(i32::from(config.expected_loss_percent.min(100)))
            .map_err(enc_err)?;
        let mut this = Self { inner, config: config.clone() };
        this.set_bitrate(config.bitrate)?;
        Ok(this)
    }

    /// The current settings.
    pub fn config(&self) -> &EncoderConfig {
        &self.config
    }

    /// Changes the bit rate from the next frame on.
    ///
    /// # Errors
    /// [`Error::Config`] if libopus refuses the rate (it takes 500 to 512 000 bit/s).
    pub fn set_bitrate(&mut self, bps: u32) -> Result<(), Error> {
        let b = i32::try_from(bps).map_err(|_| Error::Config(format!("opus bit rate {bps}")))?;
        self.inner
            .set_bitrate(libopus::Bitrate::Bits(b))
            .map_err(|e| Error::Config(format!("opus bit rate {bps}: {e}")))?;
        self.config.bitrate = bps;
        Ok(())
    }

    /// Whether libopus has in-band FEC switched on.
    ///
    /// # Errors
    /// [`Error::Encode`] if libopus cannot be asked.
    pub fn inband_fec(&mut self) -> Result<bool, Error> {
        self.inner.get_inband_fec().map_err(enc_err)
    }

    /// Encodes one 20 ms frame.
    ///
    /// # Errors
    /// [`Error::InvalidFrame`] if `audio` is not 20 ms at 48 kHz with this encoder's channel
    /// count, [`Error::Encode`] if libopus fails.
    pub fn encode(&mut self, audio: &Audio) -> Result<Vec<u8>, Error> {
        let expected = FRAME_SAMPLES * usize::from(self.config.channels);
        if audio.sample_rate != SAMPLE_RATE
            || audio.channels != self.config.channels
            || audio.samples.len() != expected
        {
            return Err(Error::InvalidFrame(format!(
                "opus wants {expected} samples at {SAMPLE_RATE} Hz x{}, got {} at {} Hz x{}",
                self.config.channels,
                audio.samples.len(),
                audio.sample_rate,
                audio.channels
            )));
        }
        self.inner.encode_vec(&audio.samples, MAX_PACKET).map_err(enc_err)
    }
}

/// Opus decoder.
pub struct Decoder {
    inner: libopus::Decoder,
    channels: u16,
}

impl std::fmt::Debug for Decoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("opus::Decoder").field("channels", &self.channels).finish()
    }
}

impl Decoder {
    /// Creates a decoder for `channels` channels at 48 kHz.
    ///
    /// # Errors
    /// [`Error::Config`] for a bad channel count.
    pub fn new(channels: u16) -> Result<Self, Error> {
        let inner =
            libopus::Decoder::new(SAMPLE_RATE, self::channels(channels)?).map_err(dec_err)?;
        Ok(Self { inner, channels })
    }

    fn run(&mut self, packet: &[u8], fec: bool) -> Result<Audio, Error> {
        let mut samples = vec![0i16; FRAME_SAMPLES * usize::from(self.channels)];
        let n = self.inner.decode(packet, &mut samples, fec).map_err(dec_err)?;
        samples.truncate(n * usize::from(self.channels));
        Ok(Audio { samples, sample_rate: SAMPLE_RATE, channels: self.channels })
    }

    /// Decodes one packet.
    ///
    /// # Errors
    /// [`Error::Decode`] if the packet is malformed.
    pub fn decode(&mut self, packet: &[u8]) -> Result<Audio, Error> {
        if packet.is_empty() {
            return Err(Error::Decode { codec: "opus", message: "empty packet".into() });
        }
        self.run(packet, false)
    }

    /// Rebuilds a lost frame: from the FEC data in `next` (the packet after the lost one)
    /// when it is at hand, else by packet-loss concealment. Then decode `next` itself with
    /// [`Decoder::decode`] as usual.
    ///
    /// # Errors
    /// [`Error::Decode`] if `next` is malformed.
    pub fn decode_lost(&mut self, next: Option<&[u8]>) -> Result<Audio, Error> {
        match next {
            Some(p) if !p.is_empty() => self.run(p, true),
            _ => self.run(&[], false),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_channel_counts_and_frame_sizes_are_refused() {
        assert!(Encoder::new(EncoderConfig { channels: 3, ..Default::default() }).is_err());
        let mut enc = Encoder::new(EncoderConfig::default()).unwrap();
        let short = Audio { samples: vec![0; 480], sample_rate: SAMPLE_RATE, channels: 1 };
        assert!(enc.encode(&short).is_err());
        let mut dec = Decoder::new(1).unwrap();
        assert!(dec.decode(&[]).is_err());
    }
}
