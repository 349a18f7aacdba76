//! Decoding in child processes (`picsift serve`'s decoders,
//! `worker/src/isolated.rs`): the child's answer is the in-process
//! pipeline's, a child that dies on an entry costs that entry
//! (`decoder_crash`) and one that hangs is stopped (`decode_timeout`), and
//! the next entry gets a fresh child.

mod common;

use picsift_core::pipeline::prepare_with_pixels;
use picsift_core::policy::Policy;
use picsift_core::verdict::Reason;
use picsift_tests::{jpeg, with_metadata};
use picsift_worker::isolated::{DecoderCommand, DecoderPool};
use std::time::{Duration, Instant};

fn picsift() -> DecoderCommand {
    DecoderCommand {
        program: common::picsift_bin(),
        args: Vec::new(),
    }
}

fn shell(script: &str) -> DecoderCommand {
    DecoderCommand {
        program: "sh".into(),
        args: vec!["-c".into(), script.into()],
    }
}

#[test]
fn the_child_answers_what_the_pipeline_answers_in_process() {
    let pool = DecoderPool::new(picsift(), Duration::from_secs(60));
    let policy = Policy::default();
    let portrait = with_metadata(&jpeg(801, 1600, 1200), 6);
    for (data, reduce_to) in [
        (portrait.clone(), 256),
        (portrait, 0),
        (jpeg(802, 64, 48), 256),
    ] {
        let (want, pixels) = prepare_with_pixels(&data, &policy).unwrap();
        let (got, sent) = pool.prepare(&data, &policy, reduce_to).unwrap();
        assert_eq!(got, want);
        match sent {
            None => assert_eq!(reduce_to, 0),
            Some(sent) => {
                let pixels = pixels.unwrap();
                assert_eq!(sent.orientation, pixels.orientation);
                assert_eq!(sent.stored, picsift_ml::reduced(&pixels.stored, reduce_to));
            }
        }
    }
    // A refusal comes back as the pipeline gives it.
    let cut = &jpeg(803, 320, 240)[..2000];
    let want = prepare_with_pixels(cut, &policy).unwrap_err();
    assert_eq!(pool.prepare(cut, &policy, 0).unwrap_err(), want);
}

#[test]
fn a_child_that_dies_costs_its_entry_and_the_next_gets_a_fresh_one() {
    let policy = Policy::default();
    let photo = jpeg(804, 320, 240);
    // A child that aborts on every entry (SIGABRT, as a decoder's abort).
    let aborting = DecoderPool::new(
        shell("head -c 1 >/dev/null; kill -ABRT $$"),
        Duration::from_secs(60),
    );
    for _ in 0..2 {
        let r = aborting.prepare(&photo, &policy, 0).unwrap_err();
        assert_eq!(r.reason, Reason::DecoderCrash, "{}", r.detail);
        assert!(r.detail.contains("signal"), "{}", r.detail);
    }
    // One that never answers is stopped at the limit.
    let hanging = DecoderPool::new(shell("cat >/dev/null"), Duration::from_millis(500));
    let start = Instant::now();
    let r = hanging.prepare(&photo, &policy, 0).unwrap_err();
    assert_eq!(r.reason, Reason::DecodeTimeout, "{}", r.detail);
    assert!(start.elapsed() < Duration::from_secs(10));
    // A real child after a crash of the one before: its pool starts anew.
    let pool = DecoderPool::new(picsift(), Duration::from_secs(60));
    assert!(pool.prepare(&photo, &policy, 0).is_ok());
}
