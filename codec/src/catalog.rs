//! The MSF catalog (draft-ietf-moq-msf): which tracks a broadcast has and how to decode them.

use serde::{Deserialize, Serialize};

use crate::{Error, malformed};

/// MSF version string written into catalogs. The specification asks for "draft-XX"; its
/// examples (which this follows field for field) are those of draft-01.
pub const MSF_VERSION: &str = "draft-01";

/// A whole catalog.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Catalog {
    /// MSF version ([`MSF_VERSION`]).
    pub version: String,
    /// Wall-clock milliseconds since the Unix epoch when this catalog was made.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub generated_at: Option<u64>,
    /// The tracks.
    pub tracks: Vec<Track>,
}

/// One track of a catalog. Absent optional fields are left out of the JSON.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Track {
    /// Track name, e.g. `video/720p`.
    pub name: String,
    /// Track namespace; absent means the catalog track's own.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub namespace: Option<String>,
    /// Payload packaging: `loc` for media.
    pub packaging: String,
    /// True while objects are still being added.
    pub is_live: bool,
    /// `video` or `audio`.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub role: Option<String>,
    /// Tracks rendered together share this number (audio with video).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub render_group: Option<u32>,
    /// Tracks that are alternatives of each other (the rungs of a ladder) share this number.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub alt_group: Option<u32>,
    /// WebCodecs codec string (`avc1.42C01F`, `av01.0.04M.08`, `opus`).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub codec: Option<String>,
    /// Maximum encoded width in pixels.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub width: Option<u32>,
    /// Maximum encoded height in pixels.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub height: Option<u32>,
    /// Frames per second.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub framerate: Option<f64>,
    /// Maximum bit rate in bits per second.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub bitrate: Option<u64>,
    /// Longest group, in milliseconds.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub max_group_duration: Option<u64>,
    /// Audio sample rate.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub samplerate: Option<u32>,
    /// Audio channel configuration (`"1"`, `"2"`).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub channel_config: Option<String>,
}

impl Catalog {
    /// An empty catalog of the current version.
    pub fn new(generated_at_ms: Option<u64>) -> Self {
        Self { version: MSF_VERSION.to_string(), generated_at: generated_at_ms, tracks: Vec::new() }
    }

    /// The catalog as JSON, the payload of the catalog track.
    pub fn to_json(&self) -> String {
        // Serialising plain strings and numbers cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Parses a catalog.
    ///
    /// # Errors
    /// [`Error::Malformed`] for invalid JSON, a missing required field, or an MSF version
    /// other than [`MSF_VERSION`] (the specification forbids guessing at one).
    pub fn from_json(json: &[u8]) -> Result<Self, Error> {
        let c: Self =
            serde_json::from_slice(json).map_err(|e| malformed("catalog", e.to_string()))?;
        if c.version != MSF_VERSION {
            return Err(malformed(
                "catalog",
                format!("MSF version {:?}, this build reads {MSF_VERSION:?}", c.version),
            ));
        }
        Ok(c)
    }

    /// The audio track tiermesh publishes beside the ladder: Opus, 48 kHz, 20 ms groups.
    pub fn opus_track(name: &str, channels: u16, bitrate: u32, render_group: u32) -> Track {
        Track {
            name: name.to_string(),
            packaging: "loc".into(),
            is_live: true,
            role: Some("audio".into()),
            render_group: Some(render_group),
            codec: Some("opus".into()),
            samplerate: Some(crate::opus::SAMPLE_RATE),
            channel_config: Some(channels.to_string()),
            bitrate: Some(u64::from(bitrate)),
            ..Track::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_uses_msf_field_names_and_round_trips() {
        let mut c = Catalog::new(Some(1_746_104_606_044));
        c.tracks.push(Track {
            name: "video/360p".into(),
            packaging: "loc".into(),
            is_live: true,
            alt_group: Some(1),
            render_group: Some(1),
            codec: Some("avc1.42C01E".into()),
            width: Some(640),
            height: Some(360),
            framerate: Some(30.0),
            bitrate: Some(550_000),
            ..Track::default()
        });
        c.tracks.push(Catalog::opus_track("audio", 1, 32_000, 1));
        let json = c.to_json();
        for field in [
            "\"generatedAt\"",
            "\"isLive\"",
            "\"altGroup\"",
            "\"renderGroup\"",
            "\"channelConfig\"",
        ] {
            assert!(json.contains(field), "{field} missing in {json}");
        }
        assert!(!json.contains("null"), "absent fields are left out: {json}");
        assert_eq!(Catalog::from_json(json.as_bytes()).unwrap(), c);
    }

    #[test]
    fn unknown_version_and_garbage_are_errors() {
        assert!(Catalog::from_json(br#"{"version":"draft-99","tracks":[]}"#).is_err());
        assert!(Catalog::from_json(b"{").is_err());
    }
}
