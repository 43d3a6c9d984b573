//! WHIP (RFC 9725) as Earshot takes it: who a session is for (call key, campaign, rep,
//! party) and whether its SDP offer carries audio we decode. Pure: the IO (HTTP,
//! ICE, DTLS-SRTP) is in `endpoint` and `call` beside it.

use thiserror::Error;

use crate::ingest::sip::sdp;
use crate::ingest::sip::sdp::SdpError;

/// Which side of the call a session carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Party {
    Rep,
    Customer,
    /// Two audio tracks: the first is the rep, the second the customer.
    Both,
}

impl Party {
    pub fn parse(s: &str) -> Option<Party> {
        match s.to_ascii_lowercase().as_str() {
            "rep" | "agent" => Some(Party::Rep),
            "customer" | "remote" => Some(Party::Customer),
            "both" => Some(Party::Both),
            _ => None,
        }
    }

    /// The call channels (0 = rep, 1 = customer) this session fills, in track order.
    pub fn channels(&self) -> &'static [usize] {
        match self {
            Party::Rep => &[0],
            Party::Customer => &[1],
            Party::Both => &[0, 1],
        }
    }
}

/// What a `POST /whip` says about its call (query parameters or `X-Earshot-*` headers).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WhipParams {
    pub call: Option<String>,
    pub campaign: Option<String>,
    pub rep: Option<String>,
    pub party: Option<String>,
}

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum WhipError {
    #[error("the SDP offer is malformed: {0}")]
    BadSdp(#[from] SdpError),
    #[error("the SDP offer has no audio section")]
    NoAudio,
    #[error("no audio section of the offer has Opus (opus/48000/2); Earshot's WebRTC ingest decodes Opus only")]
    NoOpus,
    #[error("party={party} needs {want} audio section(s) that send, the offer has {have}")]
    TrackCount { party: &'static str, want: usize, have: usize },
    #[error("`{0}` is not a valid value: 1 to 128 printable characters")]
    BadParam(&'static str),
    #[error("party must be rep, customer or both")]
    BadParty,
}

impl WhipError {
    /// The HTTP status this error answers with.
    pub fn status(&self) -> u16 {
        match self {
            WhipError::BadSdp(_) | WhipError::BadParam(_) | WhipError::BadParty => 400,
            WhipError::NoAudio | WhipError::NoOpus | WhipError::TrackCount { .. } => 422,
        }
    }

    /// Stable code for metrics and problem bodies.
    pub fn code(&self) -> &'static str {
        match self {
            WhipError::BadSdp(_) => "bad_sdp",
            WhipError::NoAudio => "no_audio",
            WhipError::NoOpus => "no_opus",
            WhipError::TrackCount { .. } => "track_count",
            WhipError::BadParam(_) | WhipError::BadParty => "bad_param",
        }
    }
}

/// One audio section of an offer that sends us Opus.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AudioTrack {
    /// Index of its `m=` section.
    pub section: usize,
    pub mid: Option<String>,
    /// The `a=msid` track id, which the browser's track carries too.
    pub track_id: Option<String>,
    pub opus_pt: u8,
}

/// The accepted plan of a session: which track fills which call channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionPlan {
    pub party: Party,
    /// `(track, channel)` in section order.
    pub tracks: Vec<(AudioTrack, usize)>,
}

fn checked(name: &'static str, v: Option<&str>) -> Result<Option<String>, WhipError> {
    match v.map(str::trim) {
        None | Some("") => Ok(None),
        Some(s) if s.len() <= 128 && s.chars().all(|c| !c.is_control()) => Ok(Some(s.to_string())),
        Some(_) => Err(WhipError::BadParam(name)),
    }
}

impl WhipParams {
    /// Validates every value that is present.
    pub fn validated(self) -> Result<WhipParams, WhipError> {
        Ok(WhipParams {
            call: checked("call", self.call.as_deref())?,
            campaign: checked("campaign", self.campaign.as_deref())?,
            rep: checked("rep", self.rep.as_deref())?,
            party: checked("party", self.party.as_deref())?,
        })
    }
}

/// Reads an offer: its audio sections that send Opus, mapped to call channels by
/// `party` (absent: `both` for two such sections, `rep` for one).
pub fn plan(offer: &str, party: Option<&str>) -> Result<SessionPlan, WhipError> {
    let party = match party {
        None => None,
        Some(p) => Some(Party::parse(p).ok_or(WhipError::BadParty)?),
    };
    let parsed = sdp::parse(offer.as_bytes())?;
    let extra = section_attributes(offer);
    let audio: Vec<usize> =
        parsed.media.iter().enumerate().filter(|(_, m)| m.kind == "audio").map(|(i, _)| i).collect();
    if audio.is_empty() {
        return Err(WhipError::NoAudio);
    }
    let mut tracks = Vec::new();
    let mut any_opus = false;
    for &i in &audio {
        let m = &parsed.media[i];
        let Some(pt) = m.rtpmaps.iter().find(|r| r.name.eq_ignore_ascii_case("opus") && r.rate == 48000).map(|r| r.pt)
        else {
            continue;
        };
        any_opus = true;
        let sends = m.port != 0 && matches!(m.direction, sdp::Direction::SendRecv | sdp::Direction::SendOnly);
        if sends {
            let (mid, track_id) = extra.get(i).cloned().unwrap_or_default();
            tracks.push(AudioTrack { section: i, mid, track_id, opus_pt: pt });
        }
    }
    if !any_opus {
        return Err(WhipError::NoOpus);
    }
    let party = party.unwrap_or(if tracks.len() >= 2 { Party::Both } else { Party::Rep });
    let want = party.channels().len();
    if tracks.len() != want {
        let name = match party {
            Party::Rep => "rep",
            Party::Customer => "customer",
            Party::Both => "both",
        };
        return Err(WhipError::TrackCount { party: name, want, have: tracks.len() });
    }
    let tracks = tracks.into_iter().zip(party.channels().iter().copied()).collect();
    Ok(SessionPlan { party, tracks })
}

/// `(a=mid, a=msid track id)` of each `m=` section, in order.
fn section_attributes(offer: &str) -> Vec<(Option<String>, Option<String>)> {
    let mut out: Vec<(Option<String>, Option<String>)> = Vec::new();
    for line in offer.lines() {
        let line = line.trim_end();
        if line.starts_with("m=") {
            out.push((None, None));
        } else if let Some(cur) = out.last_mut() {
            if let Some(mid) = line.strip_prefix("a=mid:") {
                cur.0 = Some(mid.trim().to_string());
            } else if let Some(msid) = line.strip_prefix("a=msid:") {
                cur.1 = msid.split_whitespace().nth(1).map(str::to_string);
            }
        }
    }
    out
}

/// Opus RTP timestamps (48 kHz) as sample positions at `rate`, continuous across the
/// 32-bit wrap (dividing the raw value would jump there).
#[derive(Debug, Clone, Default)]
pub struct TimestampScaler {
    ext: i64,
    last: Option<u32>,
}

impl TimestampScaler {
    pub fn scale(&mut self, ts: u32, rate: u32) -> u32 {
        match self.last {
            None => self.ext = i64::from(ts),
            Some(l) => self.ext += i64::from(ts.wrapping_sub(l) as i32),
        }
        self.last = Some(ts);
        self.ext.div_euclid(i64::from(48_000 / rate)) as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Trimmed from what Chromium 140 offers for `addTransceiver('audio')`.
    pub const CHROME_OFFER: &str = "v=0\r\no=- 4611731400430051336 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0\r\na=msid-semantic: WMS\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111 63 9 0 8 13 110 126\r\nc=IN IP4 0.0.0.0\r\na=rtcp:9 IN IP4 0.0.0.0\r\na=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\na=fingerprint:sha-256 00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF\r\na=setup:actpass\r\na=mid:0\r\na=sendonly\r\na=msid:stream1 track-a\r\na=rtcp-mux\r\na=rtpmap:111 opus/48000/2\r\na=fmtp:111 minptime=10;useinbandfec=1\r\na=rtpmap:0 PCMU/8000\r\n";

    #[test]
    fn a_browser_offer_maps_its_track_to_the_rep() {
        let p = plan(CHROME_OFFER, None).unwrap();
        assert_eq!(p.party, Party::Rep);
        assert_eq!(p.tracks.len(), 1);
        assert_eq!(p.tracks[0].1, 0);
        assert_eq!(p.tracks[0].0.track_id.as_deref(), Some("track-a"));
        assert_eq!(p.tracks[0].0.mid.as_deref(), Some("0"));
        assert_eq!(p.tracks[0].0.opus_pt, 111);
        let c = plan(CHROME_OFFER, Some("customer")).unwrap();
        assert_eq!(c.tracks[0].1, 1);
    }

    #[test]
    fn two_audio_sections_are_both_parties_in_order() {
        let second =
            CHROME_OFFER.split("m=audio").nth(1).unwrap().replace("mid:0", "mid:1").replace("track-a", "track-b");
        let offer = format!("{CHROME_OFFER}m=audio{second}");
        let p = plan(&offer, None).unwrap();
        assert_eq!(p.party, Party::Both);
        let map: Vec<(Option<&str>, usize)> = p.tracks.iter().map(|(t, c)| (t.track_id.as_deref(), *c)).collect();
        assert_eq!(map, vec![(Some("track-a"), 0), (Some("track-b"), 1)]);
        // One party for a two-track offer is a clear error, not a silent pick.
        assert_eq!(plan(&offer, Some("rep")).unwrap_err(), WhipError::TrackCount { party: "rep", want: 1, have: 2 });
        assert_eq!(plan(CHROME_OFFER, Some("both")).unwrap_err().status(), 422);
    }

    #[test]
    fn bad_offers_say_why() {
        assert_eq!(plan("hello", None).unwrap_err().status(), 400);
        assert!(matches!(plan("hello", None).unwrap_err(), WhipError::BadSdp(_)));
        let video = CHROME_OFFER.replace("m=audio", "m=video");
        assert_eq!(plan(&video, None).unwrap_err(), WhipError::NoAudio);
        let pcmu = CHROME_OFFER.replace("a=rtpmap:111 opus/48000/2\r\n", "");
        assert_eq!(plan(&pcmu, None).unwrap_err(), WhipError::NoOpus);
        assert_eq!(plan(&pcmu, None).unwrap_err().status(), 422);
        let recv = CHROME_OFFER.replace("a=sendonly", "a=recvonly");
        assert!(matches!(plan(&recv, None).unwrap_err(), WhipError::TrackCount { have: 0, .. }));
        assert_eq!(plan(CHROME_OFFER, Some("video")).unwrap_err(), WhipError::BadParty);
    }

    #[test]
    fn params_are_checked() {
        let ok = WhipParams { call: Some(" c-1 ".into()), ..Default::default() }.validated().unwrap();
        assert_eq!(ok.call.as_deref(), Some("c-1"));
        assert_eq!(
            WhipParams { rep: Some("a\nb".into()), ..Default::default() }.validated(),
            Err(WhipError::BadParam("rep"))
        );
        assert_eq!(
            WhipParams { call: Some("x".repeat(129)), ..Default::default() }.validated(),
            Err(WhipError::BadParam("call"))
        );
    }

    #[test]
    fn timestamps_scale_across_the_wrap() {
        let mut s = TimestampScaler::default();
        let t0 = u32::MAX - 959;
        let a = s.scale(t0, 16_000);
        let b = s.scale(t0.wrapping_add(960), 16_000);
        let c = s.scale(t0.wrapping_add(1920), 16_000);
        assert_eq!(b.wrapping_sub(a), 320);
        assert_eq!(c.wrapping_sub(b), 320);
    }
}
