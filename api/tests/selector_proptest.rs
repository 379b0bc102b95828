//! The canonical text of any selector parses back to the same selector, and evaluation
//! agrees with the obvious reading.

use std::collections::BTreeMap;

use gingham_api::selector::Selector;
use proptest::prelude::*;

fn key() -> impl Strategy<Value = String> {
    "[a-z][a-z0-9._/-]{0,8}".prop_filter("keywords", |k| k != "in" && k != "not" && k != "has")
}

fn value() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9 _.'-]{0,6}"
}

fn selector() -> impl Strategy<Value = Selector> {
    let leaf = prop_oneof![
        Just(Selector::All),
        key().prop_map(Selector::Has),
        (key(), value()).prop_map(|(k, v)| Selector::Equals(k, v)),
        (key(), value()).prop_map(|(k, v)| Selector::NotEquals(k, v)),
        (key(), proptest::collection::vec(value(), 1..4)).prop_map(|(k, v)| Selector::In(k, v)),
        (key(), proptest::collection::vec(value(), 1..4)).prop_map(|(k, v)| Selector::NotIn(k, v)),
    ];
    leaf.prop_recursive(4, 32, 2, |inner| {
        prop_oneof![
            inner.clone().prop_map(|s| Selector::Not(Box::new(s))),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| Selector::And(Box::new(a), Box::new(b))),
            (inner.clone(), inner).prop_map(|(a, b)| Selector::Or(Box::new(a), Box::new(b))),
        ]
    })
}

proptest! {
    #[test]
    fn display_parses_back(s in selector()) {
        let text = s.to_string();
        let back: Selector = text.parse().map_err(|e| TestCaseError::fail(format!("{e}")))?;
        prop_assert_eq!(back, s);
    }

    #[test]
    fn negation_inverts_and_de_morgan_holds(a in selector(), b in selector(), labels in proptest::collection::btree_map(key(), value(), 0..4)) {
        let labels: BTreeMap<String, String> = labels;
        let not_a = Selector::Not(Box::new(a.clone()));
        prop_assert_eq!(not_a.matches(&labels), !a.matches(&labels));
        let left = Selector::Not(Box::new(Selector::And(Box::new(a.clone()), Box::new(b.clone()))));
        let right = Selector::Or(Box::new(Selector::Not(Box::new(a))), Box::new(Selector::Not(Box::new(b))));
        prop_assert_eq!(left.matches(&labels), right.matches(&labels));
    }
}
