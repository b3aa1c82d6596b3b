//! Random sequences of operations, with reopens, compactions and power losses among them, leave
//! the store agreeing with the in-memory model of SEMANTICS.md after every step.

use proptest::prelude::*;
use sessionlog::testing::{check_ops, check_ops_encrypted, Op, KEYS};

fn op() -> impl Strategy<Value = Op> {
    let key = 0..KEYS.len();
    let text = "[a-z ]{0,8}|x{300,900}";
    prop_oneof![
        6 => (key.clone(), text).prop_map(|(k, t)| Op::Append(k, t)),
        2 => (key.clone(), proptest::collection::vec(text, 0..4))
            .prop_map(|(k, t)| Op::AppendBatch(k, t)),
        3 => (key.clone(), text).prop_map(|(k, t)| Op::UpdateLast(k, t)),
        2 => key.clone().prop_map(Op::RemoveLast),
        1 => key.clone().prop_map(Op::Clear),
        1 => key.clone().prop_map(Op::Delete),
        1 => (key.clone(), "[a-z]{0,3}").prop_map(|(k, t)| Op::Name(k, t)),
        1 => (key.clone(), "[a-z]{0,3}").prop_map(|(k, t)| Op::Alias(k, t)),
        1 => (
            key.clone(),
            proptest::option::of(" ?[a-z]{0,3} ?"),
            proptest::option::of("[a-z]{0,3}")
        )
            .prop_map(|(k, c, s)| Op::Context(k, c, s)),
        1 => (key.clone(), any::<bool>()).prop_map(|(k, r)| Op::State(k, r)),
        1 => key.clone().prop_map(Op::Compact),
        1 => key.clone().prop_map(Op::UndoClear),
        1 => key.clone().prop_map(Op::Restore),
        1 => (key.clone(), key.clone()).prop_map(|(a, b)| Op::Fork(a, b)),
        1 => key.clone().prop_map(Op::Erase),
        3 => (key.clone(), text, "m[0-5]")
            .prop_map(|(k, t, id)| Op::AppendOnce(k, t, id)),
        1 => key.clone().prop_map(Op::Archive),
        1 => key.prop_map(Op::Unarchive),
        1 => Just(Op::Reopen),
        1 => Just(Op::PowerLoss),
        1 => Just(Op::Checkpoint),
        1 => Just(Op::Crash),
        2 => "[a-z]{1,2}( [a-z]{1,2})?|\"[a-z]{1,2} [a-z]{1,2}\"|[a-z]{1,2}-[a-z]{1,2}".prop_map(Op::Search),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]
    #[test]
    fn store_agrees_with_the_model(ops in proptest::collection::vec(op(), 1..80)) {
        check_ops(&ops);
    }

    /// The same with encryption at rest: sealed records, per-session keys created and
    /// destroyed (forks copy, erasures destroy the key first), across power losses.
    #[test]
    fn an_encrypted_store_agrees_with_the_model(ops in proptest::collection::vec(op(), 1..80)) {
        check_ops_encrypted(&ops);
    }
}
