use super::state::*;
use super::*;
use CounterInput::{Incr, Read};

const BUDGET: Duration = Duration::from_secs(10);

fn op(
    client: u64,
    input: CounterInput,
    call: u64,
    ret: u64,
    out: u64,
) -> Operation<CounterInput, u64> {
    Operation {
        client,
        input,
        call,
        ret: Some(ret),
        output: Some(out),
    }
}

fn lost(client: u64, input: CounterInput, call: u64) -> Operation<CounterInput, u64> {
    Operation {
        client,
        input,
        call,
        ret: None,
        output: None,
    }
}

fn verdict(history: &[Operation<CounterInput, u64>]) -> CheckResult {
    check(&CounterModel, history, BUDGET)
}

fn assert_illegal(history: &[Operation<CounterInput, u64>]) {
    match verdict(history) {
        CheckResult::Illegal(why) => assert!(why.contains("not linearizable"), "{why}"),
        other => panic!("expected Illegal, got {other:?}"),
    }
}

#[test]
fn empty_history_is_linearizable() {
    assert_eq!(verdict(&[]), CheckResult::Ok);
}

#[test]
fn accepts_sequential_history() {
    let h = [
        op(0, Read, 0, 1, 0),
        op(0, Incr(2), 2, 3, 2),
        op(1, Incr(1), 4, 5, 3),
        op(1, Read, 6, 7, 3),
    ];
    assert_eq!(verdict(&h), CheckResult::Ok);
}

#[test]
fn accepts_concurrent_history() {
    // Client 1 invoked later but took effect first, which overlap allows; the reads see
    // the two possible intermediate values from inside the overlap.
    let h = [
        op(0, Incr(1), 0, 10, 3),
        op(1, Incr(2), 2, 8, 2),
        op(2, Read, 3, 4, 0),
        op(2, Read, 5, 9, 2),
        op(3, Read, 10, 11, 3),
    ];
    assert_eq!(verdict(&h), CheckResult::Ok);
}

#[test]
fn equal_timestamps_count_as_concurrent() {
    let h = [op(0, Incr(1), 0, 5, 2), op(1, Incr(1), 5, 6, 1)];
    assert_eq!(verdict(&h), CheckResult::Ok);
}

#[test]
fn rejects_lost_increment() {
    let h = [op(0, Incr(1), 0, 1, 1), op(1, Incr(1), 2, 3, 1)];
    assert_illegal(&h);
}

#[test]
fn rejects_stale_read() {
    let h = [
        op(0, Incr(1), 0, 1, 1),
        op(1, Read, 0, 5, 1),
        op(1, Read, 6, 7, 0),
    ];
    assert_illegal(&h);
}

#[test]
fn explanation_names_the_blocked_operation() {
    let h = [
        op(0, Incr(1), 0, 1, 1),
        op(0, Incr(1), 2, 3, 2),
        op(1, Read, 4, 5, 1),
    ];
    let CheckResult::Illegal(why) = verdict(&h) else {
        panic!("expected Illegal");
    };
    assert!(why.contains("at most 2 of 3"), "{why}");
    assert!(why.contains("#2 client 1: Read -> 1 [4, 5]"), "{why}");
}

#[test]
fn completed_op_without_output_must_take_effect() {
    let mut incr = op(0, Incr(1), 0, 1, 0);
    incr.output = None;
    assert_illegal(&[incr.clone(), op(1, Read, 2, 3, 0)]);
    assert_eq!(verdict(&[incr, op(1, Read, 2, 3, 1)]), CheckResult::Ok);
}

#[test]
#[should_panic(expected = "before its invocation")]
fn rejects_malformed_operation() {
    verdict(&[op(0, Read, 5, 4, 0)]);
}

#[test]
fn unknown_op_that_must_have_happened() {
    let h = [
        lost(0, Incr(5), 0),
        op(1, Read, 10, 11, 0),
        op(1, Read, 12, 13, 5),
        op(1, Incr(1), 14, 15, 6),
    ];
    assert_eq!(verdict(&h), CheckResult::Ok);
}

#[test]
fn unknown_op_that_must_not_have_happened() {
    let h = [
        lost(0, Incr(5), 0),
        op(1, Incr(1), 10, 11, 1),
        op(1, Read, 12, 13, 1),
    ];
    assert_eq!(verdict(&h), CheckResult::Ok);
}

#[test]
fn unknown_op_cannot_take_effect_before_its_call() {
    let h = [op(1, Read, 0, 1, 5), lost(0, Incr(5), 2)];
    assert_illegal(&h);
}

#[test]
fn unknown_op_cannot_take_effect_twice() {
    let h = [
        lost(0, Incr(1), 0),
        op(1, Read, 1, 2, 1),
        op(1, Incr(1), 3, 4, 3),
    ];
    assert_illegal(&h);
}

#[test]
fn unknown_op_with_observed_output_must_match() {
    let mut half = lost(0, Incr(1), 0);
    half.output = Some(7);
    let h = [half, op(1, Read, 1, 2, 1)];
    assert_illegal(&h);
}

#[test]
fn timed_out_ops_pick_the_right_subset() {
    // Only the amounts 1 and 4 explain the read of 5; 2 must be omitted.
    let h = [
        lost(0, Incr(2), 0),
        lost(1, Incr(1), 1),
        lost(2, Incr(4), 2),
        op(3, Read, 10, 11, 5),
        op(3, Incr(3), 12, 13, 8),
    ];
    assert_eq!(verdict(&h), CheckResult::Ok);
}

/// A counter that does not declare any inputs interchangeable, so timed-out increments
/// force a search over subsets.
struct OpaqueCounter;

impl Model for OpaqueCounter {
    type State = u64;
    type Input = CounterInput;
    type Output = u64;
    fn init(&self) -> u64 {
        0
    }
    fn step(&self, s: &u64, i: &CounterInput, o: Option<&u64>) -> Option<u64> {
        CounterModel.step(s, i, o)
    }
}

#[test]
fn gives_up_when_the_budget_runs_out() {
    // One timed-out Incr(1) and thirty timed-out Incr(10)s cannot explain reading 2.
    // Without the interchangeability hint the exact search has to rule out every subset of
    // the Incr(10)s (the relaxed pass cannot help: it may use the Incr(1) twice); with it,
    // only how many of each were used matters.
    let mut h = vec![lost(0, Incr(1), 0)];
    h.extend((1..=30).map(|c| lost(c, Incr(10), c)));
    h.push(op(99, Read, 100, 101, 2));
    let budget = Duration::from_millis(50);
    assert_eq!(check(&OpaqueCounter, &h, budget), CheckResult::Timeout);
    assert!(matches!(
        check(&CounterModel, &h, budget),
        CheckResult::Illegal(_)
    ));
}

mod random;
