//! Unit tests of the streaming policy: scripted audio through `StreamPolicy`.

use super::*;

/// The decoder's answer for `r`: `text`, its words spread over the window.
fn h(r: &DecodeRequest, text: &str) -> Hypothesis {
    Hypothesis::from_text(text, 0, (r.end - r.start) * 1000 / RATE)
}

fn final_text(u: &[TranscriptUpdate]) -> Option<String> {
    u.iter().find_map(|u| matches!(u, TranscriptUpdate::Final { .. }).then(|| u.text()))
}

fn speech(secs: f32) -> Vec<f32> {
    (0..(secs * 16000.0) as usize)
        .map(|i| {
            let t = i as f32 / 16000.0;
            0.3 * (0.5 + 0.5 * (2.0 * std::f32::consts::PI * 4.0 * t).sin()).max(0.2)
                * (2.0 * std::f32::consts::PI * 200.0 * t).sin()
        })
        .collect()
}

fn feed(p: &mut StreamPolicy, x: &[f32]) -> Vec<DecodeRequest> {
    let mut out = vec![];
    for c in x.chunks(320) {
        out.extend(p.push_audio(c));
    }
    out
}

#[test]
fn partials_every_step_then_one_final_at_the_endpoint() {
    let mut p = StreamPolicy::new(PolicySettings::default());
    let mut x = vec![0.0; 16000];
    x.extend(speech(3.2));
    x.extend(vec![0.0; 16000]);
    let mut reqs = vec![];
    let mut updates = vec![];
    for c in x.chunks(320) {
        for r in p.push_audio(c) {
            // The decoder answers at once.
            let (u, next) = p.on_result(&r, &h(&r, "hello there"));
            updates.extend(u);
            reqs.push(r);
            reqs.extend(next);
        }
        updates.extend(p.take_updates());
    }
    let finals = updates.iter().filter(|u| matches!(u, TranscriptUpdate::Final { .. })).count();
    assert_eq!(finals, 1, "{updates:?}");
    let partials: Vec<_> = reqs.iter().filter(|r| !r.is_final).collect();
    // The last pause's early final is the final (the endpoint confirmed it).
    let finals: Vec<_> = reqs.iter().filter(|r| r.is_final).collect();
    assert!((2..=3).contains(&partials.len()), "{reqs:?}");
    assert!(!finals.is_empty() && finals.iter().all(|r| r.early), "{reqs:?}");
    let f = *finals.last().unwrap();
    // Starts ~200 ms before the speech at 1 s; ends ~150 ms after it stops at 4.2 s.
    assert!((f.start as i64 - 12_800).abs() <= 480, "{f:?}");
    assert!((f.end as i64 - 69_600).abs() <= 1_600, "{f:?}");
    assert!(partials.iter().all(|r| r.start == f.start && r.utterance == f.utterance));
}

#[test]
fn silence_and_a_short_click_are_never_decoded() {
    let mut p = StreamPolicy::new(PolicySettings::default());
    let mut x = vec![0.0; 32000];
    x.extend(speech(0.15));
    x.extend(vec![0.0; 32000]);
    assert!(feed(&mut p, &x).is_empty());
    assert!(p.flush().is_empty());
}

#[test]
fn degraded_levels_slow_then_stop_partials_and_shed_old_finals() {
    let run = |d: Degrade| {
        let mut p = StreamPolicy::new(PolicySettings::default());
        p.set_degrade(d);
        let mut x = vec![0.0; 8000];
        x.extend(speech(6.0));
        x.extend(vec![0.0; 16000]);
        let mut reqs = vec![];
        for c in x.chunks(320) {
            for r in p.push_audio(c) {
                let (_, next) = p.on_result(&r, &h(&r, "words here"));
                reqs.push(r);
                reqs.extend(next);
            }
        }
        (reqs.iter().filter(|r| !r.is_final).count(), reqs.iter().filter(|r| r.is_final && !r.early).count())
    };
    let (normal, _) = run(Degrade::Normal);
    let (long, _) = run(Degrade::LongStep);
    let (none, finals) = run(Degrade::FinalsOnly);
    assert!(normal >= 4 && long <= normal / 2 + 1 && long >= 2, "{normal} {long}");
    assert_eq!((none, finals), (0, 1));

    // Three utterances end while a decode is stuck in flight: the backlog grows,
    // shedding drops the old queued finals (as gaps) and keeps the recent one.
    let mut p = StreamPolicy::new(PolicySettings::default());
    p.set_degrade(Degrade::Shed);
    let mut flying = vec![];
    for _ in 0..3 {
        let mut x = speech(1.5);
        x.extend(vec![0.0; 16000 * 3]);
        flying.extend(feed(&mut p, &x));
    }
    assert_eq!(flying.len(), 1, "one decode in flight, the rest queued");
    assert!(p.backlog_lag() >= 16000 * 9, "{}", p.backlog_lag());
    let gaps = p.shed(16000 * 5);
    assert_eq!(gaps.len(), 1, "{gaps:?}");
    assert!(matches!(gaps[0], TranscriptUpdate::Gap { start_ms, .. } if (4000..5000).contains(&start_ms)), "{gaps:?}");
    let (_, next) = p.on_result(&flying[0], &h(&flying[0], "first"));
    assert_eq!(next.len(), 1);
    assert!(next[0].start >= 16000 * 8, "the recent final is still decoded: {next:?}");
}

#[test]
fn an_early_final_in_flight_at_the_endpoint_becomes_the_final() {
    let mut p = StreamPolicy::new(PolicySettings::default());
    let mut x = speech(2.0);
    x.extend(vec![0.0; 16000]);
    let mut early = None;
    let mut others = vec![];
    let mut updates = vec![];
    for c in x.chunks(320) {
        for r in p.push_audio(c) {
            if r.early {
                early = Some(r); // still decoding when the endpoint comes
            } else if r.is_final {
                others.push(r);
            } else {
                let (u, next) = p.on_result(&r, &h(&r, "partial words"));
                updates.extend(u);
                others.extend(next);
            }
        }
        updates.extend(p.take_updates());
    }
    let early = early.expect("an early final at the pause");
    assert!(others.iter().all(|r| !r.is_final), "no second decode for the final: {others:?}");
    assert!(!updates.iter().any(|u| matches!(u, TranscriptUpdate::Final { .. })));
    let (u, next) = p.on_result(&early, &h(&early, "The whole sentence."));
    assert_eq!(final_text(&u).as_deref(), Some("The whole sentence."), "{u:?}");
    assert!(matches!(u[..], [TranscriptUpdate::Final { end_ms, .. }] if end_ms == early.end * 1000 / RATE), "{u:?}");
    assert!(next.is_empty());
}

#[test]
fn a_soft_cut_final_still_decoding_when_the_next_utterance_ends_is_kept() {
    // A long turn is soft-cut at a pause; its early final is still decoding when the
    // speaker's short next utterance ("Thank you.") ends. Both finals come out (the
    // second confirmation used to overwrite the first, which was lost).
    let mut p = StreamPolicy::new(PolicySettings { soft_cut_ms: 4000, ..PolicySettings::default() });
    let mut x = speech(5.0);
    x.extend(vec![0.0; 16000 * 25 / 100]);
    x.extend(speech(0.9));
    x.extend(vec![0.0; 16000]);
    let mut stuck = None;
    let mut finals = vec![];
    let mut updates = vec![];
    for c in x.chunks(320) {
        for r in p.push_audio(c) {
            if r.is_final && stuck.is_none() {
                stuck = Some(r); // the long one: still decoding
            } else if r.is_final {
                finals.push(r);
            } else {
                let (u, next) = p.on_result(&r, &h(&r, "A long sentence"));
                updates.extend(u);
                finals.extend(next);
            }
        }
        updates.extend(p.take_updates());
    }
    let stuck = stuck.expect("the soft cut's final");
    assert!(stuck.end < 16000 * 55 / 10, "{stuck:?}");
    assert!(finals.is_empty(), "the second final waits behind the first: {finals:?}");
    let (u, next) = p.on_result(&stuck, &h(&stuck, "A long sentence with many words."));
    assert_eq!(final_text(&u).as_deref(), Some("A long sentence with many words."), "{u:?}");
    assert_eq!(next.len(), 1, "{next:?}");
    assert!(next[0].is_final && next[0].start > stuck.end - 16000 / 2, "{next:?}");
    let (u, _) = p.on_result(&next[0], &h(&next[0], "Short one."));
    assert_eq!(final_text(&u).as_deref(), Some("Short one."), "{u:?}");
    assert!(p.pending.is_empty());
}

#[test]
fn speech_after_an_early_final_makes_it_a_partial() {
    let mut p = StreamPolicy::new(PolicySettings::default());
    let mut x = speech(2.0);
    x.extend(vec![0.0; 16000 * 22 / 100]);
    x.extend(speech(1.5));
    x.extend(vec![0.0; 16000]);
    let mut updates = vec![];
    let mut early_ends = vec![];
    for c in x.chunks(320) {
        for r in p.push_audio(c) {
            if r.early {
                early_ends.push(r.end);
            }
            let t = if r.end < 16000 * 2 + 8000 { "first part" } else { "first part and the rest" };
            let (u, _) = p.on_result(&r, &h(&r, t));
            updates.extend(u);
        }
        updates.extend(p.take_updates());
    }
    assert!(early_ends.len() >= 2, "{early_ends:?}");
    let finals: Vec<_> = updates.iter().filter(|u| matches!(u, TranscriptUpdate::Final { .. })).collect();
    assert_eq!(finals.len(), 1, "{updates:?}");
    assert_eq!(finals[0].text(), "first part and the rest");
    assert!(matches!(finals[0], TranscriptUpdate::Final { end_ms, .. } if *end_ms > 3_500), "{finals:?}");
}

#[test]
fn long_speech_is_cut_at_max_utterance() {
    let s = PolicySettings { max_utterance_ms: 4000, ..PolicySettings::default() };
    let mut p = StreamPolicy::new(s);
    let mut finals = 0;
    for c in speech(9.0).chunks(320) {
        for r in p.push_audio(c) {
            finals += r.is_final as usize;
            let _ = p.on_result(&r, &h(&r, "words"));
        }
    }
    assert!(finals >= 2, "{finals}");
}

#[test]
fn results_become_partials_with_stable_prefix_and_a_final() {
    let mut p = StreamPolicy::new(PolicySettings::default());
    let mut x = vec![0.0; 8000];
    x.extend(speech(2.5));
    let mut hyps = ["we already", "we already use", "we already use Globex"].into_iter();
    let mut updates = vec![];
    for c in x.chunks(320) {
        for r in p.push_audio(c) {
            let (u, _) = p.on_result(&r, &h(&r, hyps.next().unwrap_or("we already use Globex")));
            updates.extend(u);
        }
    }
    for r in p.flush() {
        let (u, _) = p.on_result(&r, &h(&r, "We already use Globex."));
        updates.extend(u);
    }
    let last_partial = updates.iter().rev().find_map(|u| match u {
        TranscriptUpdate::Partial { stable, .. } => Some(crate::asr::hypothesis::join(stable)),
        _ => None,
    });
    assert_eq!(last_partial.as_deref(), Some("we already"));
    // The committed words stay as they were; the final adds the rest.
    assert_eq!(updates.last().map(|u| u.text()).as_deref(), Some("we already use Globex."));
}

#[test]
fn trimmed_audio_never_loses_a_committed_word() {
    // Three utterances with pauses; the caller drops audio before `keep_from` after
    // every push. No later decode may need dropped audio, and every committed word
    // reaches a final, in order.
    let mut p = StreamPolicy::new(PolicySettings::default());
    let mut x = vec![0.0; 8000];
    for secs in [3.0, 2.5, 4.0] {
        x.extend(speech(secs));
        x.extend(vec![0.0; 16000 * 6 / 10]);
    }
    x.extend(vec![0.0; 16000]);
    let (mut dropped_before, mut committed, mut finals) = (0u64, Vec::new(), Vec::new());
    let mut n = 0;
    let mut answer = |p: &mut StreamPolicy, r: &DecodeRequest, out: &mut Vec<TranscriptUpdate>| {
        n += 1;
        let text: Vec<String> = (0..(r.end - r.start) / 8000).map(|i| format!("w{}", (r.start / 8000) + i)).collect();
        let (u, next) = p.on_result(r, &h(r, &text.join(" ")));
        out.extend(u);
        next
    };
    let mut updates = Vec::new();
    for c in x.chunks(320) {
        let mut reqs = p.push_audio(c);
        while let Some(r) = reqs.pop() {
            assert!(r.start >= dropped_before, "a decode from {} needs audio dropped before {dropped_before}", r.start);
            reqs.extend(answer(&mut p, &r, &mut updates));
        }
        updates.extend(p.take_updates());
        dropped_before = dropped_before.max(p.keep_from());
    }
    for u in &updates {
        match u {
            TranscriptUpdate::Partial { stable, .. } => {
                for w in stable {
                    if !committed.contains(&w.text) {
                        committed.push(w.text.clone());
                    }
                }
            }
            TranscriptUpdate::Final { words, .. } => finals.extend(words.iter().map(|w| w.text.clone())),
            TranscriptUpdate::Gap { .. } => panic!("nothing was shed"),
        }
    }
    assert!(n >= 6 && committed.len() >= 4, "the code under test ran: {n} decodes, {committed:?}");
    let mut at = 0;
    for w in &committed {
        let i = finals[at..].iter().position(|f| f == w).unwrap_or_else(|| panic!("{w} lost: finals {finals:?}"));
        at += i + 1;
    }
}
