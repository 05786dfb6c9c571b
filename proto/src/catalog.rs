//! The MSF catalog (draft-ietf-moq-msf, "Catalog"): a JSON document, published on the
//! track named `catalog`, listing a broadcast's tracks and how they relate.
//!
//! [`Catalog`] maps every root and track field the draft defines to a typed field; fields
//! it does not define are kept in `extra` (the draft: "A parser MUST ignore fields it does
//! not understand"; keeping them lets a catalog pass through unchanged). Serialization
//! writes fields in the draft's order, with the Initialization Data List after the tracks
//! as the draft requires.
//!
//! The first object of every catalog group is an independent catalog; later objects of the
//! group are delta updates ([`Catalog::is_delta`], [`Catalog::apply_delta`]).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The Track Name of the top-level catalog track (case-sensitive).
pub const CATALOG_TRACK_NAME: &str = "catalog";

/// MSF_COMPRESSION (0x78): Track or Object property giving the payload compression
/// (0 none, 1 GZIP).
pub const MSF_COMPRESSION: u64 = 0x78;

/// MSF_INITIALIZATION (0x79): Track or Object property carrying initialization data.
pub const MSF_INITIALIZATION: u64 = 0x79;

/// Packaging values (Table 3 of the draft).
pub mod packaging {
    /// Low Overhead Container media.
    pub const LOC: &str = "loc";
    /// An MSF media timeline track.
    pub const MEDIA_TIMELINE: &str = "mediatimeline";
    /// An MSF event timeline track.
    pub const EVENT_TIMELINE: &str = "eventtimeline";
    /// A MoQ log track.
    pub const MOQ_LOG: &str = "moqlog";
    /// A MoQ metrics track.
    pub const MOQ_METRICS: &str = "moqmetrics";
    /// Another catalog.
    pub const CATALOG: &str = "catalog";
}

/// Reserved track roles (Table 4 of the draft); custom roles are allowed too.
pub mod role {
    /// Visual content.
    pub const VIDEO: &str = "video";
    /// Audio content.
    pub const AUDIO: &str = "audio";
    /// Audio description for visually impaired users.
    pub const AUDIO_DESCRIPTION: &str = "audiodescription";
    /// An MSF media timeline.
    pub const MEDIA_TIMELINE: &str = "mediatimeline";
    /// An MSF event timeline.
    pub const EVENT_TIMELINE: &str = "eventtimeline";
    /// A textual representation of the audio.
    pub const CAPTION: &str = "caption";
    /// A transcription of the spoken dialogue.
    pub const SUBTITLE: &str = "subtitle";
    /// Sign language video.
    pub const SIGN_LANGUAGE: &str = "signlanguage";
    /// A log publishing track.
    pub const LOG: &str = "log";
    /// A metrics publishing track.
    pub const METRICS: &str = "metrics";
    /// Application-defined data.
    pub const DATA: &str = "data";
}

/// Why a catalog was refused.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// The bytes are not JSON of the catalog's shape.
    #[error("catalog JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// A rule of the draft is broken.
    #[error("invalid catalog: {0}")]
    Invalid(&'static str),
    /// A delta update names a track the catalog does not hold.
    #[error("delta update refers to unknown track {0:?}")]
    UnknownTrack(String),
    /// A track name appears twice in one namespace.
    #[error("track {0:?} declared twice in one namespace")]
    DuplicateTrack(String),
}

/// A catalog object: independent (with `version` and `tracks`) or a delta update (with
/// `generatedAt` and `deltaUpdate` only).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Catalog {
    /// MSF version, e.g. "draft-01". Required in an independent catalog.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Wall-clock generation time, milliseconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generated_at: Option<u64>,
    /// Present (and true) once the broadcast is complete.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_complete: Option<bool>,
    /// The tracks. Required in an independent catalog.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracks: Option<Vec<Track>>,
    /// Tracks the subscriber may publish to (logs, metrics).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publish_tracks: Option<Vec<Track>>,
    /// Operations of a delta update, applied in order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delta_update: Option<Vec<DeltaOperation>>,
    /// Initialization data referenced by tracks' `initRef`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init_data_list: Option<Vec<InitData>>,
    /// Root fields the draft does not define, kept as received.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// One track object (Table 2 of the draft). Only `name` is always required.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Track {
    /// Track namespace; absent means the catalog track's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Track name, unique per namespace.
    pub name: String,
    /// Payload encapsulation, see [`packaging`]. Required in an independent catalog.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub packaging: Option<String>,
    /// Event timeline type (only with packaging "eventtimeline").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_type: Option<String>,
    /// Whether new objects will be added to the track.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_live: Option<bool>,
    /// Target glass-to-glass latency in milliseconds (not with `buffers`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_latency: Option<u64>,
    /// Target buffers (not with `targetLatency`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub buffers: Option<Buffers>,
    /// Content role, see [`role`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// Human-readable label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// Tracks with the same render group are rendered together.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub render_group: Option<u64>,
    /// Tracks with the same alternate group are alternatives (e.g. bitrate tiers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alt_group: Option<u64>,
    /// Id of an Initialization Data List entry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init_ref: Option<String>,
    /// Names of tracks (same namespace) this track depends on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub depends: Option<Vec<String>>,
    /// Media timeline template.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<Template>,
    /// Temporal layer ID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temporal_id: Option<u32>,
    /// Spatial layer ID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spatial_id: Option<u32>,
    /// WebCodecs codec string, e.g. "av01.0.08M.10.0.110.09" or "opus".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub codec: Option<String>,
    /// MIME type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mime_type: Option<String>,
    /// Frames per second.
    #[serde(default, skip_serializing_if = "Option::is_none", serialize_with = "whole_as_integer")]
    pub framerate: Option<f64>,
    /// Time units per second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timescale: Option<u64>,
    /// Maximum bitrate in bits per second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bitrate: Option<u64>,
    /// Average bitrate in bits per second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub avg_bitrate: Option<u64>,
    /// Longest time between random access points, milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_gop_duration: Option<u64>,
    /// Longest MoQT group, milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_group_duration: Option<u64>,
    /// Maximum encoded width in pixels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub width: Option<u32>,
    /// Maximum encoded height in pixels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub height: Option<u32>,
    /// Audio samples per second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub samplerate: Option<u32>,
    /// Audio channel configuration, e.g. "2".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel_config: Option<String>,
    /// Intended display width in pixels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_width: Option<u32>,
    /// Intended display height in pixels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_height: Option<u32>,
    /// Dominant language (BCP 47 tag).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lang: Option<String>,
    /// Parent track of a clone or update operation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_name: Option<String>,
    /// Namespace of the parent track.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_namespace: Option<String>,
    /// Duration in milliseconds (not for live tracks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub track_duration: Option<u64>,
    /// MoQT URI to publish a publish track to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_uri: Option<String>,
    /// Credential for the track.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// Encryption scheme, e.g. "moq-secure-objects".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption_scheme: Option<String>,
    /// AEAD cipher suite.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cipher_suite: Option<String>,
    /// Key identifier.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
    /// Base64 base key material.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub track_base_key: Option<String>,
    /// Authorization schemes and their configuration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_info: Option<Map<String, Value>>,
    /// Accessibility features embedded in the track.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accessibility: Option<Vec<Accessibility>>,
    /// Track fields the draft does not define, kept as received.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// Target buffers of a track, milliseconds. Unknown keys are ignored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Buffers {
    /// Buffer to stabilize at.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<u64>,
    /// Minimum buffer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<u64>,
    /// Maximum buffer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<u64>,
}

/// A media timeline template: a JSON array of six values in a fixed order.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "TemplateArray", into = "TemplateArray")]
pub struct Template {
    /// Media time of the first entry, milliseconds.
    pub start_media_time: u64,
    /// Media time between entries, milliseconds.
    pub delta_media_time: u64,
    /// Location (Group ID, Object ID) of the first entry.
    pub start_location: [u64; 2],
    /// Location step between entries.
    pub delta_location: [u64; 2],
    /// Wall clock of the first entry, milliseconds since the epoch (0 if unknown).
    pub start_wallclock: u64,
    /// Wall clock between entries, milliseconds.
    pub delta_wallclock: u64,
}

type TemplateArray = (u64, u64, [u64; 2], [u64; 2], u64, u64);

impl From<TemplateArray> for Template {
    fn from(a: TemplateArray) -> Self {
        Template {
            start_media_time: a.0,
            delta_media_time: a.1,
            start_location: a.2,
            delta_location: a.3,
            start_wallclock: a.4,
            delta_wallclock: a.5,
        }
    }
}

impl From<Template> for TemplateArray {
    fn from(t: Template) -> Self {
        (
            t.start_media_time,
            t.delta_media_time,
            t.start_location,
            t.delta_location,
            t.start_wallclock,
            t.delta_wallclock,
        )
    }
}

impl Template {
    /// Entry `n`: (media time ms, location, wall clock ms), by the draft's formulas.
    /// `None` on arithmetic overflow.
    pub fn entry(&self, n: u64) -> Option<(u64, [u64; 2], u64)> {
        let step = |start: u64, delta: u64| start.checked_add(n.checked_mul(delta)?);
        Some((
            step(self.start_media_time, self.delta_media_time)?,
            [
                step(self.start_location[0], self.delta_location[0])?,
                step(self.start_location[1], self.delta_location[1])?,
            ],
            step(self.start_wallclock, self.delta_wallclock)?,
        ))
    }
}

/// An accessibility descriptor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Accessibility {
    /// Scheme URN, e.g. "urn:scte:dash:cc:cea-608:2015".
    pub scheme: String,
    /// Channels or features, e.g. "CC1=eng;CC3=spa".
    pub value: String,
}

/// An Initialization Data List entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InitData {
    /// Reference used by tracks' `initRef`.
    pub id: String,
    /// "inline", "track-property" or "object-property".
    #[serde(rename = "type")]
    pub kind: String,
    /// Base64 data (inline) or a property type in hex.
    pub data: String,
}

/// The operation of a delta update entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeltaOp {
    /// Add tracks not declared before.
    Add,
    /// Remove declared tracks (by name, and namespace if given).
    Remove,
    /// Add tracks copied from a parent, with overrides.
    Clone,
    /// Change fields of declared tracks.
    Update,
}

/// One operation of a delta update.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeltaOperation {
    /// What to do.
    pub op: DeltaOp,
    /// The tracks it applies to.
    pub tracks: Vec<Track>,
}

impl Catalog {
    /// Parses a catalog object's payload.
    pub fn from_slice(json: &[u8]) -> Result<Self, CatalogError> {
        Ok(serde_json::from_slice(json)?)
    }

    /// The catalog as compact JSON.
    pub fn to_vec(&self) -> Vec<u8> {
        // Serializing plain data with string keys into memory cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Whether this object is a delta update rather than an independent catalog.
    pub fn is_delta(&self) -> bool {
        self.delta_update.is_some()
    }

    /// The tracks (empty for a delta update).
    pub fn tracks(&self) -> &[Track] {
        self.tracks.as_deref().unwrap_or_default()
    }

    /// The track with this name and namespace (`None` namespace: the catalog's own).
    pub fn track(&self, namespace: Option<&str>, name: &str) -> Option<&Track> {
        self.tracks().iter().find(|t| t.name == name && t.namespace.as_deref() == namespace)
    }

    /// Checks the draft's structural rules: an independent catalog has a version, tracks
    /// with a name and packaging, unique names per namespace, never both targetLatency and
    /// buffers; a delta update has generatedAt, at least one operation and no other root
    /// field.
    pub fn validate(&self) -> Result<(), CatalogError> {
        if let Some(ops) = &self.delta_update {
            if ops.is_empty() {
                return Err(CatalogError::Invalid("delta update without operations"));
            }
            if self.generated_at.is_none() {
                return Err(CatalogError::Invalid("delta update without generatedAt"));
            }
            if self.version.is_some()
                || self.is_complete.is_some()
                || self.tracks.is_some()
                || self.publish_tracks.is_some()
                || self.init_data_list.is_some()
            {
                return Err(CatalogError::Invalid("delta update with other root fields"));
            }
            for op in ops {
                for t in &op.tracks {
                    check_track_fields(t)?;
                    if op.op == DeltaOp::Clone && t.parent_name.is_none() {
                        return Err(CatalogError::Invalid("clone operation without parentName"));
                    }
                }
            }
            return Ok(());
        }
        if self.version.is_none() {
            return Err(CatalogError::Invalid("catalog without version"));
        }
        let Some(tracks) = &self.tracks else {
            return Err(CatalogError::Invalid("catalog without tracks"));
        };
        if self.is_complete == Some(false) {
            return Err(CatalogError::Invalid("isComplete present and false"));
        }
        let mut seen = std::collections::HashSet::new();
        for t in tracks {
            if t.packaging.is_none() {
                return Err(CatalogError::Invalid("track without packaging"));
            }
            check_track_fields(t)?;
            if !seen.insert((t.namespace.as_deref(), t.name.as_str())) {
                return Err(CatalogError::DuplicateTrack(t.name.clone()));
            }
        }
        Ok(())
    }

    /// Applies a delta update to this independent catalog: each operation in order
    /// (add, remove, clone, update), and takes the delta's generatedAt.
    pub fn apply_delta(&mut self, delta: &Catalog) -> Result<(), CatalogError> {
        let ops = delta.delta_update.as_ref().ok_or(CatalogError::Invalid("not a delta update"))?;
        let tracks = self.tracks.get_or_insert_with(Vec::new);
        for op in ops {
            for t in &op.tracks {
                match op.op {
                    DeltaOp::Add => {
                        if find(tracks, t.namespace.as_deref(), &t.name).is_some() {
                            return Err(CatalogError::DuplicateTrack(t.name.clone()));
                        }
                        tracks.push(t.clone());
                    }
                    DeltaOp::Remove => {
                        let i = find(tracks, t.namespace.as_deref(), &t.name)
                            .ok_or_else(|| CatalogError::UnknownTrack(t.name.clone()))?;
                        tracks.remove(i);
                    }
                    DeltaOp::Clone => {
                        let parent = t
                            .parent_name
                            .as_deref()
                            .ok_or(CatalogError::Invalid("clone operation without parentName"))?;
                        let i = find(tracks, t.parent_namespace.as_deref(), parent)
                            .ok_or_else(|| CatalogError::UnknownTrack(parent.to_owned()))?;
                        let mut new = merge(&tracks[i], t)?;
                        new.parent_name = None;
                        new.parent_namespace = None;
                        if find(tracks, new.namespace.as_deref(), &new.name).is_some() {
                            return Err(CatalogError::DuplicateTrack(new.name.clone()));
                        }
                        tracks.push(new);
                    }
                    DeltaOp::Update => {
                        // The draft asks for parentName; its own example names the track
                        // with `name`. Both are accepted.
                        let target = t.parent_name.as_deref().unwrap_or(&t.name);
                        let ns = t.parent_namespace.as_deref().or(t.namespace.as_deref());
                        let i = find(tracks, ns, target)
                            .ok_or_else(|| CatalogError::UnknownTrack(target.to_owned()))?;
                        let mut new = merge(&tracks[i], t)?;
                        new.name = tracks[i].name.clone();
                        new.namespace = tracks[i].namespace.clone();
                        new.parent_name = None;
                        new.parent_namespace = None;
                        tracks[i] = new;
                    }
                }
            }
        }
        if delta.generated_at.is_some() {
            self.generated_at = delta.generated_at;
        }
        Ok(())
    }
}

/// Writes a whole number without a fraction (30, not 30.0), so a catalog round-trips to
/// the same JSON.
fn whole_as_integer<S: serde::Serializer>(v: &Option<f64>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(f) if f.fract() == 0.0 && *f >= 0.0 && *f < 9.0e15 => s.serialize_u64(*f as u64),
        Some(f) => s.serialize_f64(*f),
        None => s.serialize_none(),
    }
}

fn check_track_fields(t: &Track) -> Result<(), CatalogError> {
    if t.target_latency.is_some() && t.buffers.is_some() {
        return Err(CatalogError::Invalid("track with both targetLatency and buffers"));
    }
    if t.event_type.is_some()
        && t.packaging.as_deref().is_some_and(|p| p != packaging::EVENT_TIMELINE)
    {
        return Err(CatalogError::Invalid("eventType on a track that is not an event timeline"));
    }
    Ok(())
}

fn find(tracks: &[Track], namespace: Option<&str>, name: &str) -> Option<usize> {
    tracks.iter().position(|t| t.name == name && t.namespace.as_deref() == namespace)
}

/// `base` with every field present in `over` replaced.
fn merge(base: &Track, over: &Track) -> Result<Track, CatalogError> {
    let mut b = serde_json::to_value(base)?;
    if let (Value::Object(b), Value::Object(o)) = (&mut b, serde_json::to_value(over)?) {
        b.extend(o);
    }
    Ok(serde_json::from_value(b)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    macro_rules! fixture {
        ($name:literal) => {
            (
                $name,
                include_str!(concat!(
                    env!("CARGO_MANIFEST_DIR"),
                    "/tests/fixtures/msf/",
                    $name,
                    ".json"
                )),
            )
        };
    }

    /// Every example catalog of draft-ietf-moq-msf's "Catalog Examples" section.
    const EXAMPLES: &[(&str, &str)] = &[
        fixture!("time-aligned-audio-video-tracks-with-single-quality"),
        fixture!("simulcast-video-tracks-3-alternate-qualities-along-with-audio"),
        fixture!("svc-video-tracks-with-2-spatial-and-2-temporal-qualities"),
        fixture!("delta-update-adding-two-tracks"),
        fixture!("delta-update-removing-tracks"),
        fixture!("time-aligned-audio-video-tracks-with-custom-field-values"),
        fixture!("time-aligned-vod-audio-video-tracks"),
        fixture!("encrypted-audio-video-tracks"),
        fixture!("media-timeline-and-event-timeline"),
        fixture!("media-timeline-template"),
        fixture!("video-track-with-embedded-captions-and-scte-35-events"),
        fixture!("video-track-with-cea-708-captions"),
        fixture!("terminating-a-live-broadcast"),
        fixture!("variable-substitution-for-personalized-delivery-1"),
        fixture!("variable-substitution-for-personalized-delivery-2"),
        fixture!("time-aligned-audio-video-tracks-with-authorization"),
        fixture!("a-catalog-referencing-other-catalogs"),
        fixture!("publish-tracks-for-logs-and-metrics"),
    ];

    fn example(name: &str) -> Catalog {
        let (_, json) = EXAMPLES.iter().find(|e| e.0 == name).unwrap();
        Catalog::from_slice(json.as_bytes()).unwrap()
    }

    #[test]
    fn every_draft_example_parses_validates_and_round_trips() {
        for (name, json) in EXAMPLES {
            let c = Catalog::from_slice(json.as_bytes()).unwrap_or_else(|e| panic!("{name}: {e}"));
            c.validate().unwrap_or_else(|e| panic!("{name}: {e}"));
            // Nothing is lost: the re-serialized catalog is the same JSON value.
            let original: Value = serde_json::from_str(json).unwrap();
            let again: Value = serde_json::from_slice(&c.to_vec()).unwrap();
            assert_eq!(original, again, "{name}");
        }
    }

    #[test]
    fn single_quality_example_fields() {
        let c = example("time-aligned-audio-video-tracks-with-single-quality");
        assert_eq!(c.version.as_deref(), Some("draft-01"));
        assert_eq!(c.generated_at, Some(1_746_104_606_044));
        assert!(!c.is_delta());
        let v = c.track(Some("conference.example.com/conference123/alice"), "1080p-video").unwrap();
        assert_eq!(v.packaging.as_deref(), Some(packaging::LOC));
        assert_eq!(v.role.as_deref(), Some(role::VIDEO));
        assert_eq!(v.codec.as_deref(), Some("av01.0.08M.10.0.110.09"));
        assert_eq!(
            (v.width, v.height, v.framerate, v.bitrate),
            (Some(1920), Some(1080), Some(30.0), Some(1_500_000))
        );
        assert_eq!(
            (v.is_live, v.target_latency, v.render_group),
            (Some(true), Some(2000), Some(1))
        );
        let a = &c.tracks()[1];
        assert_eq!((a.samplerate, a.channel_config.as_deref()), (Some(48_000), Some("2")));
    }

    #[test]
    fn simulcast_alt_groups_and_missing_namespace() {
        let c = example("simulcast-video-tracks-3-alternate-qualities-along-with-audio");
        let alts: Vec<_> =
            c.tracks().iter().filter(|t| t.alt_group == Some(1)).map(|t| t.name.as_str()).collect();
        assert_eq!(alts, ["hd", "md", "sd"]);
        assert!(c.tracks().iter().all(|t| t.namespace.is_none()));
    }

    #[test]
    fn buffers_depends_template_accessibility_auth() {
        let c = example("svc-video-tracks-with-2-spatial-and-2-temporal-qualities");
        let t = &c.tracks()[3];
        assert_eq!(t.depends.as_deref(), Some(&["480p30".to_owned(), "1080p15".to_owned()][..]));
        assert_eq!(t.buffers, Some(Buffers { target: Some(2000), min: None, max: None }));

        let c = example("media-timeline-template");
        let tpl = c.tracks()[0].template.unwrap();
        assert_eq!(tpl.entry(0), Some((0, [0, 0], 1_759_924_158_381)));
        assert_eq!(tpl.entry(2), Some((4004, [2, 0], 1_759_924_162_385)));

        let c = example("video-track-with-embedded-captions-and-scte-35-events");
        let acc = c.tracks()[0].accessibility.as_ref().unwrap();
        assert_eq!(acc[0].value, "CC1=eng;CC3=spa");
        assert_eq!(c.tracks()[2].event_type.as_deref(), Some("urn:scte:scte35:2013:bin"));

        let c = example("time-aligned-audio-video-tracks-with-authorization");
        assert_eq!(c.tracks()[0].auth_info.as_ref().unwrap()["cat"], "%cat-token%");
    }

    #[test]
    fn custom_fields_are_kept() {
        let c = example("time-aligned-audio-video-tracks-with-custom-field-values");
        let t = &c.tracks()[0];
        assert_eq!(t.extra["com.example-billing-code"], 3201);
        assert_eq!(t.extra["com.example-tier"], "premium");
        assert_eq!(
            t.buffers,
            Some(Buffers { target: Some(2000), min: Some(1500), max: Some(5000) })
        );
        let c = example("variable-substitution-for-personalized-delivery-1");
        assert_eq!(c.tracks()[1].extra["c4m"], "%token%");
    }

    #[test]
    fn publish_tracks_and_encryption() {
        let c = example("publish-tracks-for-logs-and-metrics");
        let p = c.publish_tracks.as_ref().unwrap();
        assert_eq!(p[1].connection_uri.as_deref(), Some("moqt://logs.example.com:4443"));
        assert_eq!(p[0].role.as_deref(), Some(role::METRICS));
        let c = example("encrypted-audio-video-tracks");
        let t = &c.tracks()[0];
        assert_eq!(t.encryption_scheme.as_deref(), Some("moq-secure-objects"));
        assert_eq!(t.cipher_suite.as_deref(), Some("aes-128-gcm-sha256"));
        assert_eq!(t.key_id.as_deref(), Some("key-2024-q1-premium"));
        let c = example("terminating-a-live-broadcast");
        assert_eq!((c.is_complete, c.tracks().len()), (Some(true), 0));
        let c = example("time-aligned-vod-audio-video-tracks");
        assert_eq!(c.tracks()[0].track_duration, Some(8_072_340));
        assert_eq!(c.generated_at, None);
    }

    #[test]
    fn delta_updates_apply() {
        let mut c = Catalog {
            version: Some("draft-01".into()),
            tracks: Some(vec![
                Track {
                    name: "video-1080".into(),
                    packaging: Some("loc".into()),
                    bitrate: Some(5_000_000),
                    width: Some(1920),
                    ..Default::default()
                },
                Track {
                    name: "video-1080".into(),
                    namespace: Some("example.com/custom".into()),
                    packaging: Some("loc".into()),
                    codec: Some("av01".into()),
                    width: Some(1920),
                    ..Default::default()
                },
                Track { name: "video".into(), packaging: Some("loc".into()), ..Default::default() },
            ]),
            ..Default::default()
        };
        let delta = example("delta-update-adding-two-tracks");
        assert!(delta.is_delta());
        c.apply_delta(&delta).unwrap();
        assert_eq!(c.track(None, "video-1080").unwrap().bitrate, Some(4_000_000));
        assert_eq!(c.track(None, "slides").unwrap().framerate, Some(15.0));
        // The clone inherits every attribute of its parent but the name, namespace included.
        let clone = c.track(Some("example.com/custom"), "video-720").unwrap();
        assert_eq!(
            (clone.width, clone.height, clone.codec.as_deref()),
            (Some(1280), Some(720), Some("av01"))
        );
        assert_eq!(clone.parent_name, None);
        c.validate().unwrap();

        let remove = example("delta-update-removing-tracks");
        c.apply_delta(&remove).unwrap();
        assert!(c.track(None, "video").is_none() && c.track(None, "slides").is_none());
        // Removing again names unknown tracks.
        assert!(matches!(c.apply_delta(&remove), Err(CatalogError::UnknownTrack(_))));
    }

    #[test]
    fn invalid_catalogs_are_refused() {
        let bad = |json: &str| Catalog::from_slice(json.as_bytes()).unwrap().validate().is_err();
        assert!(bad(r#"{"tracks":[]}"#), "independent without version");
        assert!(bad(r#"{"version":"draft-01"}"#), "without tracks");
        assert!(bad(r#"{"version":"1","tracks":[{"name":"a"}]}"#), "track without packaging");
        assert!(bad(
            r#"{"version":"1","tracks":[{"name":"a","packaging":"loc"},{"name":"a","packaging":"loc"}]}"#
        ));
        assert!(bad(
            r#"{"version":"1","tracks":[{"name":"a","packaging":"loc","targetLatency":1,"buffers":{}}]}"#
        ));
        assert!(bad(r#"{"generatedAt":1,"deltaUpdate":[]}"#), "delta without operations");
        assert!(bad(r#"{"deltaUpdate":[{"op":"add","tracks":[]}]}"#), "delta without generatedAt");
        assert!(bad(r#"{"version":"1","generatedAt":1,"deltaUpdate":[{"op":"add","tracks":[]}]}"#));
        // Not JSON of the right shape.
        assert!(Catalog::from_slice(b"{\"tracks\":[{}]}").is_err(), "track without name");
        assert!(Catalog::from_slice(b"[1,2]").is_err());
        // Unknown buffer keys are ignored.
        assert!(!bad(
            r#"{"version":"1","tracks":[{"name":"a","packaging":"loc","buffers":{"x":1}}]}"#
        ));
    }
}
