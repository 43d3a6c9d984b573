//! Scripted timelines for every metric and rule.

use crate::coach::*;

const PB: &str = r#"
[thresholds]
monologue = "60s"
dead_air = "10s"
fast_wpm = 190
talk_ratio_max = 0.65
talk_ratio_after = "30s"
interruptions = 3
interruption_window = "2m"
cooldown = "60s"

[[triggers]]
id = "competitor-globex"
kind = "competitor"
phrases = ["globex", "globe x"]
title = "Globex mentioned"
body = "Battlecard: Globex bills per seat."

[[triggers]]
id = "objection-price"
kind = "objection"
channel = "customer"
phrases = ["too expensive", "price is too high"]
severity = "warning"
title = "Price objection"
body = "Ask what they compare us to."
cooldown = "0s"

[[required]]
id = "disclosure"
phrases = ["this call is recorded", "this call may be recorded"]
within = "30s"
label = "Recording disclosure"
title = "Recording disclosure missing"
body = "Say: this call is recorded."

[[forbidden]]
id = "guarantees"
phrases = ["guarantee*"]
title = "Never guarantee results"

[[checklist]]
id = "budget"
label = "Asked about budget"
phrases = ["budget"]
weight = 2

[[checklist]]
id = "next-step"
label = "Agreed a next step"
channel = "any"
phrases = ["next step", "follow up"]
"#;

fn coach() -> Coach {
    Coach::new(Arc::new(PlaybookFile::parse(PB).unwrap().resolve(None).unwrap()))
}

fn bare() -> Coach {
    Coach::new(Arc::new(Playbook::default()))
}

/// Speech on `role` from `a` to `b` seconds.
fn say(c: &mut Coach, role: Role, a: f64, b: f64) -> Vec<CoachOutput> {
    let mut out = Vec::new();
    c.on_voice(role, Voice::Start((a * 1000.0) as u64), &mut out);
    c.on_voice(role, Voice::End((b * 1000.0) as u64), &mut out);
    out
}

fn tick(c: &mut Coach, at: f64) -> Vec<CoachOutput> {
    let mut out = Vec::new();
    c.tick((at * 1000.0) as u64, &mut out);
    out
}

fn tx(role: Role, utt: &str, stable: &str, unstable: &str, a: f64, b: f64) -> TranscriptPayload {
    TranscriptPayload {
        channel: role,
        utterance_id: utt.into(),
        text: format!("{stable} {unstable}").trim().into(),
        stable: stable.into(),
        unstable: unstable.into(),
        start_ms: (a * 1000.0) as u64,
        end_ms: (b * 1000.0) as u64,
        untranscribed: None,
        words: None,
    }
}

fn partial(c: &mut Coach, p: &TranscriptPayload, now: f64) -> Vec<CoachOutput> {
    let mut out = Vec::new();
    c.on_transcript(p, false, (now * 1000.0) as u64, &mut out);
    out
}

fn final_(c: &mut Coach, role: Role, utt: &str, text: &str, a: f64, b: f64, now: f64) -> Vec<CoachOutput> {
    let mut out = Vec::new();
    c.on_transcript(&tx(role, utt, text, "", a, b), true, (now * 1000.0) as u64, &mut out);
    out
}

fn hints(out: &[CoachOutput]) -> Vec<&HintPayload> {
    out.iter().filter_map(|o| if let CoachOutput::Hint(h) = o { Some(h) } else { None }).collect()
}

fn kinds(out: &[CoachOutput]) -> Vec<&str> {
    hints(out).iter().map(|h| h.kind.as_str()).collect()
}

#[test]
fn talk_time_and_ratio_count_overlap_on_both_channels() {
    let mut c = bare();
    assert_eq!(c.metrics(0).talk_ratio, None, "no ratio before anyone speaks");
    say(&mut c, Role::Rep, 0.0, 10.0);
    // Customer talks over the rep's last seconds (cross-talk).
    say(&mut c, Role::Customer, 7.0, 10.0);
    let m = c.metrics(10_000);
    assert_eq!((m.rep_talk_ms, m.customer_talk_ms), (10_000, 3_000));
    assert_eq!(m.talk_ratio, Some(0.769));
    assert_eq!(m.interruptions, 0, "the customer talking over the rep is not the rep interrupting");
    // Open speech counts up to `now`.
    let mut out = Vec::new();
    c.on_voice(Role::Customer, Voice::Start(12_000), &mut out);
    assert_eq!(c.metrics(15_000).customer_talk_ms, 6_000);
}

#[test]
fn monologue_grows_ignores_backchannels_and_hints_once_per_turn() {
    let mut c = coach();
    say(&mut c, Role::Rep, 0.0, 20.0);
    say(&mut c, Role::Rep, 21.0, 40.0);
    // "Uh-huh" from the customer does not take the floor.
    say(&mut c, Role::Customer, 30.0, 30.5);
    let mut out = Vec::new();
    c.on_voice(Role::Rep, Voice::Start(40_500), &mut out);
    assert!(!kinds(&tick(&mut c, 59.0)).contains(&"monologue"));
    assert_eq!(c.metrics(59_000).rep_monologue_ms, 59_000);
    let out = tick(&mut c, 61.0);
    assert_eq!(kinds(&out), ["monologue"]);
    assert!(hints(&out)[0].reason.contains("61 s"), "{}", hints(&out)[0].reason);
    assert!(tick(&mut c, 65.0).is_empty(), "one monologue hint per turn");
    c.on_voice(Role::Rep, Voice::End(70_000), &mut Vec::new());
    // The customer takes the floor: the rep's turn is over.
    say(&mut c, Role::Customer, 71.0, 80.0);
    let m = c.metrics(80_000);
    assert_eq!(m.rep_monologue_ms, 0);
    assert_eq!(m.longest_rep_monologue_ms, 70_000);
    assert_eq!(m.longest_customer_story_ms, 9_000);
    assert_eq!(m.patience_ms, None, "the customer answering the rep is not rep patience");
}

#[test]
fn a_long_pause_ends_a_turn() {
    let mut c = bare();
    say(&mut c, Role::Rep, 0.0, 10.0);
    say(&mut c, Role::Rep, 15.0, 22.0);
    let m = c.metrics(22_000);
    assert_eq!(m.longest_rep_monologue_ms, 10_000);
    assert_eq!(m.rep_monologue_ms, 7_000);
}

#[test]
fn interruptions_counted_and_hinted_with_cooldown() {
    let mut c = coach();
    let mut out = Vec::new();
    for k in 0..3u64 {
        let t0 = k * 10_000;
        c.on_voice(Role::Customer, Voice::Start(t0), &mut out);
        c.on_voice(Role::Rep, Voice::Start(t0 + 2_000), &mut out);
        c.on_voice(Role::Customer, Voice::End(t0 + 3_000), &mut out);
        c.on_voice(Role::Rep, Voice::End(t0 + 5_000), &mut out);
    }
    assert_eq!(c.metrics(30_000).interruptions, 3);
    assert_eq!(kinds(&out), ["interruption"]);
    // Starting together with the customer (within 300 ms) is not an interruption.
    let mut out = Vec::new();
    c.on_voice(Role::Customer, Voice::Start(40_000), &mut out);
    c.on_voice(Role::Rep, Voice::Start(40_100), &mut out);
    assert_eq!(c.metrics(41_000).interruptions, 3);
}

#[test]
fn patience_is_the_reps_pause_after_the_customer() {
    let mut c = bare();
    say(&mut c, Role::Customer, 0.0, 3.0);
    say(&mut c, Role::Rep, 3.8, 6.0);
    say(&mut c, Role::Customer, 7.0, 12.0);
    say(&mut c, Role::Rep, 12.2, 14.0);
    assert_eq!(c.metrics(14_000).patience_ms, Some(500));
    // A pause longer than 10 s is dead air, not patience.
    say(&mut c, Role::Customer, 15.0, 20.0);
    say(&mut c, Role::Rep, 40.0, 41.0);
    assert_eq!(c.metrics(41_000).patience_ms, Some(500));
}

#[test]
fn dead_air_hinted_once_per_silence_after_the_call_got_going() {
    let mut c = coach();
    // Silence before anyone spoke (ringing, hold) is measured but not hinted.
    assert!(tick(&mut c, 15.0).is_empty());
    say(&mut c, Role::Rep, 15.0, 17.0);
    assert!(tick(&mut c, 26.0).is_empty());
    let out = tick(&mut c, 27.5);
    assert_eq!(kinds(&out), ["dead_air"]);
    assert!(tick(&mut c, 29.0).is_empty());
    let m = c.metrics(29_000);
    assert_eq!(m.dead_air_ms, 12_000);
    assert_eq!(m.longest_dead_air_ms, 15_000, "the silence before the first words counts as the longest");
}

#[test]
fn silence_only_call() {
    let mut c = coach();
    for s in 1..=40 {
        let out = tick(&mut c, s as f64);
        assert!(kinds(&out).iter().all(|k| *k == "compliance.missed"), "{out:?}");
    }
    let mut out = Vec::new();
    let card = c.finish(40_000, &mut out);
    let m = &card.metrics;
    assert_eq!((m.rep_talk_ms, m.customer_talk_ms, m.talk_ratio), (0, 0, None));
    assert_eq!(m.longest_dead_air_ms, 40_000);
    assert_eq!(card.hints.iter().map(|h| h.kind.as_str()).collect::<Vec<_>>(), ["compliance.missed"]);
    assert!(card.parts.iter().all(|p| p.name == "checklist" || p.name == "compliance"), "{:?}", card.parts);
    assert_eq!(card.score, 0.0);
}

#[test]
fn a_trigger_span_has_the_matched_words_own_times_when_the_transcript_has_them() {
    let mut c = coach();
    let mut p = tx(Role::Customer, "customer-1", "we looked at globex", "last", 5.0, 8.0);
    let timed =
        [("We", 5000, 5200), ("looked", 5200, 5600), ("at", 5600, 5800), ("Globex,", 6100, 6700), ("last", 6800, 7100)];
    p.words = Some(timed.iter().map(|(w, a, b)| crate::asr::hypothesis::Word::new(w, *a, *b)).collect());
    let out = partial(&mut c, &p, 7.5);
    let span = hints(&out)[0].trigger.clone().unwrap();
    assert_eq!((span.matched.as_str(), span.start_ms, span.end_ms), ("globex", 6_100, 6_700));
    // Timings that do not spell the text (changed after timing): the utterance's span.
    let mut c = coach();
    p.words = Some(vec![crate::asr::hypothesis::Word::new("something", 5000, 6000)]);
    let span = hints(&partial(&mut c, &p, 7.5))[0].trigger.clone().unwrap();
    assert_eq!((span.start_ms, span.end_ms), (5_000, 8_000));
}

#[test]
fn stable_words_trigger_without_waiting_for_the_final_and_only_once() {
    let mut c = coach();
    // Unstable words are not acted on.
    let out = partial(&mut c, &tx(Role::Customer, "customer-1", "we looked at", "globex last", 5.0, 7.0), 7.5);
    assert!(hints(&out).is_empty());
    let out = partial(&mut c, &tx(Role::Customer, "customer-1", "we looked at globex", "last year", 5.0, 8.0), 8.5);
    let h = hints(&out);
    assert_eq!(h.len(), 1);
    let h = h[0];
    assert_eq!((h.kind.as_str(), h.rule.as_str(), h.severity), ("competitor", "competitor-globex", Severity::Info));
    assert_eq!(h.created_ms, 8_500);
    let span = h.trigger.as_ref().unwrap();
    assert_eq!(
        (span.channel, span.matched.as_str(), span.start_ms, span.end_ms),
        (Role::Customer, "globex", 5_000, 8_000)
    );
    assert_eq!(span.text, "we looked at globex");
    assert!(h.reason.contains("customer said \"globex\""), "{}", h.reason);
    // The final repeats it: no second hint for the same words.
    let out = final_(&mut c, Role::Customer, "customer-1", "We looked at Globex last year.", 5.0, 9.0, 9.6);
    assert!(hints(&out).is_empty());
    // Cool-down (60 s): the next mention is quiet, one after the cool-down is not.
    assert!(hints(&final_(&mut c, Role::Customer, "customer-2", "Globe X again", 20.0, 21.0, 22.0)).is_empty());
    assert_eq!(hints(&final_(&mut c, Role::Rep, "rep-9", "compared to globex", 80.0, 81.0, 82.0)).len(), 1);
}

#[test]
fn each_new_occurrence_counts_when_there_is_no_cooldown() {
    let mut c = coach();
    let p = tx(Role::Customer, "customer-1", "honestly it is too expensive", "", 1.0, 3.0);
    assert_eq!(kinds(&partial(&mut c, &p, 3.0)), ["objection"]);
    let out =
        final_(&mut c, Role::Customer, "customer-1", "Honestly it is too expensive, way too expensive.", 1.0, 4.0, 4.5);
    assert_eq!(kinds(&out), ["objection"], "the second occurrence is new");
    // Channel filter: the rep saying it is not a customer objection.
    assert!(hints(&final_(&mut c, Role::Rep, "rep-1", "is it too expensive?", 5.0, 6.0, 6.5)).is_empty());
}

#[test]
fn required_phrase_on_time_late_and_missed() {
    // On time: no alert.
    let mut c = coach();
    let out = final_(&mut c, Role::Rep, "rep-1", "Hi, this call is recorded for quality.", 2.0, 5.0, 5.5);
    let CoachOutput::Checklist(cl) = &out[0] else { panic!("{out:?}") };
    assert_eq!(cl.items[0].status, ItemStatus::Done);
    assert_eq!(cl.items[0].at_ms, Some(2_000));
    assert!(tick(&mut c, 40.0).is_empty());
    // Missed: alerted after the deadline plus grace, not before.
    let mut c = coach();
    assert!(tick(&mut c, 31.0).is_empty());
    let out = tick(&mut c, 32.0);
    let h = hints(&out);
    assert_eq!(h.len(), 1);
    assert_eq!((h[0].kind.as_str(), h[0].severity), ("compliance.missed", Severity::Critical));
    assert!(h[0].reason.contains("first 30 s"), "{}", h[0].reason);
    assert!(out.iter().any(|o| matches!(o, CoachOutput::Checklist(c) if c.items[0].status == ItemStatus::Missed)));
    assert!(hints(&tick(&mut c, 33.0)).is_empty(), "alerted once");
    // Said late: the item records it as late.
    let out = final_(&mut c, Role::Rep, "rep-1", "By the way this call may be recorded", 45.0, 47.0, 47.5);
    assert!(matches!(&out[0], CoachOutput::Checklist(c) if c.items[0].status == ItemStatus::Late));
    // The customer saying it does not count for the rep.
    let mut c = coach();
    final_(&mut c, Role::Customer, "customer-1", "is this call recorded", 1.0, 2.0, 2.5);
    assert_eq!(c.checklist_payload().items[0].status, ItemStatus::Pending);
}

#[test]
fn call_ending_before_the_deadline_misses_the_requirement() {
    let mut c = coach();
    say(&mut c, Role::Rep, 1.0, 4.0);
    let mut out = Vec::new();
    let card = c.finish(12_000, &mut out);
    assert_eq!(kinds(&out), ["compliance.missed"]);
    assert!(hints(&out)[0].reason.contains("call ended after 12 s"));
    assert_eq!(card.checklist[0].status, ItemStatus::Missed);
    // finish is idempotent.
    let mut again = Vec::new();
    assert_eq!(c.finish(13_000, &mut again).hints.len(), 1);
    assert!(again.is_empty());
}

#[test]
fn forbidden_phrases_alert_every_time_on_the_reps_channel() {
    let mut c = coach();
    let out = final_(&mut c, Role::Rep, "rep-1", "I guarantee you will double sales.", 1.0, 3.0, 3.5);
    let h = hints(&out);
    assert_eq!(
        (h[0].kind.as_str(), h[0].severity, h[0].trigger.as_ref().unwrap().matched.as_str()),
        ("compliance.forbidden", Severity::Critical, "guarantee")
    );
    assert_eq!(kinds(&final_(&mut c, Role::Rep, "rep-2", "It's guaranteed.", 4.0, 5.0, 5.5)), ["compliance.forbidden"]);
    assert!(hints(&final_(&mut c, Role::Customer, "customer-1", "Can you guarantee it?", 6.0, 7.0, 7.5)).is_empty());
}

#[test]
fn checklist_ticks_live_and_scorecard_weighs_it() {
    let mut c = coach();
    final_(&mut c, Role::Rep, "rep-1", "This call is recorded. What budget do you have?", 0.5, 4.0, 4.5);
    say(&mut c, Role::Rep, 0.5, 4.0);
    say(&mut c, Role::Customer, 4.6, 10.0);
    say(&mut c, Role::Rep, 10.7, 14.0);
    let items = c.checklist_payload().items;
    assert_eq!(
        items.iter().map(|i| (i.id.as_str(), i.status)).collect::<Vec<_>>(),
        [("disclosure", ItemStatus::Done), ("budget", ItemStatus::Done), ("next-step", ItemStatus::Pending)]
    );
    // The customer may name the next step too (channel = any).
    let out = final_(&mut c, Role::Customer, "customer-1", "Let's book a follow up.", 4.6, 10.0, 10.5);
    assert!(matches!(&out[0], CoachOutput::Checklist(cl) if cl.items[2].status == ItemStatus::Done));
    let mut out = Vec::new();
    let card = c.finish(14_000, &mut out);
    let part =
        |n: &str| card.parts.iter().find(|p| p.name == n).unwrap_or_else(|| panic!("{n}: {:?}", card.parts)).value;
    assert_eq!(part("checklist"), 1.0);
    assert_eq!(part("compliance"), 1.0);
    assert_eq!(part("monologue"), 1.0);
    assert_eq!(part("patience"), 1.0, "600 ms+ pauses");
    assert!(card.score > 90.0, "{card:?}");
    assert_eq!(card.metrics.rep_questions, 1);
}

#[test]
fn pace_and_fillers_from_finals() {
    let mut c = coach();
    let fast = "so basically what we do is we take all of your calls and we um transcribe them and coach your reps live you know";
    let out = final_(&mut c, Role::Rep, "rep-1", fast, 0.0, 6.0, 6.5);
    assert_eq!(kinds(&out), ["pace"]);
    assert!(hints(&out)[0].reason.contains("words per minute"));
    let m = c.metrics(7_000);
    assert_eq!(m.rep_fillers, 3, "basically, um, you know");
    assert_eq!(m.rep_words, 24);
    assert_eq!(m.rep_wpm, Some(240.0));
    let mut c = coach();
    assert!(hints(&final_(
        &mut c,
        Role::Rep,
        "rep-1",
        "we take your calls and transcribe them for you so reps get help live",
        0.0,
        6.0,
        6.5
    ))
    .is_empty());
}

#[test]
fn talk_ratio_hint_after_enough_talk() {
    let mut c = coach();
    say(&mut c, Role::Rep, 0.0, 25.0);
    say(&mut c, Role::Customer, 25.5, 28.0);
    say(&mut c, Role::Rep, 28.5, 36.0);
    let out = tick(&mut c, 36.0);
    assert_eq!(kinds(&out), ["talk_ratio", "compliance.missed"]);
    assert!(hints(&out)[0].reason.contains("93%"), "{}", hints(&out)[0].reason);
    assert!(tick(&mut c, 40.0).is_empty(), "cool-down");
    // Without enough talk yet, no ratio hint however lopsided.
    let mut c = bare();
    say(&mut c, Role::Rep, 0.0, 20.0);
    assert!(tick(&mut c, 20.0).is_empty());
}

#[test]
fn untranscribed_speech_and_unknown_channels_are_harmless() {
    let mut c = coach();
    let mut gap = tx(Role::Rep, "rep-1", "", "", 0.0, 5.0);
    gap.untranscribed = Some("asr_overload".into());
    let mut out = Vec::new();
    c.on_transcript(&gap, true, 6_000, &mut out);
    c.on_voice(Role::Other, Voice::Start(0), &mut out);
    c.on_voice(Role::Rep, Voice::End(100), &mut out);
    assert!(out.is_empty());
    assert_eq!(c.metrics(6_000).rep_words, 0);
}

#[test]
fn very_long_call_stays_bounded() {
    let mut c = coach();
    let mut out = Vec::new();
    // Four hours of alternating turns with a partial that never gets its final.
    let mut t = 0u64;
    let mut n = 0;
    while t < 4 * 3600 * 1000 {
        let role = if n % 2 == 0 { Role::Rep } else { Role::Customer };
        c.on_voice(role, Voice::Start(t), &mut out);
        c.on_voice(role, Voice::End(t + 4_000), &mut out);
        let p = tx(
            role,
            &format!("u{n}"),
            "we compared globex and the budget",
            "",
            t as f64 / 1000.0,
            (t + 4_000) as f64 / 1000.0,
        );
        c.on_transcript(&p, false, t + 4_200, &mut out);
        c.tick(t + 4_500, &mut out);
        t += 5_000;
        n += 1;
        out.clear();
    }
    assert!(c.utts.len() <= MAX_OPEN_UTTERANCES);
    assert!(c.hints.len() <= MAX_HINTS);
    let m = c.metrics(t);
    assert_eq!(m.rep_talk_ms + m.customer_talk_ms, n as u64 * 4_000);
    assert_eq!(m.longest_rep_monologue_ms, 4_000);
    let card = c.finish(t, &mut out);
    assert!(card.score >= 0.0 && card.score <= 100.0);
}
